{{/* Normalisations along the last axis: LayerNorm, softmax, L2. Every kernel
here gives a workgroup the rows first..last (p.rpw rows per workgroup, one at a
time, WG lanes striding the row) and reduces with row_reduce from reduce.wgsl. */}}

{{/* layernorm: y = (x - mean) * rstd * gamma + beta per row of D, saving mean
and rstd = 1/sqrt(var + eps) for the backward. The row stays in registers
(K = ceil(D/WG) values per lane) so the variance is an exact second pass.
Data: WG, K. */}}
{{define "layernorm"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;
const K = {{.K}}u;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = f32(p.D);
  let first = wid.x * p.rpw;
  let last = min(first + p.rpw, p.rows);
  for (var row = first; row < last; row++) {
    let base = row * p.D;
    var v: array<f32, {{.K}}>;
    var s = 0.0;
    for (var k = 0u; k < K; k++) {
      let c = lid + k * WG;
      if (c < p.D) { v[k] = x[base + c]; s += v[k]; }
    }
    let mu = row_reduce(vec2(s, 0.0), lid).x / n;
    var q = 0.0;
    for (var k = 0u; k < K; k++) {
      if (lid + k * WG < p.D) { let d = v[k] - mu; q = fma(d, d, q); }
    }
    let r = inverseSqrt(row_reduce(vec2(q, 0.0), lid).x / n + p.eps);
    for (var k = 0u; k < K; k++) {
      let c = lid + k * WG;
      if (c < p.D) { y[base + c] = fma((v[k] - mu) * r, gamma[c], beta[c]); }
    }
    if (lid == 0u) { mean[row] = mu; rstd[row] = r; }
  }
}
{{end}}

{{/* layernorm_backward: with xh = (x - mean) * rstd and g = dy * gamma,
dx (+)= rstd * (g - mean(g) - xh * mean(g * xh)). Each workgroup also sums
dy * xh and dy over its own rows per column (in registers) and writes them to
row wid.x of part[0] (dgamma) and part[1] (dbeta), laid out [2, PARTS, D];
sum_rows adds the rows of partials afterwards. Data: WG, K, Accumulate. */}}
{{define "layernorm_backward"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32, parts: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> part: array<f32>;
const K = {{.K}}u;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = f32(p.D);
  let first = wid.x * p.rpw;
  let last = min(first + p.rpw, p.rows);
  var dgamma: array<f32, {{.K}}>;
  var dbeta: array<f32, {{.K}}>;
  for (var row = first; row < last; row++) {
    let base = row * p.D;
    let mu = mean[row];
    let r = rstd[row];
    var xh: array<f32, {{.K}}>;
    var g: array<f32, {{.K}}>;
    var s = vec2(0.0);
    for (var k = 0u; k < K; k++) {
      let c = lid + k * WG;
      if (c < p.D) {
        let d = dy[base + c];
        xh[k] = (x[base + c] - mu) * r;
        g[k] = d * gamma[c];
        s += vec2(g[k], g[k] * xh[k]);
        dgamma[k] = fma(d, xh[k], dgamma[k]);
        dbeta[k] += d;
      }
    }
    let m = row_reduce(s, lid) / n;
    for (var k = 0u; k < K; k++) {
      let c = lid + k * WG;
      if (c < p.D) {
        let v = r * (g[k] - m.x - xh[k] * m.y);
        {{if .Accumulate}}dx[base + c] += v;{{else}}dx[base + c] = v;{{end}}
      }
    }
  }
  for (var k = 0u; k < K; k++) {
    let c = lid + k * WG;
    if (c < p.D) {
      part[wid.x * p.D + c] = dgamma[k];
      part[(p.parts + wid.x) * p.D + c] = dbeta[k];
    }
  }
}
{{end}}

{{/* softmax: y = softmax(x * inv_t) per row of D. One read pass keeps a
running (max, sum of exp(v - max)) per lane, row_reduce merges the pairs, a
second pass writes. Rows of any length (65536 prototypes) stream from memory.
Data: WG. */}}
{{define "softmax"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32, inv_t: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// (m, s) represents s * exp(m); a lane that saw nothing holds (-FLT_MAX, 0).
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}
@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = wid.x * p.rpw;
  let last = min(first + p.rpw, p.rows);
  for (var row = first; row < last; row++) {
    let base = row * p.D;
    var m = -3.4028235e38;
    var s = 0.0;
    for (var c = lid; c < p.D; c += WG) {
      let v = x[base + c] * p.inv_t;
      if (v > m) { s = fma(s, exp(m - v), 1.0); m = v; } else { s += exp(v - m); }
    }
    let t = row_reduce(vec2(m, s), lid);
    let inv = 1.0 / t.y;
    for (var c = lid; c < p.D; c += WG) { y[base + c] = exp(x[base + c] * p.inv_t - t.x) * inv; }
  }
}
{{end}}

{{/* softmax_backward: dx = y * (dy - sum(dy * y)) * inv_t per row. Data: WG. */}}
{{define "softmax_backward"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32, inv_t: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = wid.x * p.rpw;
  let last = min(first + p.rpw, p.rows);
  for (var row = first; row < last; row++) {
    let base = row * p.D;
    var a = 0.0;
    for (var c = lid; c < p.D; c += WG) { a = fma(dy[base + c], y[base + c], a); }
    let d = row_reduce(vec2(a, 0.0), lid).x;
    for (var c = lid; c < p.D; c += WG) { dx[base + c] = y[base + c] * (dy[base + c] - d) * p.inv_t; }
  }
}
{{end}}

{{/* l2_normalize: y = x / max(|x|, eps) per row, saving norm = |x|. Data: WG. */}}
{{define "l2_normalize"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = wid.x * p.rpw;
  let last = min(first + p.rpw, p.rows);
  for (var row = first; row < last; row++) {
    let base = row * p.D;
    var a = 0.0;
    for (var c = lid; c < p.D; c += WG) { let v = x[base + c]; a = fma(v, v, a); }
    let n = sqrt(row_reduce(vec2(a, 0.0), lid).x);
    let inv = 1.0 / max(n, p.eps);
    for (var c = lid; c < p.D; c += WG) { y[base + c] = x[base + c] * inv; }
    if (lid == 0u) { norm[row] = n; }
  }
}
{{end}}

{{/* l2_normalize_backward: with n = max(norm, eps), dx (+)= (dy - y * sum(dy * y)) / n
where norm > eps, dy / eps where the clamp was active. Data: WG, Accumulate. */}}
{{define "l2_normalize_backward"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = wid.x * p.rpw;
  let last = min(first + p.rpw, p.rows);
  for (var row = first; row < last; row++) {
    let base = row * p.D;
    var a = 0.0;
    for (var c = lid; c < p.D; c += WG) { a = fma(dy[base + c], y[base + c], a); }
    let nr = norm[row];
    // Past the clamp y no longer depends on the direction of x.
    let d = select(0.0, row_reduce(vec2(a, 0.0), lid).x, nr > p.eps);
    let inv = 1.0 / max(nr, p.eps);
    for (var c = lid; c < p.D; c += WG) {
      let v = (dy[base + c] - y[base + c] * d) * inv;
      {{if .Accumulate}}dx[base + c] += v;{{else}}dx[base + c] = v;{{end}}
    }
  }
}
{{end}}
