{{/* Fused multi-head attention for short rows of heads: one workgroup per
(sequence, head) and block of WG rows, one invocation per row. The other side's
rows (keys and values forward, queries backward) are read at addresses the
whole workgroup shares, which a GPU serves from cache and a later lavapipe
loads once (gpu.Device.BroadcastLoads); no T x T matrix is stored. The
forward keeps each query row's log-sum-exp, from which the backward rebuilds
the probabilities (FlashAttention-2's two backward passes, neither needing a
sum across invocations).

Layouts, in vec4s (Dh = 4 DH4): q, k, v and dout are [B H, T, Dh]; the merged
out and the q, k, v parts of dqkv are token-major [B, T, parts, H, Dh], what
the projection and the qkv Linear read and write. lse and delta are [B H, T].
Data: DH4, WG. */}}

{{define "attention_head"}}
const DH4 = {{.DH4}}u;
const WG = {{.WG}}u;
const NEG_MAX = -3.4028234663852886e38; // -f32 max exactly: Tint (browsers) rejects literals beyond it
struct Params { T: u32, H: u32, BH: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
// The workgroup's (sequence, head): the grid is row blocks x B H, the
// latter folded into z past the device's limit on y.
fn seq_head(wid: vec3<u32>, nwg: vec3<u32>) -> u32 { return wid.y + wid.z * nwg.y; }
// A row of the workgroup's (sequence, head): its first vec4 in [B H, T, Dh].
fn head_row(bh: u32, t: u32) -> u32 { return (bh * p.T + t) * DH4; }
// The same row's first vec4 in part `part` of a token-major [B, T, parts, H, Dh].
fn token_row(bh: u32, t: u32, parts: u32, part: u32) -> u32 {
  let b = bh / p.H;
  return (((b * p.T + t) * parts + part) * p.H + bh % p.H) * DH4;
}
{{end}}

{{/* attention_forward: out = softmax(scale q k^T) v for each query row, with
its log-sum-exp lse = log sum_j exp(scale q.k_j). Keys go four at a time,
so the running maximum rescales the accumulator once per four. */}}
{{define "attention_forward"}}
{{template "attention_head" .}}
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = seq_head(wid, nwg);
  if (bh >= p.BH) { return; }
  let i = wid.x * WG + lid;
  let qb = head_row(bh, min(i, p.T - 1u)); // rows past T work on the last one and store nothing
  var qi: array<vec4<f32>, DH4>;
  for (var c = 0u; c < DH4; c++) { qi[c] = q[qb + c] * p.scale; }
  var acc: array<vec4<f32>, DH4>;
  var m = NEG_MAX;
  var s = 0.0;
  for (var j0 = 0u; j0 < p.T; j0 += 4u) {
    var kb: array<u32, 4>;
    var sc = vec4<f32>(NEG_MAX);
    for (var u = 0u; u < 4u; u++) {
      kb[u] = head_row(bh, min(j0 + u, p.T - 1u));
      if (j0 + u < p.T) {
        var d = vec4<f32>();
        for (var c = 0u; c < DH4; c++) { d = fma(qi[c], k[kb[u] + c], d); }
        sc[u] = d.x + d.y + d.z + d.w;
      }
    }
    let m2 = max(m, max(max(sc.x, sc.y), max(sc.z, sc.w)));
    let rescale = exp(m - m2);
    let e = exp(sc - m2);
    s = fma(s, rescale, e.x + e.y + e.z + e.w);
    for (var c = 0u; c < DH4; c++) {
      acc[c] = acc[c] * rescale + e.x * v[kb[0] + c] + e.y * v[kb[1] + c] + e.z * v[kb[2] + c] + e.w * v[kb[3] + c];
    }
    m = m2;
  }
  if (i < p.T) {
    let ob = token_row(bh, i, 1u, 0u);
    let inv = 1.0 / s;
    for (var c = 0u; c < DH4; c++) { out[ob + c] = acc[c] * inv; }
    lse[bh * p.T + i] = m + log(s);
  }
}
{{end}}

{{/* attention_backward_q: one invocation per query row i. With
P_ij = exp(scale q_i.k_j - lse_i), dP_ij = dout_i.v_j and
delta_i = dout_i.out_i (= sum_j P_ij dP_ij): dq_i = scale sum_j P_ij (dP_ij - delta_i) k_j.
It saves delta for attention_backward_kv. */}}
{{define "attention_backward_q"}}
{{template "attention_head" .}}
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> lse: array<f32>;
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;
@group(0) @binding(8) var<storage, read_write> dqkv: array<vec4<f32>>;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = seq_head(wid, nwg);
  if (bh >= p.BH) { return; }
  let i = wid.x * WG + lid;
  let row = min(i, p.T - 1u);
  let qb = head_row(bh, row);
  let ob = token_row(bh, row, 1u, 0u);
  var qi: array<vec4<f32>, DH4>;
  var gi: array<vec4<f32>, DH4>;
  var dl = vec4<f32>();
  for (var c = 0u; c < DH4; c++) {
    qi[c] = q[qb + c] * p.scale;
    gi[c] = dout[qb + c];
    dl = fma(gi[c], out[ob + c], dl);
  }
  let di = dl.x + dl.y + dl.z + dl.w;
  let li = lse[bh * p.T + row];
  var dq: array<vec4<f32>, DH4>;
  for (var j = 0u; j < p.T; j++) {
    let kb = head_row(bh, j);
    var sv = vec4<f32>();
    var gv = vec4<f32>();
    for (var c = 0u; c < DH4; c++) {
      sv = fma(qi[c], k[kb + c], sv);
      gv = fma(gi[c], v[kb + c], gv);
    }
    let pij = exp(sv.x + sv.y + sv.z + sv.w - li);
    let ds = pij * (gv.x + gv.y + gv.z + gv.w - di);
    for (var c = 0u; c < DH4; c++) { dq[c] = fma(vec4(ds), k[kb + c], dq[c]); }
  }
  if (i < p.T) {
    delta[bh * p.T + i] = di;
    let db = token_row(bh, i, 3u, 0u);
    for (var c = 0u; c < DH4; c++) { dqkv[db + c] = dq[c] * p.scale; }
  }
}
{{end}}

{{/* attention_backward_kv: one invocation per key row j, after
attention_backward_q has saved delta: dv_j = sum_i P_ij dout_i and
dk_j = scale sum_i P_ij (dP_ij - delta_i) q_i. */}}
{{define "attention_backward_kv"}}
{{template "attention_head" .}}
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dqkv: array<vec4<f32>>;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let bh = seq_head(wid, nwg);
  if (bh >= p.BH) { return; }
  let j = wid.x * WG + lid;
  let kb = head_row(bh, min(j, p.T - 1u));
  var kj: array<vec4<f32>, DH4>;
  var vj: array<vec4<f32>, DH4>;
  for (var c = 0u; c < DH4; c++) {
    kj[c] = k[kb + c] * p.scale;
    vj[c] = v[kb + c];
  }
  var dk: array<vec4<f32>, DH4>;
  var dv: array<vec4<f32>, DH4>;
  for (var i = 0u; i < p.T; i++) {
    let qb = head_row(bh, i);
    var sv = vec4<f32>();
    var gv = vec4<f32>();
    for (var c = 0u; c < DH4; c++) {
      sv = fma(q[qb + c], kj[c], sv);
      gv = fma(dout[qb + c], vj[c], gv);
    }
    let pij = exp(sv.x + sv.y + sv.z + sv.w - lse[bh * p.T + i]);
    let ds = pij * (gv.x + gv.y + gv.z + gv.w - delta[bh * p.T + i]);
    for (var c = 0u; c < DH4; c++) {
      dv[c] = fma(vec4(pij), dout[qb + c], dv[c]);
      dk[c] = fma(vec4(ds), q[qb + c], dk[c]);
    }
  }
  if (j < p.T) {
    let kd = token_row(bh, j, 3u, 1u);
    let vd = token_row(bh, j, 3u, 2u);
    for (var c = 0u; c < DH4; c++) {
      dqkv[kd + c] = dk[c] * p.scale;
      dqkv[vd + c] = dv[c];
    }
  }
}
{{end}}
