{{/*
Head layout changes around multi-head attention. The fused qkv Linear writes
x [B, T, S*H*Dh] (S = 3 parts q, k, v; S = 1 for an attention output or its
gradient); the batched matmuls of attention want each part as heads
[B, H, T, Dh]. heads_permute moves one part between the two layouts, scaled
by a (the softmax scale folds into q this way), in either direction: split
(Merge false) reads x and writes heads, merge (Merge true) the reverse. One
invocation per element, enumerated in heads order so that writes of split
and reads of merge are contiguous. Data: Merge, Dh.
*/}}

{{define "heads_permute"}}
struct Params { T: u32, H: u32, row: u32, col: u32, a: f32 }
@group(0) @binding(0) var<uniform> p: Params;
{{if .Merge}}@group(0) @binding(1) var<storage, read> heads: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
{{else}}@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> heads: array<f32>;
{{end}}
const DH = {{.Dh}}u;

// Grid (T Dh / 256, H, B): the head and the batch come from the grid and
// the head width is a constant, so no index needs a division at run time
// (lavapipe emulates u32 division lane by lane).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let td = gid.x; // t * Dh + d
  if (td >= p.T * DH) { return; }
  let h = gid.y;
  let b = gid.z;
  let i = (b * p.H + h) * p.T * DH + td;
  let j = (b * p.T + td / DH) * p.row + p.col + h * DH + td % DH;
  {{if .Merge}}x[j] = p.a * heads[i];{{else}}heads[i] = p.a * x[j];{{end}}
}
{{end}}
