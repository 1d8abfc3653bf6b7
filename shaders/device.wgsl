{{/*
load_cost: the device probe of gpu.Device.BroadcastLoads. Each invocation
adds up p.iters vec4s of x; with Uniform the index depends only on the loop
counter and the workgroup, so every lane of a workgroup loads the same
address, else each lane loads its own. A GPU serves both alike; lavapipe
before Mesa 25.1 loads both lane by lane, while a later one loads a uniform
address once for all lanes. Data: Uniform.
*/}}
{{define "load_cost"}}
struct Params { iters: u32, mask: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  var acc = vec4<f32>();
  for (var i = 0u; i < p.iters; i++) {
    {{if .Uniform}}acc += x[(i * 67u + wid.x) & p.mask];{{else}}acc += x[(i * 67u + wid.x + lid.x) & p.mask];{{end}}
  }
  y[wid.x * 64u + lid.x] = acc;
}
{{end}}
