{{/* patch_permute: the permutation between images [B, C, H, W] and patches
[B, N, C*P*P] of a conv with kernel = stride = P written as a matmul:
  patches[b, gy*GW + gx, (c*P + ky)*P + kx] = images[b, c, gy*P + ky, gx*P + kx],
the inner order of PyTorch's conv weight [D, C, P, P] flattened to [D, C*P*P].
One invocation per pixel; the grid is (W, C*H, B), so a workgroup shares c
and the row, and each lane does one division by P. Neighbouring lanes touch
neighbouring pixels and runs of P neighbouring patch elements.
Data: Inverse (patches -> images, the gradient), Accumulate (with Inverse). */}}
{{define "patch_permute"}}
struct Params { C: u32, H: u32, W: u32, P: u32, GW: u32, N: u32 }
@group(0) @binding(0) var<uniform> p: Params;
{{if .Inverse}}
@group(0) @binding(1) var<storage, read> patches: array<f32>;
@group(0) @binding(2) var<storage, read_write> images: array<f32>;
{{else}}
@group(0) @binding(1) var<storage, read> images: array<f32>;
@group(0) @binding(2) var<storage, read_write> patches: array<f32>;
{{end}}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let x = gid.x;
  if (x >= p.W) { return; }
  let cy = gid.y;
  let b = gid.z;
  let c = cy / p.H;
  let y = cy % p.H;
  let n = (y / p.P) * p.GW + x / p.P;
  let f = (c * p.P + y % p.P) * p.P + x % p.P;
  let pi = (b * p.N + n) * p.C * p.P * p.P + f;
  let ii = (b * p.C * p.H + cy) * p.W + x;
  {{if .Inverse}}
  {{if .Accumulate}}images[ii] += patches[pi];{{else}}images[ii] = patches[pi];{{end}}
  {{else}}
  patches[pi] = images[ii];
  {{end}}
}
{{end}}
