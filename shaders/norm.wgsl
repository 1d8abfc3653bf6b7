{{/* Normalisations along the last axis: LayerNorm, softmax, L2. A row kernel
gives workgroup wid.x the rows first..last (p.rpw of them), WG/LANES rows at a
time with LANES lanes striding each row, and reduces a row with row_reduce
from reduce.wgsl. */}}

{{/* vec_t: rows are read as T = vec4<f32> when D is a multiple of 4 (a
quarter of the loads and bounds checks), else as f32; W is the width and
hsum(v) the sum of a T's components. Data: Vec4. */}}
{{define "vec_t"}}
{{if .Vec4}}alias T = vec4<f32>;
const W = 4u;
fn hsum(v: T) -> f32 { return v.x + v.y + v.z + v.w; }
{{else}}alias T = f32;
const W = 1u;
fn hsum(v: T) -> f32 { return v; }
{{end}}
{{end}}

{{/* layernorm: y = (x - mean) * rstd * gamma + beta per row of D, saving mean
and rstd = 1/sqrt(var + eps) for the backward. The variance is an exact second
pass over the row, which the first pass left in cache. Data: WG, Lanes, Vec4. */}}
{{define "layernorm"}}
{{template "row_reduce" .}}
{{template "vec_t" .}}
struct Params { rows: u32, D: u32, rpw: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> gamma: array<T>;
@group(0) @binding(3) var<storage, read> beta: array<T>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
fn row_len() -> u32 { return p.D / W; }
{{template "row_loop" .}}
    let inv_d = 1.0 / f32(p.D);
    var s = T();
    for (var c = lane; c < n; c += LANES) { s += x[base + c]; }
    let mu = row_reduce(vec2(hsum(s), 0.0), lid).x * inv_d;
    var q = T();
    for (var c = lane; c < n; c += LANES) { let d = x[base + c] - mu; q = fma(d, d, q); }
    let r = inverseSqrt(row_reduce(vec2(hsum(q), 0.0), lid).x * inv_d + p.eps);
    for (var c = lane; c < n; c += LANES) { y[base + c] = fma((x[base + c] - mu) * r, gamma[c], beta[c]); }
    if (lane == 0u && n > 0u) { mean[row] = mu; rstd[row] = r; }
  }
}
{{end}}

{{/* layernorm_backward: with xh = (x - mean) * rstd and g = dy * gamma,
dx (+)= rstd * (g - mean(g) - xh * mean(g * xh)). The parameter gradients are
layernorm_param_grads' job. Data: WG, Lanes, Vec4, Accumulate. */}}
{{define "layernorm_backward"}}
{{template "row_reduce" .}}
{{template "vec_t" .}}
struct Params { rows: u32, D: u32, rpw: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read> gamma: array<T>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<T>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
fn row_len() -> u32 { return p.D / W; }
{{template "row_loop" .}}
    let inv_d = 1.0 / f32(p.D);
    let mu = mean[row];
    let r = rstd[row];
    var sg = T();
    var sgx = T();
    for (var c = lane; c < n; c += LANES) {
      let g = dy[base + c] * gamma[c];
      sg += g;
      sgx = fma(g, (x[base + c] - mu) * r, sgx);
    }
    let m = row_reduce(vec2(hsum(sg), hsum(sgx)), lid) * inv_d;
    for (var c = lane; c < n; c += LANES) {
      let v = r * (dy[base + c] * gamma[c] - m.x - (x[base + c] - mu) * r * m.y);
      {{if .Accumulate}}dx[base + c] += v;{{else}}dx[base + c] = v;{{end}}
    }
  }
}
{{end}}

{{/* layernorm_param_grads: per-chunk column sums of dy * xh (dgamma) and dy
(dbeta) over the rows first..last of workgroup row wid.y, into row wid.y of
part[0] and part[1] (part is [2, PARTS, D]); sum_rows adds the chunks up.
Invocations own columns, so every row is read contiguously, and take two
rows an iteration, as layerscale_backward. Data: WG, Vec4. */}}
{{define "layernorm_param_grads"}}
{{template "vec_t" .}}
struct Params { rows: u32, D: u32, rpw: u32, parts: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> rstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> part: array<T>;
@compute @workgroup_size({{.WG}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let n = p.D / W;
  let c = gid.x;
  if (c >= n) { return; }
  let first = wid.y * p.rpw;
  let last = min(first + p.rpw, p.rows);
  var dg0 = T();
  var dg1 = T();
  var db0 = T();
  var db1 = T();
  var row = first;
  for (; row + 1u < last; row += 2u) {
    let d0 = dy[row * n + c];
    let d1 = dy[(row + 1u) * n + c];
    dg0 = fma(d0, (x[row * n + c] - mean[row]) * rstd[row], dg0);
    dg1 = fma(d1, (x[(row + 1u) * n + c] - mean[row + 1u]) * rstd[row + 1u], dg1);
    db0 += d0;
    db1 += d1;
  }
  if (row < last) {
    let d = dy[row * n + c];
    dg0 = fma(d, (x[row * n + c] - mean[row]) * rstd[row], dg0);
    db0 += d;
  }
  part[wid.y * n + c] = dg0 + dg1;
  part[(p.parts + wid.y) * n + c] = db0 + db1;
}
{{end}}

{{/* softmax: y = softmax(x * inv_t) per row of D (inv_t > 0). One read pass
keeps a running (max of x, sum of exp((x - max) inv_t)) per lane and
component, row_reduce merges the pairs, a second pass writes. The max is
taken of x, not of x inv_t: (x - max) is exact near the max, so the largest
term is exactly 1 and no rounding of x inv_t (which a GPU compiler may fuse
into an FMA in one pass and not the other) moves a weight above 1. Rows of
any length (65536 prototypes) stream from memory. Data: WG, Lanes, Vec4. */}}
{{define "softmax"}}
{{template "row_reduce" .}}
{{template "vec_t" .}}
struct Params { rows: u32, D: u32, rpw: u32, inv_t: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
// (m, s) stands for s * exp(m inv_t); a lane that saw nothing holds (-FLT_MAX, 0).
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2(m, a.y * exp((a.x - m) * p.inv_t) + b.y * exp((b.x - m) * p.inv_t));
}
fn row_len() -> u32 { return p.D / W; }
{{template "row_loop" .}}
    var m = T(-3.4028234663852886e38); // -f32 max exactly: Tint (browsers) rejects literals beyond it
    var s = T();
    for (var c = lane; c < n; c += LANES) {
      let v = x[base + c];
      let m2 = max(m, v);
      s = s * exp((m - m2) * p.inv_t) + exp((v - m2) * p.inv_t);
      m = m2;
    }
    {{if .Vec4}}
    let t4 = combine(combine(vec2(m.x, s.x), vec2(m.y, s.y)), combine(vec2(m.z, s.z), vec2(m.w, s.w)));
    let t = row_reduce(t4, lid);
    {{else}}
    let t = row_reduce(vec2(m, s), lid);
    {{end}}
    let inv = 1.0 / t.y;
    for (var c = lane; c < n; c += LANES) { y[base + c] = exp((x[base + c] - t.x) * p.inv_t) * inv; }
  }
}
{{end}}

{{/* softmax_backward: dx = y * (dy - sum(dy * y)) * inv_t per row.
Data: WG, Lanes, Vec4. */}}
{{define "softmax_backward"}}
{{template "row_reduce" .}}
{{template "vec_t" .}}
struct Params { rows: u32, D: u32, rpw: u32, inv_t: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> y: array<T>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
fn row_len() -> u32 { return p.D / W; }
{{template "row_loop" .}}
    var a = T();
    for (var c = lane; c < n; c += LANES) { a = fma(dy[base + c], y[base + c], a); }
    let d = row_reduce(vec2(hsum(a), 0.0), lid).x;
    for (var c = lane; c < n; c += LANES) { dx[base + c] = y[base + c] * (dy[base + c] - d) * p.inv_t; }
  }
}
{{end}}

{{/* l2_normalize: y = x / max(|x|, eps) per row, saving norm = |x|.
Data: WG, Lanes. */}}
{{define "l2_normalize"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
fn row_len() -> u32 { return p.D; }
{{template "row_loop" .}}
    var a = 0.0;
    for (var c = lane; c < n; c += LANES) { let v = x[base + c]; a = fma(v, v, a); }
    let nr = sqrt(row_reduce(vec2(a, 0.0), lid).x);
    let inv = 1.0 / max(nr, p.eps);
    for (var c = lane; c < n; c += LANES) { y[base + c] = x[base + c] * inv; }
    if (lane == 0u && n > 0u) { norm[row] = nr; }
  }
}
{{end}}

{{/* l2_normalize_backward: with n = max(norm, eps), dx (+)= (dy - y * sum(dy * y)) / n
where norm > eps, dy / eps where the clamp was active. Data: WG, Lanes, Accumulate. */}}
{{define "l2_normalize_backward"}}
{{template "row_reduce" .}}
struct Params { rows: u32, D: u32, rpw: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> { return a + b; }
fn row_len() -> u32 { return p.D; }
{{template "row_loop" .}}
    var a = 0.0;
    for (var c = lane; c < n; c += LANES) { a = fma(dy[base + c], y[base + c], a); }
    let nr = norm[row];
    // Inside the clamp y no longer depends on the direction of x.
    let d = select(0.0, row_reduce(vec2(a, 0.0), lid).x, nr > p.eps);
    let inv = 1.0 / max(nr, p.eps);
    for (var c = lane; c < n; c += LANES) {
      let v = (dy[base + c] - y[base + c] * d) * inv;
      {{if .Accumulate}}dx[base + c] += v;{{else}}dx[base + c] = v;{{end}}
    }
  }
}
{{end}}
