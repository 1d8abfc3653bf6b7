{{/*
Fused multi-head self-attention (no mask), flash-attention style.

qkv is the fused qkv Linear's output [B, T, 3*D] read as vec4: q, k, v of
token t, head h start at vec4 index ((b*T + t)*3 + s)*D4 + h*DV (s = 0, 1, 2),
with D4 = D/4 and DV = Dh/4. o, do are [B, T, D]; lse, delta, attn0 [B, H, T].

Every kernel runs one invocation per row (a query, or a key in the dk/dv
pass) of one (batch, head): grid (row blocks, H, B). The invocation keeps its
Dh-long rows in registers and walks the other side's rows in blocks of BLK;
those rows are the same for every invocation of a workgroup, so their loads
are uniform (one load, broadcast to all lanes) and each fma pairs a private
value with a broadcast one. Blocks are always full (rows past T are clamped
and masked).

Rows past T are clamped, not skipped: kernels do not return early and only
guard their stores.

The loops over Dh and over a block are unrolled by the template (range over ints):
rows live in named vec4 variables rather than dynamically indexed private
arrays, which lavapipe keeps in memory.

Data: WG (invocations), DV (Dh/4), BLK (rows per block).
*/}}

{{define "attn_common"}}
struct Params { T: u32, H: u32, D4: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
// NEG stands in for -inf: exp(NEG - m) is 0 and NEG - NEG is not NaN.
const NEG = -3.0e38;
// qkv_row is the vec4 index where part s (0 q, 1 k, 2 v) of token t, head h starts.
fn qkv_row(b: u32, t: u32, s: u32, h: u32) -> u32 { return ((b * p.T + t) * 3u + s) * p.D4 + h * {{.DV}}u; }
// out_row is the vec4 index of token t, head h in an [B, T, D] tensor.
fn out_row(b: u32, t: u32, h: u32) -> u32 { return (b * p.T + t) * p.D4 + h * {{.DV}}u; }
// dot_acc returns s + a.b as a chain of scalar fmas.
fn dot_acc(a: vec4<f32>, b: vec4<f32>, s: f32) -> f32 { return fma(a.w, b.w, fma(a.z, b.z, fma(a.y, b.y, fma(a.x, b.x, s)))); }
{{end}}

{{/* attention_fwd: o = softmax(scale q k^T) v and lse = log sum exp of the
scaled scores, by an online softmax over key blocks: per block the running
max m grows, and the accumulator and the running sum l are rescaled once by
exp(m_old - m_new). */}}
{{define "attention_fwd"}}
{{template "attn_common" .}}
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wid.z;
  let h = wid.y;
  let t = wid.x * {{.WG}}u + lid.x;
  let last = p.T - 1u;
  let qr = qkv_row(b, min(t, last), 0u, h);
  {{range $d := .DV}}let q{{$d}} = qkv[qr + {{$d}}u] * p.scale;
  var a{{$d}} = vec4(0.0);
  {{end}}
  var m = NEG;
  var l = 0.0;
  for (var k0 = 0u; k0 < p.T; k0 += {{.BLK}}u) {
    {{range $j := .BLK}}let kr{{$j}} = qkv_row(b, min(k0 + {{$j}}u, last), 1u, h);
    var s{{$j}} = 0.0;
    {{end}}
    {{range $d := .DV}}{{range $j := $.BLK}}s{{$j}} = dot_acc(q{{$d}}, qkv[kr{{$j}} + {{$d}}u], s{{$j}});
    {{end}}{{end}}
    var mb = m;
    {{range $j := .BLK}}s{{$j}} = select(NEG, s{{$j}}, k0 + {{$j}}u < p.T);
    mb = max(mb, s{{$j}});
    {{end}}
    let corr = exp(m - mb);
    m = mb;
    {{range $j := .BLK}}s{{$j}} = exp(s{{$j}} - mb);
    {{end}}
    l = l * corr{{range $j := .BLK}} + s{{$j}}{{end}};
    // v of a token follows its k by D4 vec4s.
    {{range $d := .DV}}a{{$d}} *= corr;
    {{range $j := $.BLK}}a{{$d}} = fma(vec4(s{{$j}}), qkv[kr{{$j}} + p.D4 + {{$d}}u], a{{$d}});
    {{end}}{{end}}
  }
  let orow = out_row(b, t, h);
  let lrow = (b * p.H + h) * p.T + t;
  let inv = 1.0 / l;
  if (t < p.T) {
    {{range $d := .DV}}o[orow + {{$d}}u] = a{{$d}} * inv;
    {{end}}
    lse[lrow] = m + log(l);
  }
}
{{end}}

{{/* attention_probs0: attn0[b, h, j] = softmax row of query 0 (the CLS token)
= exp(scale q0.kj - lse[b, h, 0]); one invocation per key. */}}
{{define "attention_probs0"}}
{{template "attn_common" .}}
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> attn0: array<f32>;

@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wid.z;
  let h = wid.y;
  let j = wid.x * {{.WG}}u + lid.x;
  let qr = qkv_row(b, 0u, 0u, h);
  let kr = qkv_row(b, min(j, p.T - 1u), 1u, h);
  var s = 0.0;
  {{range $d := .DV}}s = dot_acc(qkv[qr + {{$d}}u], qkv[kr + {{$d}}u], s);
  {{end}}
  let row = (b * p.H + h) * p.T;
  let pr = exp(s * p.scale - lse[row]);
  if (j < p.T) { attn0[row + j] = pr; }
}
{{end}}

{{/* attention_delta: delta[b, h, t] = do . o over the head's Dh columns, the
row term of the softmax backward. One invocation per (b, h, t), t fastest. */}}
{{define "attention_delta"}}
{{template "common" .}}
{{template "attn_common" .}}
@group(0) @binding(1) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> o: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> delta: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let n = arrayLength(&delta);
  let i = flat_id(gid, nwg, 64u);
  let ic = min(i, n - 1u);
  let bh = ic / p.T;
  let r = out_row(bh / p.H, ic % p.T, bh % p.H);
  var s = 0.0;
  {{range $d := .DV}}s = dot_acc(dout[r + {{$d}}u], o[r + {{$d}}u], s);
  {{end}}
  if (i < n) { delta[i] = s; }
}
{{end}}

{{/* attention_bwd_dq: dq_i = scale sum_j ds_ij k_j with p_ij = exp(scale
q_i.k_j - lse_i) and ds_ij = p_ij (do_i.v_j - delta_i); one invocation per
query, looping over key blocks. Writes the q part of dqkv. */}}
{{define "attention_bwd_dq"}}
{{template "attn_common" .}}
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<vec4<f32>>;

@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wid.z;
  let h = wid.y;
  let t = wid.x * {{.WG}}u + lid.x;
  let last = p.T - 1u;
  let tc = min(t, last);
  let qr = qkv_row(b, tc, 0u, h);
  let gr = out_row(b, tc, h);
  {{range $d := .DV}}let q{{$d}} = qkv[qr + {{$d}}u] * p.scale;
  let g{{$d}} = dout[gr + {{$d}}u];
  var a{{$d}} = vec4(0.0);
  {{end}}
  let li = lse[(b * p.H + h) * p.T + tc];
  let di = delta[(b * p.H + h) * p.T + tc];
  for (var k0 = 0u; k0 < p.T; k0 += {{.BLK}}u) {
    {{range $j := .BLK}}let kr{{$j}} = qkv_row(b, min(k0 + {{$j}}u, last), 1u, h);
    var s{{$j}} = 0.0;
    var dp{{$j}} = 0.0;
    {{end}}
    {{range $d := .DV}}{{range $j := $.BLK}}s{{$j}} = dot_acc(q{{$d}}, qkv[kr{{$j}} + {{$d}}u], s{{$j}});
    dp{{$j}} = dot_acc(g{{$d}}, qkv[kr{{$j}} + p.D4 + {{$d}}u], dp{{$j}});
    {{end}}{{end}}
    {{range $j := .BLK}}s{{$j}} = select(0.0, exp(s{{$j}} - li) * (dp{{$j}} - di), k0 + {{$j}}u < p.T);
    {{end}}
    {{range $d := .DV}}{{range $j := $.BLK}}a{{$d}} = fma(vec4(s{{$j}}), qkv[kr{{$j}} + {{$d}}u], a{{$d}});
    {{end}}{{end}}
  }
  if (t < p.T) {
    {{range $d := .DV}}dqkv[qr + {{$d}}u] = a{{$d}} * p.scale;
    {{end}}
  }
}
{{end}}

{{/* attention_bwd_dkv: dv_j = sum_i p_ij do_i and dk_j = scale sum_i ds_ij q_i;
one invocation per key, looping over query blocks (so every output row has
one writer and no atomics are needed). Writes the k and v parts of dqkv. */}}
{{define "attention_bwd_dkv"}}
{{template "attn_common" .}}
@group(0) @binding(1) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> dqkv: array<vec4<f32>>;

@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wid.z;
  let h = wid.y;
  let t = wid.x * {{.WG}}u + lid.x;
  let last = p.T - 1u;
  let kr = qkv_row(b, min(t, last), 1u, h);
  {{range $d := .DV}}let k{{$d}} = qkv[kr + {{$d}}u] * p.scale;
  let v{{$d}} = qkv[kr + p.D4 + {{$d}}u];
  var dk{{$d}} = vec4(0.0);
  var dv{{$d}} = vec4(0.0);
  {{end}}
  let lrow = (b * p.H + h) * p.T;
  let vr = kr + p.D4;
  for (var i0 = 0u; i0 < p.T; i0 += {{.BLK}}u) {
    {{range $i := .BLK}}let ic{{$i}} = min(i0 + {{$i}}u, last);
    let qr{{$i}} = qkv_row(b, ic{{$i}}, 0u, h);
    let gr{{$i}} = out_row(b, ic{{$i}}, h);
    var s{{$i}} = 0.0;
    var dp{{$i}} = 0.0;
    {{end}}
    {{range $d := .DV}}{{range $i := $.BLK}}s{{$i}} = dot_acc(k{{$d}}, qkv[qr{{$i}} + {{$d}}u], s{{$i}});
    dp{{$i}} = dot_acc(v{{$d}}, dout[gr{{$i}} + {{$d}}u], dp{{$i}});
    {{end}}{{end}}
    {{range $i := .BLK}}s{{$i}} = select(0.0, exp(s{{$i}} - lse[lrow + ic{{$i}}]), i0 + {{$i}}u < p.T);
    dp{{$i}} = s{{$i}} * (dp{{$i}} - delta[lrow + ic{{$i}}]) * p.scale;
    {{end}}
    {{range $d := .DV}}{{range $i := $.BLK}}dv{{$d}} = fma(vec4(s{{$i}}), dout[gr{{$i}} + {{$d}}u], dv{{$d}});
    dk{{$d}} = fma(vec4(dp{{$i}}), qkv[qr{{$i}} + {{$d}}u], dk{{$d}});
    {{end}}{{end}}
  }
  if (t < p.T) {
    {{range $d := .DV}}dqkv[kr + {{$d}}u] = dk{{$d}};
    dqkv[vr + {{$d}}u] = dv{{$d}};
    {{end}}
  }
}
{{end}}
