{{/*
Head layout changes around multi-head attention. The fused qkv Linear writes
x [B, T, S*H*Dh] (S = 3 parts q, k, v; S = 1 for an attention output or its
gradient); the batched matmuls of attention want each part as heads
[B, H, T, Dh]. heads_permute moves one part between the two layouts, scaled
by a (the softmax scale folds into q this way), in either direction: split
(Merge false) reads x and writes heads, merge (Merge true) the reverse. One
invocation per element, enumerated in heads order so that writes of split
and reads of merge are contiguous.
*/}}

{{define "heads_permute"}}
{{template "common" .}}
struct Params { n: u32, T: u32, H: u32, Dh: u32, row: u32, col: u32, a: f32 }
@group(0) @binding(0) var<uniform> p: Params;
{{if .Merge}}@group(0) @binding(1) var<storage, read> heads: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
{{else}}@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> heads: array<f32>;
{{end}}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.n) { return; }
  // i = ((b*H + h)*T + t)*Dh + d
  let d = i % p.Dh;
  let t = (i / p.Dh) % p.T;
  let bh = i / (p.Dh * p.T);
  let h = bh % p.H;
  let b = bh / p.H;
  let j = (b * p.T + t) * p.row + p.col + h * p.Dh + d;
  {{if .Merge}}x[j] = p.a * heads[i];{{else}}heads[i] = p.a * x[j];{{end}}
}
{{end}}
