{{/* Elementwise ops: activations and the residual building blocks. Each
kernel defines elt(i) for element i; elt_main runs it over all p.n elements
with a grid-stride loop, so a capped number of workgroups covers any size
(lavapipe pays per workgroup). An InPlace kernel binds its output once,
read_write, in place of the input it overwrites. */}}

{{define "elt_main"}}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var i = gid.x; i < p.n; i += nwg.x * 256u) { elt(i); }
}
{{end}}

{{/* gelu: y = gelu(x). Data: InPlace. */}}
{{define "gelu"}}
{{template "gelu_fn" .}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
{{if not .InPlace}}@group(0) @binding(2) var<storage, read> x: array<f32>;{{end}}
fn elt(i: u32) {
  {{if .InPlace}}y[i] = gelu(y[i]);{{else}}y[i] = gelu(x[i]);{{end}}
}
{{template "elt_main" .}}
{{end}}

{{/* gelu_backward: dx = dy * gelu'(h). Data: InPlace (dx is dy). */}}
{{define "gelu_backward"}}
{{template "gelu_fn" .}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
{{if not .InPlace}}@group(0) @binding(3) var<storage, read> dy: array<f32>;{{end}}
fn elt(i: u32) {
  {{if .InPlace}}dx[i] *= gelu_grad(h[i]);{{else}}dx[i] = dy[i] * gelu_grad(h[i]);{{end}}
}
{{template "elt_main" .}}
{{end}}

{{define "silu_fn"}}
fn sigmoid(a: f32) -> f32 { return 1.0 / (1.0 + exp(-a)); }
{{end}}

{{/* swiglu: y[r, j] = silu(x[r, j]) * x[r, H + j] for rows of 2H inputs and
H outputs; silu(a) = a * sigmoid(a). */}}
{{define "swiglu"}}
{{template "silu_fn" .}}
struct Params { n: u32, H: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
fn elt(i: u32) {
  let j = (i / p.H) * 2u * p.H + i % p.H;
  let a = x[j];
  y[i] = a * sigmoid(a) * x[j + p.H];
}
{{template "elt_main" .}}
{{end}}

{{/* swiglu_backward: dx[r, j] = dy * x2 * silu'(x1), dx[r, H + j] = dy * silu(x1)
with silu'(a) = s (1 + a (1 - s)), s = sigmoid(a). */}}
{{define "swiglu_backward"}}
{{template "silu_fn" .}}
struct Params { n: u32, H: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
fn elt(i: u32) {
  let j = (i / p.H) * 2u * p.H + i % p.H;
  let a = x[j];
  let s = sigmoid(a);
  let d = dy[i];
  dx[j] = d * x[j + p.H] * s * (1.0 + a * (1.0 - s));
  dx[j + p.H] = d * a * s;
}
{{template "elt_main" .}}
{{end}}

{{/* scale: y = a * x, or with Rows y[r, :] = a * s[r] * x[r, :] over rows
of D (stochastic depth's per-sample factors). Data: InPlace, Rows. */}}
{{define "scale"}}
struct Params { n: u32, a: f32, D: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
{{if not .InPlace}}@group(0) @binding(2) var<storage, read> x: array<f32>;{{end}}
{{if .Rows}}@group(0) @binding({{if .InPlace}}2{{else}}3{{end}}) var<storage, read> s: array<f32>;{{end}}
fn elt(i: u32) {
  var f = p.a;
  {{if .Rows}}f *= s[i / p.D];{{end}}
  {{if .InPlace}}y[i] *= f;{{else}}y[i] = f * x[i];{{end}}
}
{{template "elt_main" .}}
{{end}}

{{/* add: y = x + h, or with Gamma the LayerScale residual y = x + gamma[c] * h
over rows of D channels. Data: InPlace (y is x), Gamma. */}}
{{define "add"}}
struct Params { n: u32, D: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
{{if .Gamma}}@group(0) @binding(3) var<storage, read> gamma: array<f32>;{{end}}
{{if not .InPlace}}@group(0) @binding({{if .Gamma}}4{{else}}3{{end}}) var<storage, read> x: array<f32>;{{end}}
fn elt(i: u32) {
  {{if .Gamma}}let v = gamma[i % p.D] * h[i];{{else}}let v = h[i];{{end}}
  {{if .InPlace}}y[i] += v;{{else}}y[i] = x[i] + v;{{end}}
}
{{template "elt_main" .}}
{{end}}

{{/* layerscale_backward: dh = gamma * dy, and per-chunk column sums of dy * h
over the rows first..last of workgroup row wid.y into row wid.y of part
[PARTS, D] (sum_rows finishes dgamma). Invocations own columns, so each row
is read contiguously, and take two rows an iteration (on lavapipe the loop's
overhead, not memory, bounds this kernel). Data: WG, Vec4, InPlace. */}}
{{define "layerscale_backward"}}
{{template "vec_t" .}}
struct Params { rows: u32, D: u32, rpw: u32 }
@group(0) @binding(0) var<uniform> p: Params;
// InPlace: dh is dy (each element is read before it is written, by the
// same invocation).
@group(0) @binding(1) var<storage, {{if .InPlace}}read_write{{else}}read{{end}}> dy: array<T>;
@group(0) @binding(2) var<storage, read> h: array<T>;
@group(0) @binding(3) var<storage, read> gamma: array<T>;
{{if not .InPlace}}@group(0) @binding(4) var<storage, read_write> dh: array<T>;{{end}}
@group(0) @binding({{if .InPlace}}4{{else}}5{{end}}) var<storage, read_write> part: array<T>;
@compute @workgroup_size({{.WG}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let n = p.D / W;
  let c = gid.x;
  if (c >= n) { return; }
  let first = wid.y * p.rpw;
  let last = min(first + p.rpw, p.rows);
  let g = gamma[c];
  var a0 = T();
  var a1 = T();
  var i = first * n + c;
  let end2 = (first + (last - first) / 2u * 2u) * n + c;
  for (; i < end2; i += 2u * n) {
    let d0 = dy[i];
    let d1 = dy[i + n];
    {{if .InPlace}}dy{{else}}dh{{end}}[i] = g * d0;
    {{if .InPlace}}dy{{else}}dh{{end}}[i + n] = g * d1;
    a0 = fma(d0, h[i], a0);
    a1 = fma(d1, h[i + n], a1);
  }
  if (i < last * n + c) {
    let d = dy[i];
    {{if .InPlace}}dy{{else}}dh{{end}}[i] = g * d;
    a0 = fma(d, h[i], a0);
  }
  part[wid.y * n + c] = a0 + a1;
}
{{end}}
