{{/* augment: DINOv2's image pipeline on the GPU. Source images are bytes
packed 4 to a u32 word. Each output crop has a job record of JOB words
(nn/image.go writes them):
  0 source byte offset, 1 source width, 2 source channels (1 or 3),
  3 source row of tmp row 0, 4 source column of weight index 0,
  5 tmp rows, 6 tmp offset (words), 7 x table offset, 8 x taps,
  9 y table offset, 10 y taps, 11 flip,
  12 jitter op count, 13 jitter ops (4 bits each, first op lowest),
  14..17 brightness, contrast, saturation, hue factors (f32 bits),
  18 grayscale, 19 solarize, 20 blur, 21..29 blur taps (f32 bits).
Weight tables hold rows [start, w_0 .. w_T-1] of i32: PIL's 22-bit fixed
point weights, so the resize reproduces PIL's 8-bit arithmetic exactly. */}}

{{define "augment_common"}}
const JOB = 32u;
@group(0) @binding(1) var<storage, read> jobs: array<u32>;
// clip8 is PIL's rounding of a fixed-point sum (rounding half included) to a byte.
fn clip8(s: i32) -> u32 { return u32(clamp(s >> 22u, 0, 255)); }
{{end}}

{{/* augment_finish: solarize (when the job says so) then y = v * scale +
shift of channel ch; the including kernel's Params hold s0..s2, b0..b2 and
threshold. */}}
{{define "augment_finish"}}
fn finish(v: f32, ch: u32, solarize: bool) -> f32 {
  let u = select(v, 1.0 - v, solarize && v >= p.threshold);
  let scale = select(select(p.s0, p.s1, ch == 1u), p.s2, ch == 2u);
  let shift = select(select(p.b0, p.b1, ch == 1u), p.b2, ch == 2u);
  return fma(u, scale, shift);
}
{{end}}

{{/* crop_resize_h: the horizontal pass. Invocation (j, rb, c) computes tmp
pixels (4 rb + q, j), q < 4, of job base + c (one set of weight loads for
four rows) and writes each pixel's three bytes into one word. Loads, not
arithmetic, are what costs on lavapipe. Data: Quad (0..3, unrolled). */}}
{{define "crop_resize_h"}}
{{template "augment_common" .}}
struct Params { base: u32, ow: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> tabs: array<i32>;
@group(0) @binding(3) var<storage, read> src: array<u32>;
@group(0) @binding(4) var<storage, read_write> tmp: array<u32>;
// pixel reads the channels of the pixel at byte at from the two words it
// spans (one channel repeated when gray).
fn pixel(at: u32, rgb: bool) -> vec3<i32> {
  let a = at >> 2u;
  let sh = (at & 3u) << 3u;
  let hi = src[min(a + 1u, arrayLength(&src) - 1u)];
  let v = (src[a] >> sh) | select(0u, hi << (32u - sh), sh != 0u);
  let r = i32(v & 255u);
  return select(vec3<i32>(r), vec3<i32>(r, i32((v >> 8u) & 255u), i32((v >> 16u) & 255u)), rgb);
}
@compute @workgroup_size(16, 4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let job = (p.base + wid.z) * JOB;
  let j = gid.x;
  let r0 = gid.y * 4u;
  let rows = jobs[job + 5u];
  if (j >= p.ow || r0 >= rows) { return; }
  let C = jobs[job + 2u];
  let rgb = C == 3u;
  let T = jobs[job + 8u];
  let row = jobs[job + 7u] + j * (T + 1u);
  let x0 = jobs[job + 4u] + u32(tabs[row]);
  let pitch = jobs[job + 1u] * C;
  // Rows past the end read the last row and are not stored.
  {{range .Quad}}var at{{.}} = jobs[job] + (jobs[job + 3u] + min(r0 + {{.}}u, rows - 1u)) * pitch + x0 * C;
  var s{{.}} = vec3<i32>(2097152); // 1 << 21: rounding half
  {{end}}
  for (var t = 0u; t < T; t++) {
    let k = tabs[row + 1u + t];
    {{range .Quad}}s{{.}} += k * pixel(at{{.}}, rgb);
    at{{.}} += C;
    {{end}}
  }
  let o = jobs[job + 6u] + r0 * p.ow + j;
  {{range .Quad}}if (r0 + {{.}}u < rows) { tmp[o + {{.}}u * p.ow] = clip8(s{{.}}.x) | (clip8(s{{.}}.y) << 8u) | (clip8(s{{.}}.z) << 16u); }
  {{end}}
}
{{end}}

{{/* crop_resize_v: the vertical pass, mirror, and y = byte * scale + shift
per channel into out [n, 3, oh, ow]. Invocation (jb, i, c) computes output
pixels (i, 4 jb + q), q < 4, of job base + c, sharing the weight loads.
Data: Quad (0..3, unrolled). */}}
{{define "crop_resize_v"}}
{{template "augment_common" .}}
struct Params { base: u32, oh: u32, ow: u32, s0: f32, s1: f32, s2: f32, b0: f32, b1: f32, b2: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> tabs: array<i32>;
@group(0) @binding(3) var<storage, read> tmp: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
fn bytes3(v: u32) -> vec3<i32> { return vec3<i32>(i32(v & 255u), i32((v >> 8u) & 255u), i32(v >> 16u)); }
@compute @workgroup_size(16, 4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let j0 = gid.x * 4u;
  let i = gid.y;
  if (j0 >= p.ow || i >= p.oh) { return; }
  let c = p.base + wid.z;
  let job = c * JOB;
  let flip = jobs[job + 11u] != 0u;
  let T = jobs[job + 10u];
  let row = jobs[job + 9u] + i * (T + 1u);
  var at = jobs[job + 6u] + u32(tabs[row]) * p.ow;
  // Columns past the end read the last column and are not stored.
  {{range .Quad}}let x{{.}} = select(min(j0 + {{.}}u, p.ow - 1u), p.ow - 1u - min(j0 + {{.}}u, p.ow - 1u), flip);
  var s{{.}} = vec3<i32>(2097152);
  {{end}}
  for (var t = 0u; t < T; t++) {
    let k = tabs[row + 1u + t];
    {{range .Quad}}s{{.}} += k * bytes3(tmp[at + x{{.}}]);
    {{end}}
    at += p.ow;
  }
  let n = p.oh * p.ow;
  let o = c * 3u * n + i * p.ow + j0;
  {{range .Quad}}if (j0 + {{.}}u < p.ow) {
    y[o + {{.}}u] = fma(f32(clip8(s{{.}}.x)), p.s0, p.b0);
    y[o + {{.}}u + n] = fma(f32(clip8(s{{.}}.y)), p.s1, p.b1);
    y[o + {{.}}u + 2u * n] = fma(f32(clip8(s{{.}}.z)), p.s2, p.b2);
  }
  {{end}}
}
{{end}}

{{/* crop_color: colour jitter (the job's ops in order) then grayscale, in
place on x [n, 3, S*S], one workgroup per crop. Contrast needs the mean gray
value of the crop as it stands when contrast is applied: a first sweep
recomputes the ops before it and reduces their gray values in workgroup
memory. Crops that are not blurred are finished here (solarize, normalise)
and crop_blur skips them. */}}
{{define "crop_color"}}
{{template "augment_common" .}}
struct Params { npix: u32, s0: f32, s1: f32, s2: f32, b0: f32, b1: f32, b2: f32, threshold: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
{{template "augment_finish" .}}
var<workgroup> part: array<f32, 256>;
fn gray(c: vec3<f32>) -> f32 { return dot(c, vec3<f32>(0.299, 0.587, 0.114)); }
// rotate_hue turns the hue by f turns in HSV, keeping saturation and value;
// the HSV-to-RGB step is the branch-free form, continuous in the hue.
fn rotate_hue(c: vec3<f32>, f: f32) -> vec3<f32> {
  let v = max(c.r, max(c.g, c.b));
  let d = v - min(c.r, min(c.g, c.b));
  if (d <= 0.0) { return c; }
  var h: f32;
  if (v == c.r) { h = (c.g - c.b) / d; } else if (v == c.g) { h = 2.0 + (c.b - c.r) / d; } else { h = 4.0 + (c.r - c.g) / d; }
  h = fract(h / 6.0 + f + 2.0) * 6.0;
  let k = (vec3<f32>(5.0, 3.0, 1.0) + h) % vec3<f32>(6.0);
  return v - (d * clamp(min(k, 4.0 - k), vec3<f32>(0.0), vec3<f32>(1.0)));
}
fn apply(c: vec3<f32>, op: u32, f: f32, mean: f32) -> vec3<f32> {
  switch op {
    case 0u: { return clamp(c * f, vec3<f32>(0.0), vec3<f32>(1.0)); }
    case 1u: { return clamp(c * f + (1.0 - f) * mean, vec3<f32>(0.0), vec3<f32>(1.0)); }
    case 2u: { return clamp(c * f + (1.0 - f) * gray(c), vec3<f32>(0.0), vec3<f32>(1.0)); }
    default: { return rotate_hue(c, f); }
  }
}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let job = wid.x * JOB;
  let n = p.npix;
  let off = wid.x * 3u * n;
  let nops = jobs[job + 12u];
  let ops = jobs[job + 13u];
  var pre = 0u;
  while (pre < nops && ((ops >> (4u * pre)) & 15u) != 1u) { pre++; }
  var sum = 0.0;
  if (pre < nops) {
    for (var q = li; q < n; q += 256u) {
      var c = vec3<f32>(x[off + q], x[off + n + q], x[off + 2u * n + q]);
      for (var k = 0u; k < pre; k++) {
        let op = (ops >> (4u * k)) & 15u;
        c = apply(c, op, bitcast<f32>(jobs[job + 14u + op]), 0.0);
      }
      sum += gray(c);
    }
  }
  part[li] = sum;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (li < s) { part[li] += part[li + s]; }
    workgroupBarrier();
  }
  let mean = part[0] / f32(n);
  let to_gray = jobs[job + 18u] != 0u;
  let done = jobs[job + 20u] == 0u; // no blur follows
  let solarize = jobs[job + 19u] != 0u;
  if (nops == 0u && !to_gray && !done) { return; }
  for (var q = li; q < n; q += 256u) {
    var c = vec3<f32>(x[off + q], x[off + n + q], x[off + 2u * n + q]);
    for (var k = 0u; k < nops; k++) {
      let op = (ops >> (4u * k)) & 15u;
      c = apply(c, op, bitcast<f32>(jobs[job + 14u + op]), mean);
    }
    if (to_gray) { c = vec3<f32>(gray(c)); }
    if (done) { c = vec3<f32>(finish(c.r, 0u, solarize), finish(c.g, 1u, solarize), finish(c.b, 2u, solarize)); }
    x[off + q] = c.r;
    x[off + n + q] = c.g;
    x[off + 2u * n + q] = c.b;
  }
}
{{end}}

{{/* crop_blur: one pass of the separable 9-tap Gaussian blur over the
blurred crops of x [n, 3, H, W] with reflect borders (H, W >= 5), along rows
(Vertical false) or columns; other crops are left alone (crop_color has
finished them). The vertical pass also finishes (solarize, normalise).
Invocation (a, b, plane) computes 8 consecutive outputs along the blur
direction from a window of 16 inputs held in registers: 2 loads per output
instead of 9 (loads, not arithmetic, are what costs on lavapipe). In the
horizontal pass a counts blocks of 8 columns and b rows; in the vertical
pass a counts columns and b blocks of 8 rows.
Data: Vertical, Taps (0..8), Win (0..15), Outs (0..7), to unroll the loops. */}}
{{define "crop_blur"}}
{{template "augment_common" .}}
struct Params { H: u32, W: u32, s0: f32, s1: f32, s2: f32, b0: f32, b1: f32, b2: f32, threshold: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
{{template "augment_finish" .}}
// reflect mirrors i into [0, n) without repeating the edge; indices past
// the mirror (only for outputs beyond the end, which are not stored) clamp.
fn reflect(i: i32, n: i32) -> u32 { return u32(clamp(select(select(i, 2 * n - 2 - i, i >= n), -i, i < 0), 0, n - 1)); }
@compute @workgroup_size(16, 4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let plane = wid.z; // uniform in the workgroup, so job words load once
  let job = (plane / 3u) * JOB;
  if (jobs[job + 20u] == 0u) { return; }
  {{if .Vertical}}
  let n = i32(p.H);
  let p0 = i32(gid.y * 8u);
  if (gid.x >= p.W || p0 >= n) { return; }
  let base = plane * p.H * p.W + gid.x;
  let stride = p.W;
  {{else}}
  let n = i32(p.W);
  let p0 = i32(gid.x * 8u);
  if (p0 >= n || gid.y >= p.H) { return; }
  let base = (plane * p.H + gid.y) * p.W;
  let stride = 1u;
  {{end}}
  var w: array<f32, 9>;
  {{range .Taps}}w[{{.}}] = bitcast<f32>(jobs[job + {{add 21 .}}u]);
  {{end}}
  var win: array<f32, 16>;
  {{range .Win}}win[{{.}}] = x[base + reflect(p0 + {{sub . 4}}, n) * stride];
  {{end}}
  let solarize = jobs[job + 19u] != 0u;
  var v: f32;
  {{range $o := .Outs}}
  if (p0 + {{$o}} < n) {
    v = 0.0;
    {{range $.Taps}}v = fma(w[{{.}}], win[{{add $o .}}], v);
    {{end}}
    {{if $.Vertical}}v = finish(v, plane % 3u, solarize);{{end}}
    y[base + u32(p0 + {{$o}}) * stride] = v;
  }
  {{end}}
}
{{end}}
