{{/* ViT token assembly. */}}

{{/* vit_tokens: x[b] = [cls + pos[0], reg_1..R, e_1..N + pos[1..N]] where
e_n = mask_token if image b's patch n is masked (iBOT) else the patch
embedding. pos_cls is the pos_embed parameter (row 0 is the CLS position);
pos_grid holds the patch positions from row grid_base on (the same
parameter at row 1, or an interpolated grid at row 0). Registers carry no
position. Data: Registers, Masked (presence of the optional bindings). */}}
{{define "vit_tokens"}}
{{template "common" .}}
struct Params { n: u32, N: u32, R: u32, D: u32, grid_base: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> patch_embed: array<f32>;
@group(0) @binding(2) var<storage, read> cls_token: array<f32>;
@group(0) @binding(3) var<storage, read> pos_cls: array<f32>;
@group(0) @binding(4) var<storage, read> pos_grid: array<f32>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
{{if .Registers}}@group(0) @binding(6) var<storage, read> registers: array<f32>;{{end}}
{{if .Masked}}
@group(0) @binding({{.MaskTokenBinding}}) var<storage, read> mask_token: array<f32>;
@group(0) @binding({{add .MaskTokenBinding 1}}) var<storage, read> mask: array<u32>;
{{end}}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.n) { return; }
  let T = 1u + p.R + p.N;
  let d = i % p.D;
  let t = (i / p.D) % T;
  let b = i / (p.D * T);
  if (t == 0u) {
    x[i] = cls_token[d] + pos_cls[d];
  } else if (t <= p.R) {
    {{if .Registers}}x[i] = registers[(t - 1u) * p.D + d];{{end}}
  } else {
    let n = t - 1u - p.R;
    var e = patch_embed[(b * p.N + n) * p.D + d];
    {{if .Masked}}if (mask[b * p.N + n] != 0u) { e = mask_token[d]; }{{end}}
    x[i] = e + pos_grid[(p.grid_base + n) * p.D + d];
  }
}
{{end}}

{{/* vit_tokens_backward: the gradient of vit_tokens from dx [B, T, D], one
invocation per (token slot s, column d), looping over the batch. dsum[s, d]
= sum_b dx[b, s, d] feeds the CLS token (s = 0), the registers, and the
position embeddings (every slot but the registers); dpe [B, N, D] is dx at
the patch slots, zero where a patch was masked; with Masked, dmask [N, D]
receives per patch slot the sum over images of dx where that patch was
masked (the caller sums its rows into the mask token's gradient). */}}
{{define "vit_tokens_backward"}}
{{template "common" .}}
struct Params { n: u32, B: u32, N: u32, R: u32, D: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dx: array<f32>;
@group(0) @binding(2) var<storage, read_write> dsum: array<f32>;
@group(0) @binding(3) var<storage, read_write> dpe: array<f32>;
{{if .Masked}}@group(0) @binding(4) var<storage, read> mask: array<u32>;
@group(0) @binding(5) var<storage, read_write> dmask: array<f32>;{{end}}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.n) { return; }
  let T = 1u + p.R + p.N;
  let d = i % p.D;
  let s = i / p.D;
  var total = 0.0;
  var masked = 0.0;
  for (var b = 0u; b < p.B; b++) {
    let v = dx[(b * T + s) * p.D + d];
    total += v;
    if (s > p.R) {
      let n = s - 1u - p.R;
      var e = v;
      {{if .Masked}}if (mask[b * p.N + n] != 0u) { masked += v; e = 0.0; }{{end}}
      dpe[(b * p.N + n) * p.D + d] = e;
    }
  }
  dsum[i] = total;
  {{if .Masked}}if (s > p.R) { dmask[(s - 1u - p.R) * p.D + d] = masked; }{{end}}
}
{{end}}
