{{/* Shared snippets. A kernel includes them with {{template "common" .}}. */}}
{{define "common"}}
// flat_id turns a 2-D dispatch (used when a 1-D one would exceed 65535 groups)
// into one linear invocation index.
fn flat_id(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
  return gid.x + gid.y * nwg.x * wg;
}
{{end}}

{{define "gelu_fn"}}
// Exact GELU, x * Phi(x), with erf from Abramowitz-Stegun 7.1.26 refined to
// |error| < 1.5e-7 (WGSL has no erf).
fn erf_approx(x: f32) -> f32 {
  let s = sign(x);
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * z);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
  return s * y;
}
fn gelu(x: f32) -> f32 { return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); }
// d gelu / dx = Phi(x) + x * phi(x)
fn gelu_grad(x: f32) -> f32 {
  return 0.5 * (1.0 + erf_approx(x * 0.70710678118654752)) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}
{{end}}

{{define "fill"}}
{{template "common" .}}
struct Params { n: u32, value: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i < p.n) { y[i] = p.value; }
}
{{end}}
