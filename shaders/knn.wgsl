{{/* Nearest-neighbour search. */}}

{{/* topk: for each row of scores [R, N], the K largest values and their
column indices, sorted descending. Each of WG invocations keeps the top K of
a strided slice in registers (insertion into a sorted list); then one
invocation merges the WG sorted lists held in workgroup memory. Data: K, WG,
Table: rows of their own lengths instead, row r of rows giving the offset of
its scores, their number and where its K results go. */}}
{{define "topk"}}
struct Params { R: u32, N: u32, index_base: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> top_value: array<f32>;
@group(0) @binding(3) var<storage, read_write> top_index: array<u32>;
{{if .Table}}@group(0) @binding(4) var<storage, read> rows: array<vec4<u32>>;{{end}}

const K = {{.K}}u;
const WG = {{.WG}}u;
var<workgroup> cand_value: array<f32, {{mul .K .WG}}>;
var<workgroup> cand_index: array<u32, {{mul .K .WG}}>;

@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.x + wid.y * 65535u;
  if (row >= p.R) { return; }
  var val: array<f32, {{.K}}>;
  var idx: array<u32, {{.K}}>;
  for (var j = 0u; j < K; j++) { val[j] = -3.4e38; idx[j] = 0xffffffffu; }
  {{if .Table}}let base = rows[row].x;
  let N = rows[row].y;
  let first_out = rows[row].z;
  {{else}}let base = row * p.N;
  let N = p.N;
  let first_out = row * K;
  {{end}}for (var n = lid.x; n < N; n += WG) {
    let s = scores[base + n];
    if (s <= val[K - 1u]) { continue; }
    var j = K - 1u;
    while (j > 0u && val[j - 1u] < s) {
      val[j] = val[j - 1u];
      idx[j] = idx[j - 1u];
      j--;
    }
    val[j] = s;
    idx[j] = n;
  }
  for (var j = 0u; j < K; j++) {
    cand_value[lid.x * K + j] = val[j];
    cand_index[lid.x * K + j] = idx[j];
  }
  workgroupBarrier();
  if (lid.x != 0u) { return; }
  // Merge the WG sorted lists: repeatedly take the best head.
  var head: array<u32, {{.WG}}>;
  for (var j = 0u; j < K; j++) {
    var best = 0u;
    var best_value = -3.4e38;
    var found = false;
    for (var w = 0u; w < WG; w++) {
      if (head[w] < K) {
        let v = cand_value[w * K + head[w]];
        if (!found || v > best_value) { best = w; best_value = v; found = true; }
      }
    }
    let out = first_out + j;
    let i = cand_index[best * K + head[best]];
    top_value[out] = best_value;
    top_index[out] = select(i + p.index_base, 0xffffffffu, i == 0xffffffffu);
    head[best]++;
  }
}
{{end}}

{{/* ivf_scores: the similarities of gathered queries with rows of inverted
lists, for many lists in one dispatch. Each workgroup takes one tile of the
tiles table (two vec4 each: first query row, queries (<= TQ), first list row,
rows (<= WG RPL); first score, the scores' row stride), and each invocation
RPL rows of the tile, WG apart, against every query: scores[s0 + t stride +
r] = q[q0 + t] . x[r0 + r]. Each row loaded serves TQ queries and each query
RPL rows. Data: TQ, RPL, WG, Vec (rows of D4 vec4s, else of D4 floats), Int8
(with Vec: rows of D4 words of four 8-bit codes, read as code/127). */}}
{{define "ivf_scores"}}
struct Params { tiles: u32, D4: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{if .Vec}}vec4<f32>{{else}}f32{{end}}>;
@group(0) @binding(2) var<storage, read> x: array<{{if .Int8}}u32{{else if .Vec}}vec4<f32>{{else}}f32{{end}}>;
@group(0) @binding(3) var<storage, read> tiles: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;

const TQ = {{.TQ}}u;
const RPL = {{.RPL}}u;
const WG = {{.WG}}u;

@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tile = wid.x + wid.y * 65535u;
  if (tile >= p.tiles) { return; }
  let a = tiles[2u * tile];
  let b = tiles[2u * tile + 1u];
  if (lid.x >= a.w) { return; }
  // Rows and queries past the tile's repeat its last ones, and are not written.
  var xrow: array<u32, {{.RPL}}>;
  for (var j = 0u; j < RPL; j++) { xrow[j] = (a.z + min(lid.x + j * WG, a.w - 1u)) * p.D4; }
  var qrow: array<u32, {{.TQ}}>;
  for (var t = 0u; t < TQ; t++) { qrow[t] = (a.x + min(t, a.y - 1u)) * p.D4; }
  var acc: array<f32, {{mul .TQ .RPL}}>;
  for (var i = 0u; i < TQ * RPL; i++) { acc[i] = 0.0; }
  var xv: array<{{if .Vec}}vec4<f32>{{else}}f32{{end}}, {{.RPL}}>;
  for (var k = 0u; k < p.D4; k++) {
    for (var j = 0u; j < RPL; j++) { xv[j] = {{if .Int8}}unpack4x8snorm(x[xrow[j] + k]){{else}}x[xrow[j] + k]{{end}}; }
    for (var t = 0u; t < TQ; t++) {
      let qv = q[qrow[t] + k];
      for (var j = 0u; j < RPL; j++) {
        {{if .Vec}}acc[t * RPL + j] += dot(xv[j], qv);{{else}}acc[t * RPL + j] += xv[j] * qv;{{end}}
      }
    }
  }
  for (var t = 0u; t < a.y; t++) {
    for (var j = 0u; j < RPL; j++) {
      let r = lid.x + j * WG;
      if (r < a.w) { scores[b.x + t * b.y + r] = acc[t * RPL + j]; }
    }
  }
}
{{end}}
