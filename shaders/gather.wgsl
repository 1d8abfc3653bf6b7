{{/* Row gather and scatter for iBOT's masked patches, and the weighted sum
that averages their losses per image and then over images. The gather and
scatter are elementwise kernels (elt_main in activation.wgsl): element i is
column i % D of output row i / D, so neighbouring invocations copy
neighbouring addresses of one row. */}}

{{/* gather_rows: y[m, :] = x[idx[m], :]; an index past the R rows of x gives
a row of zeros rather than a read out of bounds. */}}
{{define "gather_rows"}}
struct Params { n: u32, D: u32, R: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
fn elt(i: u32) {
  let r = idx[i / p.D];
  y[i] = select(0.0, x[r * p.D + i % p.D], r < p.R);
}
{{template "elt_main" .}}
{{end}}

{{/* scatter_rows_add: dx[idx[m], :] += dy[m, :], the backward of gather_rows.
The indices are distinct, so no two invocations add to one element and no
atomics are needed; indices past R are skipped. */}}
{{define "scatter_rows_add"}}
struct Params { n: u32, D: u32, R: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
fn elt(i: u32) {
  let r = idx[i / p.D];
  if (r < p.R) { dx[r * p.D + i % p.D] += dy[i]; }
}
{{template "elt_main" .}}
{{end}}

{{/* weighted_sum: out[0] = sum_i w[i] x[i] by one workgroup (per-patch
losses: a few thousand elements). Data: WG, Lanes (= WG). */}}
{{define "weighted_sum"}}
{{template "row_reduce" .}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
@compute @workgroup_size({{.WG}})
fn main(@builtin(local_invocation_index) lid: u32) {
  var a = 0.0;
  for (var i = lid; i < p.n; i += WG) { a = fma(w[i], x[i], a); }
  let r = row_reduce(vec2(a, 0.0), lid).x;
  if (lid == 0u) { out[0] = r; }
}
{{end}}

{{/* weighted_sum_backward: dx[i] (+)= w[i] dy[0]. Data: Accumulate. */}}
{{define "weighted_sum_backward"}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
fn elt(i: u32) {
  {{if .Accumulate}}dx[i] += w[i] * dy[0];{{else}}dx[i] = w[i] * dy[0];{{end}}
}
{{template "elt_main" .}}
{{end}}
