{{/*
Device ceilings for cmd/bench: the arithmetic peak and the memory bandwidth a
kernel can reach here, so every other timing can be read as a fraction of them.
*/}}

{{/*
bench_fma: each invocation runs Chains independent vec4 fma chains for p.iters
steps and writes their sum, so the work is pure arithmetic with enough
independent chains to hide FMA latency. Data: WG, Chains.
*/}}
{{define "bench_fma"}}
{{template "common" .}}
struct Params { iters: u32, a: f32, b: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size({{.WG}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, {{.WG}}u);
  let a = vec4<f32>(p.a);
  let b = vec4<f32>(p.b);
  {{range .Chains}}var x{{.}} = vec4<f32>(f32(i) + {{.}}.0);
  {{end}}
  for (var t = 0u; t < p.iters; t++) {
    {{range .Chains}}x{{.}} = fma(x{{.}}, a, b);
    {{end}}
  }
  y[i] = {{range .Chains}}x{{.}} + {{end}}vec4<f32>(0.0);
}
{{end}}

{{/* bench_copy: y = x, one vec4 per invocation (bandwidth ceiling). */}}
{{define "bench_copy"}}
{{template "common" .}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i < p.n) { y[i] = x[i]; }
}
{{end}}
