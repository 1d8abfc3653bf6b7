{{/* k-means (Lloyd) on the GPU. Assignment is a matmul with bias -|c|^2/2
and a top-1 (nn.TopK); these kernels update the centroids. Float atomics do
not exist in WGSL and a float sum in arrival order would not be
deterministic, so points are summed as 64-bit fixed point with two u32
atomics per value: integer addition is associative, so the sums (and the
centroids) are the same bits on every run. */}}

{{/* kmeans_scatter: adds every point x [n, d] (as round(x * scale), a
two's-complement 64-bit number split in lo and hi words) to the sums
[K, d, 2] of its cluster assign[n], and counts the points per cluster. The
carry out of the low word is detected from the value atomicAdd returns; the
number of carries, and so the final hi word, does not depend on order. */}}
{{define "kmeans_scatter"}}
{{template "common" .}}
struct Params { n: u32, d: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> assign: array<u32>;
@group(0) @binding(3) var<storage, read_write> sums: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> counts: array<atomic<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.n * p.d) { return; }
  let row = i / p.d;
  let col = i % p.d;
  let c = assign[row];
  if (col == 0u) { atomicAdd(&counts[c], 1u); }
  let v = i32(round(x[i] * p.scale));
  let lo = bitcast<u32>(v);
  let at = 2u * (c * p.d + col);
  let old = atomicAdd(&sums[at], lo);
  let hi = select(0u, 0xffffffffu, v < 0) + select(0u, 1u, old + lo < old);
  if (hi != 0u) { atomicAdd(&sums[at + 1u], hi); }
}
{{end}}

{{/* kmeans_update: centroid [k, d] = sum / (count * scale) for clusters
that got points (empty clusters keep their centroid), and clears the sums
for the next iteration. One invocation per value. */}}
{{define "kmeans_update"}}
{{template "common" .}}
struct Params { k: u32, d: u32, inv_scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> sums: array<u32>;
@group(0) @binding(2) var<storage, read> counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> centroids: array<f32>;

// to_f32 converts a two's-complement (hi, lo) pair, negating negative ones
// first so that hi * 2^32 + lo never cancels.
fn to_f32(lo: u32, hi: u32) -> f32 {
  if ((hi & 0x80000000u) == 0u) { return f32(hi) * 4294967296.0 + f32(lo); }
  let nlo = ~lo + 1u;
  let nhi = ~hi + select(0u, 1u, nlo == 0u);
  return -(f32(nhi) * 4294967296.0 + f32(nlo));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.k * p.d) { return; }
  let n = counts[i / p.d];
  let v = to_f32(sums[2u * i], sums[2u * i + 1u]);
  sums[2u * i] = 0u;
  sums[2u * i + 1u] = 0u;
  if (n > 0u) { centroids[i] = v * p.inv_scale / f32(n); }
}
{{end}}

{{/* kmeans_norm: bias [k] = -|c|^2 / 2 for the next assignment (the
nearest centroid in L2 maximises x.c - |c|^2/2), sizes [k] = counts, and
clears the counts. One invocation per centroid. */}}
{{define "kmeans_norm"}}
{{template "common" .}}
struct Params { k: u32, d: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> centroids: array<f32>;
@group(0) @binding(2) var<storage, read_write> counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> sizes: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let c = flat_id(gid, nwg, 64u);
  if (c >= p.k) { return; }
  var s = 0.0;
  for (var j = 0u; j < p.d; j++) {
    let v = centroids[c * p.d + j];
    s += v * v;
  }
  bias[c] = -0.5 * s;
  sizes[c] = counts[c];
  counts[c] = 0u;
}
{{end}}
