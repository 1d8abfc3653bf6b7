{{/* interp: separable resampling of a [C1, C2, D] grid to [R1, R2, D]:
y[i, j, d] (+)= sum_a ty[i, a] sum_b tx[j, b] x[y0 + a, x0 + b, d], with each
table row packed as [start, w_0 .. w_T-1] (start an exact integer in f32).
Forward uses the rows of the bicubic matrices, backward the rows of their
transposes, so one kernel serves both. One invocation per output element, d
fastest, so neighbouring invocations read neighbouring addresses.
Data: Accumulate. */}}
{{define "interp"}}
{{template "common" .}}
struct Params { total: u32, R2: u32, C2: u32, D: u32, T1: u32, T2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ty: array<f32>;
@group(0) @binding(2) var<storage, read> tx: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_id(gid, nwg, 256u);
  if (o >= p.total) { return; }
  let d = o % p.D;
  let j = (o / p.D) % p.R2;
  let i = o / (p.D * p.R2);
  let ry = i * (p.T1 + 1u);
  let rx = j * (p.T2 + 1u);
  let a0 = u32(ty[ry]);
  let b0 = u32(tx[rx]);
  var s = 0.0;
  for (var a = 0u; a < p.T1; a++) {
    let base = ((a0 + a) * p.C2 + b0) * p.D + d;
    var r = 0.0;
    for (var b = 0u; b < p.T2; b++) { r = fma(tx[rx + 1u + b], x[base + b * p.D], r); }
    s = fma(ty[ry + 1u + a], r, s);
  }
  {{if .Accumulate}}y[o] += s;{{else}}y[o] = s;{{end}}
}
{{end}}
