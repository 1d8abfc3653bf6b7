{{/* Reductions. */}}

{{/* sum_rows: out[n] (+)= sum over m of x[m, n]; the bias gradient of a linear
layer. One invocation per column keeps neighbouring lanes on neighbouring
addresses; rows are split into SPLIT chunks reduced by a second pass when M is
large. Data: Accumulate. */}}
{{define "sum_rows"}}
{{template "common" .}}
struct Params { M: u32, N: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = flat_id(gid, nwg, 64u);
  if (n >= p.N) { return; }
  var s = 0.0;
  for (var m = 0u; m < p.M; m++) { s += x[m * p.N + n]; }
  {{if .Accumulate}}out[n] += s;{{else}}out[n] = s;{{end}}
}
{{end}}
