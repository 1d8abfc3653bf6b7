{{/* Sinkhorn-Knopp teacher centering on logits t [B, K] (B samples, K up to
131072 prototypes), in scaling form: Q[b, k] = e[b, k] u[k] v[b] with
e = exp((t - max_b t[:, k]) / T) kept in q between passes, so an iteration is
two sweeps over q (one per axis) and only the scaling vectors change:
  prototypes: u[k] = 1 / (K sum_b e[b, k] v[b])
  samples:    v[b] = 1 / (B sum_k e[b, k] u[k])
starting from v = 1, and the output is B e u v. The scratch s holds u at 0
and v at p.v, bound once read_write. */}}

{{/* sinkhorn_cols: u[k] from the v of the previous iteration, one
invocation per prototype k striding down its column (neighbouring lanes read
neighbouring addresses). Exp: the first iteration, which also writes
e = exp((t - column max) / T) into q, with v = 1. Across (samples split over
data-parallel replicas): the column max is read from s[k] (the max over every
replica's samples) and s[k] gets the replica's column sum, which the host adds
up across replicas and turns into u. Data: Exp, Across. */}}
{{define "sinkhorn_cols"}}
{{template "common" .}}
struct Params { B: u32, K: u32, v: u32, inv_temp: f32 }
@group(0) @binding(0) var<uniform> p: Params;
{{if .Exp}}
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> s: array<f32>;
{{else}}
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> s: array<f32>;
{{end}}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat_id(gid, nwg, 64u);
  if (k >= p.K) { return; }
  var sum = 0.0;
  {{if .Exp}}
  {{if .Across}}
  let m = s[k];
  {{else}}
  var m = t[k];
  for (var b = 1u; b < p.B; b++) { m = max(m, t[b * p.K + k]); }
  {{end}}
  for (var b = 0u; b < p.B; b++) {
    let e = exp((t[b * p.K + k] - m) * p.inv_temp);
    q[b * p.K + k] = e;
    sum += e;
  }
  {{else}}
  for (var b = 0u; b < p.B; b++) { sum = fma(q[b * p.K + k], s[p.v + b], sum); }
  {{end}}
  {{if .Across}}
  s[k] = sum;
  {{else}}
  s[k] = 1.0 / (f32(p.K) * sum);
  {{end}}
}
{{end}}

{{/* sinkhorn_colmax: s[k] = max_b t[b, k], a replica's column max before
the max over replicas (sinkhorn_cols' Across). */}}
{{define "sinkhorn_colmax"}}
{{template "common" .}}
struct Params { B: u32, K: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read_write> s: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat_id(gid, nwg, 64u);
  if (k >= p.K) { return; }
  var m = t[k];
  for (var b = 1u; b < p.B; b++) { m = max(m, t[b * p.K + k]); }
  s[k] = m;
}
{{end}}

{{/* sinkhorn_rows: v[b] = 1 / (n sum_k e[b, k] u[k]) with n = B, a row kernel
(row_reduce in reduce.wgsl): ROWS rows of a workgroup's p.rpw at a time, LANES
lanes per row. Across replicas n = 1: each replica's B differs, and n cancels
out of the result only when every sample has the same. Data: WG, Lanes. */}}
{{define "sinkhorn_rows"}}
{{template "row_reduce" .}}
struct Params { rows: u32, K: u32, rpw: u32, v: u32, n: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> s: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
fn row_len() -> u32 { return p.K; }
{{template "row_loop" .}}
    var a = 0.0;
    for (var c = lane; c < n; c += LANES) { a = fma(q[base + c], s[c], a); }
    let r = row_reduce(vec2(a, 0.0), lid).x;
    if (lane == 0u && n > 0u) { s[p.v + row] = 1.0 / (p.n * r); }
  }
}
{{end}}

{{/* sinkhorn_apply: q[b, k] = n e[b, k] u[k] v[b], in place, one invocation
per prototype k (n as in sinkhorn_rows). */}}
{{define "sinkhorn_apply"}}
{{template "common" .}}
struct Params { B: u32, K: u32, v: u32, n: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat_id(gid, nwg, 64u);
  if (k >= p.K) { return; }
  let u = p.n * s[k];
  for (var b = 0u; b < p.B; b++) { q[b * p.K + k] *= u * s[p.v + b]; }
}
{{end}}
