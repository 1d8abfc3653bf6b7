{{/* Optimiser ops over flat f32 buffers; one dispatch per parameter tensor
view, so each view has its own uniform learning rate and weight decay. */}}

{{/* adamw: torch.optim.AdamW's step for one tensor. Scalars that PyTorch
computes in double on the host come precomputed in float64 and rounded once:
omb = 1 - beta, decay = 1 - lr wd, step = lr / (1 - beta1^t), sqrt_bc2 =
sqrt(1 - beta2^t) (rounding beta2 to f32 first would make 1 - beta2 off by
1e-5 relative).
  p *= decay;  m = b1 m + omb1 g;  v = b2 v + omb2 g^2;
  p -= step m / (sqrt(v) / sqrt_bc2 + eps). */}}
{{define "adamw"}}
{{template "common" .}}
struct Params { n: u32, b1: f32, omb1: f32, b2: f32, omb2: f32, decay: f32, step: f32, sqrt_bc2: f32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.n) { return; }
  let g = grad[i];
  let mi = p.b1 * m[i] + p.omb1 * g;
  let vi = p.b2 * v[i] + p.omb2 * g * g;
  m[i] = mi;
  v[i] = vi;
  param[i] = param[i] * p.decay - p.step * mi / (sqrt(vi) / p.sqrt_bc2 + p.eps);
}
{{end}}

{{/* ema: teacher = m teacher + (1 - m) student. */}}
{{define "ema"}}
{{template "common" .}}
struct Params { n: u32, m: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> student: array<f32>;
@group(0) @binding(2) var<storage, read_write> teacher: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.n) { return; }
  teacher[i] = p.m * teacher[i] + (1.0 - p.m) * student[i];
}
{{end}}

{{/* Chunked passes over a view: workgroup g covers elements
[g*CHUNK, (g+1)*CHUNK), invocation l reads l, l+256, ... so neighbours read
neighbouring addresses. Data: Items (elements per invocation). */}}

{{/* sumsq_partial: partials[off + g*256 + l] = sum of x^2 over the Items
elements invocation l of chunk g reads. Writing one partial per invocation
avoids workgroup barriers, which cost more than the extra partials on
lavapipe. */}}
{{define "sumsq_partial"}}
struct Params { n: u32, off: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  let base = g * {{mul .Items 256}}u;
  var s = 0.0;
  for (var j = 0u; j < {{.Items}}u; j++) {
    let i = base + j * 256u + lid;
    if (i < p.n) { s = fma(x[i], x[i], s); }
  }
  partials[p.off + g * 256u + lid] = s;
}
{{end}}

{{/* norm_final: norm[0] = sqrt(sum of the first n partials), one workgroup. */}}
{{define "norm_final"}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm: array<f32>;
var<workgroup> red: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < p.n; i += 256u) { s += partials[i]; }
  red[lid] = s;
  for (var w = 128u; w > 0u; w /= 2u) {
    workgroupBarrier();
    if (lid < w) { red[lid] += red[lid + w]; }
  }
  if (lid == 0u) { norm[0] = sqrt(red[0]); }
}
{{end}}

{{/* clip_scale: g *= min(1, max_norm / (norm[0] + 1e-6)), as
torch.nn.utils.clip_grad_norm_, reading the norm on the GPU. */}}
{{define "clip_scale"}}
{{template "common" .}}
struct Params { n: u32, max_norm: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> norm: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.n) { return; }
  g[i] *= min(1.0, p.max_norm / (norm[0] + 1e-6));
}
{{end}}

{{/* nonfinite: flag[0] = 1 if any element of the view is NaN or +-Inf (all
exponent bits set; a bit test, since x != x may be folded away). Writers race
benignly: they all store 1. */}}
{{define "nonfinite"}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> flag: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = (wid.x + wid.y * nwg.x) * {{mul .Items 256}}u;
  var bad = false;
  for (var j = 0u; j < {{.Items}}u; j++) {
    let i = base + j * 256u + lid;
    if (i < p.n && (bitcast<u32>(x[i]) & 0x7f800000u) == 0x7f800000u) { bad = true; }
  }
  if (bad) { flag[0] = 1.0; }
}
{{end}}
