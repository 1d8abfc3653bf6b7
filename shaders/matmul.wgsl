{{/*
matmul: C[b] = epilogue(op(A[b]) x op(B[b])), op = identity or transpose.
Data: TM, TN (outputs per invocation), WGX, WGY (invocations), TransA, TransB,
binding indices Bias, Scale, PreAct (0 = absent), Act ("" or "gelu"), Accumulate.
Epilogue: h = AB + bias; preact = h; y = act(h); C = (Accumulate ? C : 0) + scale * y.
*/}}
{{define "matmul"}}
{{template "common" .}}
{{template "gelu_fn" .}}
struct Params { M: u32, N: u32, K: u32, stride_a: u32, stride_b: u32, stride_c: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
{{if .Bias}}@group(0) @binding({{.Bias}}) var<storage, read> bias: array<f32>;{{end}}
{{if .Scale}}@group(0) @binding({{.Scale}}) var<storage, read> scale: array<f32>;{{end}}
{{if .PreAct}}@group(0) @binding({{.PreAct}}) var<storage, read_write> preact: array<f32>;{{end}}

const TM = {{.TM}}u;
const TN = {{.TN}}u;

fn load_a(base: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  {{if .TransA}}return a[base + k * p.M + m];{{else}}return a[base + m * p.K + k];{{end}}
}
fn load_b(base: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  {{if .TransB}}return b[base + n * p.K + k];{{else}}return b[base + k * p.N + n];{{end}}
}

@compute @workgroup_size({{.WGX}}, {{.WGY}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let batch = wid.z;
  let base_a = batch * p.stride_a;
  let base_b = batch * p.stride_b;
  let base_c = batch * p.stride_c;
  // Invocation (lid.x, lid.y) owns rows m0 + i*WGY and columns n0 + j*WGX, so
  // neighbouring invocations touch neighbouring columns.
  let m0 = wid.y * TM * {{.WGY}}u + lid.y;
  let n0 = wid.x * TN * {{.WGX}}u + lid.x;
  var acc: array<f32, {{mul .TM .TN}}>;
  for (var k = 0u; k < p.K; k++) {
    var bv: array<f32, {{.TN}}>;
    for (var j = 0u; j < TN; j++) { bv[j] = load_b(base_b, k, n0 + j * {{.WGX}}u); }
    for (var i = 0u; i < TM; i++) {
      let av = load_a(base_a, m0 + i * {{.WGY}}u, k);
      for (var j = 0u; j < TN; j++) { acc[i * TN + j] = fma(av, bv[j], acc[i * TN + j]); }
    }
  }
  for (var i = 0u; i < TM; i++) {
    let m = m0 + i * {{.WGY}}u;
    if (m >= p.M) { continue; }
    for (var j = 0u; j < TN; j++) {
      let n = n0 + j * {{.WGX}}u;
      if (n >= p.N) { continue; }
      var h = acc[i * TN + j];
      {{if .Bias}}h += bias[n];{{end}}
      let idx = base_c + m * p.N + n;
      {{if .PreAct}}preact[idx] = h;{{end}}
      var y = h;
      {{if eq .Act "gelu"}}y = gelu(h);{{end}}
      {{if .Scale}}y *= scale[n];{{end}}
      {{if .Accumulate}}c[idx] += y;{{else}}c[idx] = y;{{end}}
    }
  }
}
{{end}}
