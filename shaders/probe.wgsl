{{/* Linear probe kernels (eval/linear.go). G classifiers, one per learning
rate of the grid, are stacked side by side: logits [B, G*C] read as B*G rows
of C classes, weights [D, G*C] and bias [G*C] with classifier g owning
columns g*C .. g*C+C-1. */}}

{{/* probe_xent: cross-entropy of every (sample b, classifier g) row against
the integer label y[b], and its logit gradient for the batch-mean loss:
  loss[r] = logsumexp(z_r) - z_r[y],  dz[r, c] = (softmax(z_r)_c - [c == y]) / B.
One invocation per row: rows are a handful
to a thousand classes, where nn's workgroup-per-row loss kernels would spend
their time in barriers (one-hot targets would also cost G*C floats a sample). */}}
{{define "probe_xent"}}
{{template "common" .}}
struct Params { rows: u32, G: u32, C: u32, inv_b: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<u32>;
@group(0) @binding(3) var<storage, read_write> dz: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = flat_id(gid, nwg, 64u);
  if (r >= p.rows) { return; }
  let base = r * p.C;
  let label = y[r / p.G];
  var m = z[base];
  for (var c = 1u; c < p.C; c++) { m = max(m, z[base + c]); }
  var s = 0.0;
  for (var c = 0u; c < p.C; c++) { s += exp(z[base + c] - m); }
  let lse = m + log(s);
  loss[r] = lse - z[base + label];
  for (var c = 0u; c < p.C; c++) {
    dz[base + c] = (exp(z[base + c] - lse) - select(0.0, 1.0, c == label)) * p.inv_b;
  }
}
{{end}}

{{/* probe_sgd: torch.optim.SGD with momentum and no dampening, each
classifier at its own learning rate lr[g] times the schedule factor:
  buf = momentum buf + grad + wd param;  param -= scale lr[g] buf.
The element's classifier is g = (i mod G*C) / C, for weights and bias alike. */}}
{{define "probe_sgd"}}
{{template "common" .}}
struct Params { n: u32, GC: u32, C: u32, momentum: f32, wd: f32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lr: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> buf: array<f32>;
@group(0) @binding(4) var<storage, read_write> param: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.n) { return; }
  let b = p.momentum * buf[i] + grad[i] + p.wd * param[i];
  buf[i] = b;
  param[i] -= p.scale * lr[(i % p.GC) / p.C] * b;
}
{{end}}

{{/* probe_argmax: pred[r] = the first index of the largest of the C logits
of row r, so evaluation reads back one word per (sample, classifier) rather
than C. */}}
{{define "probe_argmax"}}
{{template "common" .}}
struct Params { rows: u32, C: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> pred: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = flat_id(gid, nwg, 64u);
  if (r >= p.rows) { return; }
  let base = r * p.C;
  var best = 0u;
  for (var c = 1u; c < p.C; c++) {
    if (z[base + c] > z[base + best]) { best = c; }
  }
  pred[r] = best;
}
{{end}}
