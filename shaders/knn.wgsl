{{/* Nearest-neighbour search. */}}

{{/* topk: for each row of scores [R, N], the K largest values and their
column indices, sorted descending. Each of WG invocations keeps the top K of
a strided slice in registers (insertion into a sorted list); then one
invocation merges the WG sorted lists held in workgroup memory. Data: K, WG. */}}
{{define "topk"}}
struct Params { R: u32, N: u32, index_base: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> top_value: array<f32>;
@group(0) @binding(3) var<storage, read_write> top_index: array<u32>;

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
  let base = row * p.N;
  for (var n = lid.x; n < p.N; n += WG) {
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
    let out = row * K + j;
    let i = cand_index[best * K + head[best]];
    top_value[out] = best_value;
    top_index[out] = select(i + p.index_base, 0xffffffffu, i == 0xffffffffu);
    head[best]++;
  }
}
{{end}}
