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

{{/* k-means++ seeding on the GPU, with no round trip to the CPU between
picks: state [2] u32 holds the step t and the last pick, so every step
records the same two dispatches, kmeans_pp_update then kmeans_pp_pick. */}}

{{/* kmeans_pp_update: best[i] = min(best[i], |x_i - x_next|^2) for every
row of x [s, d], next = state[1], and block_sums[w] = the sum of best over
the 256 rows of workgroup w (a fixed tree, so the same bits every run).
With Vec4 (d % 4 == 0) x is read as vec4s, and d counts them. */}}
{{define "kmeans_pp_update"}}
{{template "common" .}}
struct Params { s: u32, d: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{if .Vec4}}vec4<f32>{{else}}f32{{end}}>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read_write> best: array<f32>;
@group(0) @binding(4) var<storage, read_write> block_sums: array<f32>;
var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = flat_id(gid, nwg, 256u);
  var b = 0.0;
  if (i < p.s) {
    let c = state[1] * p.d;
    var dist = 0.0;
    for (var j = 0u; j < p.d; j++) {
      let e = x[i * p.d + j] - x[c + j];
      dist += {{if .Vec4}}dot(e, e){{else}}e * e{{end}};
    }
    b = min(best[i], dist);
    best[i] = b;
  }
  part[li] = b;
  for (var w = 128u; w > 0u; w >>= 1u) {
    workgroupBarrier();
    if (li < w) { part[li] += part[li + w]; }
  }
  if (li == 0u) { block_sums[wid.x + wid.y * nwg.x] = part[0]; }
}
{{end}}

{{/* kmeans_pp_pick: one workgroup draws row `next` of x with probability
best[next] / sum(best) by inverting the cumulative sum at u[t] * total:
lane j sums a run of block sums, the workgroup finds the run, that run's
lane the block in it, then the workgroup the row in the block. A target that
rounding puts past the end of a run or block takes its last row of
positive weight. When every best is 0 (fewer distinct rows than picks) the
row is uniform. It writes picks[t] = next, state = (t + 1, next). */}}
{{define "kmeans_pp_pick"}}
struct Params { s: u32, blocks: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> best: array<f32>;
@group(0) @binding(2) var<storage, read> block_sums: array<f32>;
@group(0) @binding(3) var<storage, read> u: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<u32>;
@group(0) @binding(5) var<storage, read_write> picks: array<u32>;
var<workgroup> cum: array<f32, 256>;
var<workgroup> hit: atomic<u32>;     // the lane whose interval holds the goal
var<workgroup> last: atomic<u32>;    // 1 + the last lane of positive weight
var<workgroup> block: u32;           // the block, found by the run's lane
var<workgroup> rest: f32;            // the goal minus the weight before it

// scan makes cum inclusive prefix sums (Hillis-Steele) and returns lane
// li's interval [cum[li-1], cum[li]).
fn scan(li: u32) -> vec2<f32> {
  for (var off = 1u; off < 256u; off <<= 1u) {
    workgroupBarrier();
    var v = cum[li];
    if (li >= off) { v += cum[li - off]; }
    workgroupBarrier();
    cum[li] = v;
  }
  workgroupBarrier();
  var lo = 0.0;
  if (li > 0u) { lo = cum[li - 1u]; }
  return vec2(lo, cum[li]);
}

// find returns the lane of positive weight w whose interval holds goal,
// else the last lane of positive weight, else 0. (The scan adds in other
// orders for other lanes, so a lane of weight 0 may get an interval an ulp
// wide: it must never be chosen.)
fn find(li: u32, iv: vec2<f32>, w: f32, goal: f32) -> u32 {
  if (li == 0u) { atomicStore(&hit, 0xffffffffu); atomicStore(&last, 0u); }
  workgroupBarrier();
  if (w > 0.0) {
    atomicMax(&last, li + 1u);
    if (iv.x <= goal && goal < iv.y) { atomicMin(&hit, li); }
  }
  workgroupBarrier();
  let h = atomicLoad(&hit);
  let l = atomicLoad(&last);
  workgroupBarrier();
  if (h != 0xffffffffu) { return h; }
  return max(l, 1u) - 1u;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
  let t = state[0];
  let run = (p.blocks + 255u) / 256u;
  var s = 0.0;
  for (var b = li * run; b < min(p.blocks, (li + 1u) * run); b++) { s += block_sums[b]; }
  cum[li] = s;
  let runs = scan(li);
  let total = cum[255];
  let goal = u[t] * total;
  let r = find(li, runs, s, goal);
  if (li == r) {
    // Lane r walks its run for the block; past its end (rounding), the
    // run's last block of positive weight, and a rest that takes that
    // block's last row of positive weight.
    var left = goal - runs.x;
    var pick = 0xffffffffu;
    var lastPos = min(r * run, p.blocks - 1u);
    for (var b = r * run; b < min(p.blocks, (r + 1u) * run); b++) {
      let w = block_sums[b];
      if (w > 0.0) {
        lastPos = b;
        if (left < w) { pick = b; break; }
        left -= w;
      }
    }
    if (pick == 0xffffffffu) {
      pick = lastPos;
      left = 3.4e38;
    }
    block = pick;
    rest = left;
  }
  let first = workgroupUniformLoad(&block) * 256u;
  let left = workgroupUniformLoad(&rest);
  var w = 0.0;
  if (first + li < p.s) { w = best[first + li]; }
  cum[li] = w;
  let rows = scan(li);
  let k = find(li, rows, w, left);
  if (li == 0u) {
    var next = first + k;
    if (!(total > 0.0)) { next = min(p.s - 1u, u32(u[t] * f32(p.s))); }
    picks[t] = next;
    state[0] = t + 1u;
    state[1] = next;
  }
}
{{end}}
