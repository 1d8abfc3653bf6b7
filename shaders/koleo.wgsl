{{/* KoLeo regulariser on L2-normalised rows x [B, D] (B <= ~1024, the batch
on one device): loss = -mean_i log(||x_i - x_n(i)|| + eps) with n(i) the
nearest other row. B^2 D work, so one invocation per
row and no workgroup memory; T is f32 or vec4 (vec_t in norm.wgsl). */}}

{{/* koleo_dist: d = ||x_i - x_j|| over the n = D/W T-columns of rows i and j. */}}
{{define "koleo_dist"}}
fn dist(i: u32, j: u32, n: u32) -> f32 {
  var q = T();
  for (var c = 0u; c < n; c++) {
    let v = x[i * n + c] - x[j * n + c];
    q = fma(v, v, q);
  }
  return sqrt(hsum(q));
}
{{end}}

{{/* koleo_nn: nn[i] = argmin_{j != i} ||x_i - x_j||^2, the first such j on
ties, and i itself when B = 1 (no other row: the loss and backward skip it).
Squared distances, not dot products: for close rows (an untrained model's
CLS tokens differ by ~1e-4) every dot product of normalised rows rounds to
1 in f32 and the argmax would be noise. Four rows j at a time share each
load of x_i. Data: Vec4. */}}
{{define "koleo_nn"}}
{{template "common" .}}
{{template "vec_t" .}}
struct Params { B: u32, D: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> nn: array<u32>;
const MAX = 3.4028234663852886e38;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 64u);
  if (i >= p.B) { return; }
  let n = p.D / W;
  var best = MAX;
  var arg = i;
  for (var j0 = 0u; j0 < p.B; j0 += 4u) {
    // Rows past the last are read as the last row again and skipped below.
    let b1 = min(j0 + 1u, p.B - 1u) * n;
    let b2 = min(j0 + 2u, p.B - 1u) * n;
    let b3 = min(j0 + 3u, p.B - 1u) * n;
    var s0 = T();
    var s1 = T();
    var s2 = T();
    var s3 = T();
    for (var c = 0u; c < n; c++) {
      let a = x[i * n + c];
      let e0 = a - x[j0 * n + c];
      let e1 = a - x[b1 + c];
      let e2 = a - x[b2 + c];
      let e3 = a - x[b3 + c];
      s0 = fma(e0, e0, s0);
      s1 = fma(e1, e1, s1);
      s2 = fma(e2, e2, s2);
      s3 = fma(e3, e3, s3);
    }
    var s = vec4(hsum(s0), hsum(s1), hsum(s2), hsum(s3));
    for (var t = 0u; t < 4u; t++) {
      let j = j0 + t;
      if (j < p.B && j != i && s[t] < best) { best = s[t]; arg = j; }
    }
  }
  nn[i] = arg;
}
{{end}}

{{/* koleo_loss: loss[0] = -1/B sum_i log(||x_i - x_nn[i]|| + eps) by one
workgroup (B D work); rows without a neighbour (B = 1) add nothing.
Data: WG, Lanes (= WG), Vec4. */}}
{{define "koleo_loss"}}
{{template "row_reduce" .}}
{{template "vec_t" .}}
struct Params { B: u32, D: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> nn: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
{{template "koleo_dist" .}}
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
@compute @workgroup_size({{.WG}})
fn main(@builtin(local_invocation_index) lid: u32) {
  let n = p.D / W;
  var a = 0.0;
  for (var i = lid; i < p.B; i += WG) {
    let j = nn[i];
    if (j != i) { a += log(dist(i, j, n) + p.eps); }
  }
  let r = row_reduce(vec2(a, 0.0), lid).x;
  if (lid == 0u) { loss[0] = 0.0 - r / f32(p.B); }
}
{{end}}

{{/* koleo_backward: with g = -dLoss / B and, per term i with neighbour
j = nn[i] and d = ||x_i - x_j||, c_i = g / (d (d + eps)) (0 when d = 0, where
the distance has no gradient: duplicate rows), row r gathers
  dx_r (+)= c_r (x_r - x_nn[r]) + sum_{i != r, nn[i] = r} c_i (x_r - x_i):
its own term and those of the rows whose neighbour it is, so each
invocation writes only its own row and no atomics are needed. Data: Vec4,
Accumulate. */}}
{{define "koleo_backward"}}
{{template "common" .}}
{{template "vec_t" .}}
struct Params { B: u32, D: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> nn: array<u32>;
@group(0) @binding(3) var<storage, read> dloss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<T>;
{{template "koleo_dist" .}}
fn coef(i: u32, j: u32, n: u32, g: f32) -> f32 {
  let d = dist(i, j, n);
  return select(0.0, g / (d * (d + p.eps)), d > 0.0);
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = flat_id(gid, nwg, 64u);
  if (r >= p.B) { return; }
  let n = p.D / W;
  let g = -dloss[0] / f32(p.B);
  let j = nn[r];
  var cr = 0.0;
  if (j != r) { cr = coef(r, j, n, g); }
  for (var c = 0u; c < n; c++) {
    let v = cr * (x[r * n + c] - x[j * n + c]);
    {{if .Accumulate}}dx[r * n + c] += v;{{else}}dx[r * n + c] = v;{{end}}
  }
  for (var i = 0u; i < p.B; i++) {
    if (i == r || nn[i] != r) { continue; }
    let ci = coef(i, r, n, g);
    for (var c = 0u; c < n; c++) { dx[r * n + c] += ci * (x[r * n + c] - x[i * n + c]); }
  }
}
{{end}}
