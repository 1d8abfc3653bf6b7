{{/* Patch embedding permutations. A conv with kernel = stride = P is a matmul
over flattened patches: patches[b, n, f] with n = gy*GW + gx (row-major over
the patch grid) and f = (c*P + ky)*P + kx, the order of PyTorch's conv weight
[D, C, P, P] flattened to [D, C*P*P]. */}}

{{/* patchify: patches[b, n, f] = images[b, c, gy*P + ky, gx*P + kx]. One
invocation per output element: neighbouring invocations read runs of P
neighbouring pixels and write neighbouring addresses. */}}
{{define "patchify"}}
{{template "common" .}}
struct Params { total: u32, C: u32, H: u32, W: u32, P: u32, GW: u32, N: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<f32>;
@group(0) @binding(2) var<storage, read_write> patches: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = flat_id(gid, nwg, 256u);
  if (o >= p.total) { return; }
  let F = p.C * p.P * p.P;
  let f = o % F;
  let n = (o / F) % p.N;
  let b = o / (F * p.N);
  let kx = f % p.P;
  let ky = (f / p.P) % p.P;
  let c = f / (p.P * p.P);
  let y = (n / p.GW) * p.P + ky;
  let x = (n % p.GW) * p.P + kx;
  patches[o] = images[((b * p.C + c) * p.H + y) * p.W + x];
}
{{end}}

{{/* unpatchify: the inverse permutation (the input gradient of patchify).
One invocation per image element, so writes are contiguous. Data: Accumulate. */}}
{{define "unpatchify"}}
{{template "common" .}}
struct Params { total: u32, C: u32, H: u32, W: u32, P: u32, GW: u32, N: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> patches: array<f32>;
@group(0) @binding(2) var<storage, read_write> images: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.total) { return; }
  let x = i % p.W;
  let y = (i / p.W) % p.H;
  let c = (i / (p.W * p.H)) % p.C;
  let b = i / (p.W * p.H * p.C);
  let n = (y / p.P) * p.GW + x / p.P;
  let f = (c * p.P + y % p.P) * p.P + x % p.P;
  let v = patches[(b * p.N + n) * p.C * p.P * p.P + f];
  {{if .Accumulate}}images[i] += v;{{else}}images[i] = v;{{end}}
}
{{end}}
