{{/* Row gather and scatter for iBOT's masked patches. Both are elementwise
kernels (elt_main in activation.wgsl): element i is
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
