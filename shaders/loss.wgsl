{{/* DINO / iBOT losses over rows of K logits (K up to 131072 prototypes). Row
kernels run one workgroup of WG invocations per row (row = flat group index,
so more than 65535 rows split over a 2-D grid); invocations stride over the
row so neighbours read neighbouring addresses, keep running statistics in
registers and combine them once in workgroup memory. */}}

{{/* loss_reduce: workgroup reductions shared by the loss row kernels. lse_reduce
merges per-invocation (max, sum exp(x - max)) pairs; sum2_reduce adds pairs.
Both must be called in uniform control flow and return the row's total to
every invocation. */}}
{{define "loss_reduce"}}
const WG = 256u;
// The most negative finite f32: a start value for running maxima that keeps
// exp(m - max) finite (and zero) when a whole stride holds no element.
const NEG_MAX = -3.4028234663852886e38;
var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

fn lse_reduce(lid: u32, m: f32, e: f32) -> vec2<f32> {
  red_a[lid] = m;
  red_b[lid] = e;
  for (var w = WG / 2u; w > 0u; w /= 2u) {
    workgroupBarrier();
    if (lid < w) {
      let m1 = red_a[lid];
      let m2 = red_a[lid + w];
      let mm = max(m1, m2);
      red_b[lid] = red_b[lid] * exp(m1 - mm) + red_b[lid + w] * exp(m2 - mm);
      red_a[lid] = mm;
    }
  }
  workgroupBarrier();
  let r = vec2<f32>(red_a[0], red_b[0]);
  workgroupBarrier();
  return r;
}

fn sum2_reduce(lid: u32, a: f32, b: f32) -> vec2<f32> {
  red_a[lid] = a;
  red_b[lid] = b;
  for (var w = WG / 2u; w > 0u; w /= 2u) {
    workgroupBarrier();
    if (lid < w) {
      red_a[lid] += red_a[lid + w];
      red_b[lid] += red_b[lid + w];
    }
  }
  workgroupBarrier();
  let r = vec2<f32>(red_a[0], red_b[0]);
  workgroupBarrier();
  return r;
}
{{end}}

{{/* softmax_xent: per row r, z = s / tau,
  loss[r] = -sum_k t[r, k] log_softmax(z)_k = lse * sum_k t - sum_k t z,
and saves lse[r] = logsumexp(z) and tsum[r] = sum_k t[r, k] for the backward. */}}
{{define "softmax_xent"}}
{{template "loss_reduce" .}}
struct Params { R: u32, K: u32, inv_tau: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> tsum: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.R) { return; }
  let base = r * p.K;
  var m = NEG_MAX;
  var e = 0.0;
  var tz = 0.0;
  var ts = 0.0;
  for (var k = lid; k < p.K; k += WG) {
    let z = s[base + k] * p.inv_tau;
    let tk = t[base + k];
    if (z > m) { e = e * exp(m - z) + 1.0; m = z; } else { e += exp(z - m); }
    tz = fma(tk, z, tz);
    ts += tk;
  }
  let me = lse_reduce(lid, m, e);
  let sums = sum2_reduce(lid, tz, ts);
  if (lid == 0u) {
    let l = me.x + log(me.y);
    loss[r] = l * sums.y - sums.x;
    lse[r] = l;
    tsum[r] = sums.y;
  }
}
{{end}}

{{/* row_entropy: h[r] = -sum_k q[r, k] log q[r, k] (0 log 0 = 0) over rows of
probabilities. The DINO teacher's entropy: with the cross-entropy (its
entropy plus the KL to the student) it tells a sharp teacher from a
uniform one, the collapse centering alone would give. */}}
{{define "row_entropy"}}
{{template "loss_reduce" .}}
struct Params { R: u32, K: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> h: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.R) { return; }
  let base = r * p.K;
  var e = 0.0;
  for (var k = lid; k < p.K; k += WG) {
    let qk = q[base + k];
    if (qk > 0.0) { e -= qk * log(qk); }
  }
  let sums = sum2_reduce(lid, e, 0.0);
  if (lid == 0u) { h[r] = sums.x; }
}
{{end}}

{{/* softmax_xent_backward: ds[r, k] (+)= w[r] (softmax(s/tau)_k tsum[r] -
t[r, k]) / tau with the saved lse and tsum. One workgroup per row like the
forward, which spares a per-element division by K. Data: Accumulate,
InPlace. */}}
{{define "softmax_xent_backward"}}
struct Params { R: u32, K: u32, inv_tau: f32 }
@group(0) @binding(0) var<uniform> p: Params;
// InPlace: ds is s, bound once (each invocation writes only the logits it
// has read).
{{if .InPlace}}@group(0) @binding(1) var<storage, read_write> ds: array<f32>;
{{else}}@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(6) var<storage, read_write> ds: array<f32>;{{end}}
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> tsum: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.R) { return; }
  let base = r * p.K;
  let l = lse[r];
  let ts = tsum[r];
  let scale = w[r] * p.inv_tau;
  for (var k = lid; k < p.K; k += 256u) {
    let i = base + k;
    let g = scale * (exp({{if .InPlace}}ds{{else}}s{{end}}[i] * p.inv_tau - l) * ts - t[i]);
    {{if .Accumulate}}ds[i] += g;{{else}}ds[i] = g;{{end}}
  }
}
{{end}}

{{/* teacher_softmax: probs[r] = softmax((t[r] - c) / T), the DINO teacher
with EMA centering (Center false: no center). Two passes over the row: the
running (max, sum) and the write. */}}
{{define "teacher_softmax"}}
{{template "loss_reduce" .}}
struct Params { R: u32, K: u32, inv_temp: f32 }
@group(0) @binding(0) var<uniform> p: Params;
// InPlace: probs is t (each invocation writes only the logits it reads
// after the row's reduction).
@group(0) @binding(1) var<storage, {{if .InPlace}}read_write{{else}}read{{end}}> t: array<f32>;
{{if not .InPlace}}@group(0) @binding(2) var<storage, read_write> probs: array<f32>;{{end}}
{{if .Center}}@group(0) @binding({{if .InPlace}}2{{else}}3{{end}}) var<storage, read> c: array<f32>;{{end}}
fn logit(base: u32, k: u32) -> f32 {
  {{if .Center}}return (t[base + k] - c[k]) * p.inv_temp;{{else}}return t[base + k] * p.inv_temp;{{end}}
}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.R) { return; }
  let base = r * p.K;
  var m = NEG_MAX;
  var e = 0.0;
  for (var k = lid; k < p.K; k += WG) {
    let z = logit(base, k);
    if (z > m) { e = e * exp(m - z) + 1.0; m = z; } else { e += exp(z - m); }
  }
  let me = lse_reduce(lid, m, e);
  let l = me.x + log(me.y);
  for (var k = lid; k < p.K; k += WG) { {{if .InPlace}}t{{else}}probs{{end}}[base + k] = exp(logit(base, k) - l); }
}
{{end}}

{{/* center_update: c[k] = m c[k] + (1 - m) mean_r t[r, k], DINO's EMA of the
teacher logits. One invocation per column. */}}
{{define "center_update"}}
{{template "common" .}}
struct Params { R: u32, K: u32, momentum: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let k = flat_id(gid, nwg, 64u);
  if (k >= p.K) { return; }
  var s = 0.0;
  for (var r = 0u; r < p.R; r++) { s += t[r * p.K + k]; }
  c[k] = p.momentum * c[k] + (1.0 - p.momentum) * s / f32(p.R);
}
{{end}}
