{{/* Reductions. */}}

{{/* sum_rows: out[n] (+)= sum over m of x[m, n]; the bias gradient of a linear
layer. Neighbouring lanes own neighbouring columns, so that the loads of a row
are contiguous. Data: Accumulate, Lanes (0: the CPU form), Vec4 (CPU form:
four columns an invocation). */}}
{{define "sum_rows"}}
{{template "common" .}}
{{if .Lanes}}
struct Params { M: u32, N: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// A GPU's form: a workgroup of 256 sums COLS adjacent columns, LANES
// invocations striding the rows of each, then a tree over the lanes. (One
// invocation per column, the CPU form below, gives a bias gradient of 384
// columns 6 workgroups: a few percent of a GPU.)
const LANES = {{.Lanes}}u;
const COLS = 256u / LANES;
var<workgroup> red: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = wid.x * COLS + lid % COLS;
  var s = 0.0;
  if (n < p.N) {
    for (var m = lid / COLS; m < p.M; m += LANES) { s += x[m * p.N + n]; }
  }
  red[lid] = s;
  workgroupBarrier();
  for (var w = 128u; w >= COLS; w /= 2u) { // lid and lid + w hold the same column
    if (lid < w) { red[lid] += red[lid + w]; }
    workgroupBarrier();
  }
  if (lid < COLS && n < p.N) { {{if .Accumulate}}out[n] += red[lid];{{else}}out[n] = red[lid];{{end}} }
}
{{else}}
// A CPU's form: one invocation per column (per four with Vec4), the rows in
// chunks of p.chunk, one chunk per workgroup z, so that every core gets
// work even for a bias of 64. Chunk c's sums go to row c of out ([chunks,
// N]); with more than one chunk, a second pass adds those rows up.
struct Params { M: u32, N: u32, chunk: u32 }
@group(0) @binding(0) var<uniform> p: Params;
{{if .Vec4}}alias V = vec4<f32>;
const VEC = 4u;{{else}}alias V = f32;
const VEC = 1u;{{end}}
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> out: array<V>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = flat_id(gid, nwg, 64u);
  let cols = p.N / VEC;
  if (n >= cols) { return; }
  let first = gid.z * p.chunk;
  let last = min(first + p.chunk, p.M);
  // Four rows an iteration: a quarter of the loop's overhead, four
  // independent sums.
  var s0 = V();
  var s1 = V();
  var s2 = V();
  var s3 = V();
  var i = first * cols + n;
  let end4 = (first + (last - first) / 4u * 4u) * cols + n;
  for (; i < end4; i += 4u * cols) {
    s0 += x[i];
    s1 += x[i + cols];
    s2 += x[i + 2u * cols];
    s3 += x[i + 3u * cols];
  }
  for (; i < last * cols + n; i += cols) { s0 += x[i]; }
  let s = (s0 + s1) + (s2 + s3);
  {{if .Accumulate}}out[gid.z * cols + n] += s;{{else}}out[gid.z * cols + n] = s;{{end}}
}
{{end}}
{{end}}

{{/* row_reduce: a workgroup of WG invocations works on WG/LANES rows at a
time, LANES lanes per row (lid = slot * LANES + lane). row_reduce combines one
vec2 per invocation across the lanes of its row with the including kernel's
own combine(a, b) (a sum, a max, the online softmax pair), by a tree in
workgroup memory, and gives every lane its row's result. Call it in uniform
control flow. Data: WG, Lanes (powers of two). */}}
{{define "row_reduce"}}
const WG = {{.WG}}u;
const LANES = {{.Lanes}}u;
const ROWS = {{div .WG .Lanes}}u;
// One lane per row needs no reduction, and no barrier.
{{if eq .Lanes 1}}
fn row_reduce(v: vec2<f32>, lid: u32) -> vec2<f32> { return v; }
{{else}}
var<workgroup> red: array<vec2<f32>, {{.WG}}>;
fn row_reduce(v: vec2<f32>, lid: u32) -> vec2<f32> {
  red[lid] = v;
  workgroupBarrier();
  let lane = lid % LANES;
  for (var s = LANES / 2u; s > 0u; s = s / 2u) {
    if (lane < s) { red[lid] = combine(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let r = red[lid - lane];
  workgroupBarrier();
  return r;
}
{{end}}
{{end}}

{{/* row_loop opens the entry point and the row loop of a row kernel (one
that uses row_reduce): the workgroup walks its p.rpw rows ROWS at a time,
LANES lanes per row, and each lane gets row (clamped to the last one, so
per-row loads stay in range), n (the row's length in elements of the
kernel's arrays, from the kernel's row_len(); 0 for lanes past the last
row: they skip the row's loops but join every barrier, and guard their
per-row writes with n > 0) and base. The kernel closes the loop and main. */}}
{{define "row_loop"}}
@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % LANES;
  let first = wid.x * p.rpw;
  let last = min(first + p.rpw, p.rows);
  for (var r0 = first; r0 < last; r0 += ROWS) {
    let row = min(r0 + lid / LANES, last - 1u);
    let n = select(0u, row_len(), r0 + lid / LANES < last);
    let base = row * row_len();
{{end}}

{{/* reduce_rows: out[r] = op(x[r, :]) for op sum, mean, max or l2 (the
Euclidean norm). Data: WG, Lanes, Op. */}}
{{define "reduce_rows"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
{{if eq .Op "max"}}
const INIT = -3.4028234663852886e38; // -f32 max exactly: Tint (browsers) rejects literals beyond it
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return max(a, b); }
{{else}}
const INIT = 0.0;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
{{end}}
fn row_len() -> u32 { return p.D; }
{{template "row_loop" .}}
    var a = INIT;
    for (var c = lane; c < n; c += LANES) {
      let v = x[base + c];
      {{if eq .Op "max"}}a = max(a, v);{{else if eq .Op "l2"}}a = fma(v, v, a);{{else}}a += v;{{end}}
    }
    let r = row_reduce(vec2(a, 0.0), lid).x;
    if (lane == 0u && n > 0u) {
      {{if eq .Op "mean"}}out[row] = r / f32(p.D);{{else if eq .Op "l2"}}out[row] = sqrt(r);{{else}}out[row] = r;{{end}}
    }
  }
}
{{end}}

{{/* broadcast_rows: the backward of a row reduction, dx[r, c] (+)= scale *
dy[r] (sum, mean, a full sum), times x[r, c] / norm[r] for the l2 norm (0 where
the norm is 0). An elementwise kernel (elt_main in activation.wgsl).
Data: L2, Accumulate. */}}
{{define "broadcast_rows"}}
struct Params { n: u32, D: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
{{if .L2}}
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> norm: array<f32>;
{{end}}
fn elt(i: u32) {
  let r = i / p.D;
  var g = p.scale * dy[r];
  {{if .L2}}
  let n = norm[r];
  g = select(0.0, g * x[i] / n, n > 0.0);
  {{end}}
  {{if .Accumulate}}dx[i] += g;{{else}}dx[i] = g;{{end}}
}
{{template "elt_main" .}}
{{end}}

{{/* sum_all: out[0] = scale * sum of every element of x, by one workgroup
(losses and statistics: tensors of up to a few million elements). Data: WG. */}}
{{define "sum_all"}}
{{template "row_reduce" .}}
struct Params { n: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
@compute @workgroup_size({{.WG}})
fn main(@builtin(local_invocation_index) lid: u32) {
  var a = 0.0;
  for (var i = lid; i < p.n; i += WG) { a += x[i]; }
  let r = row_reduce(vec2(a, 0.0), lid).x;
  if (lid == 0u) { out[0] = p.scale * r; }
}
{{end}}
