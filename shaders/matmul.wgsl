{{/*
matmul: C[b] = epilogue(op(A[b]) x op(B[b])), op = identity or transpose.
Four kernels share the epilogue: on a GPU, matmul_tiled (workgroup-memory
tiles, any shape); on a CPU (lavapipe), matmul_bcast (fastest there: A
through a uniform window), matmul_vec4 (needs the vec4 alignment described
there) and matmul (any shape).
Epilogue: h = AB + bias; preact = h; y = act(h) gelu'(gelu_at); C = (Accumulate ? C : 0) + rowscale[row] * scale * y,
with C row-major or, with Heads, in an attention layout (c_index).
*/}}

{{define "matmul_bindings"}}
{{template "gelu_fn" .}}
// batch0, row_lo, row_hi, tiles and a_off place a matmul_bcast window (see there).
// k_split and splits shape a split-K product (matmul_tiled with Split, matmul_split_sum).
struct Params { M: u32, N: u32, K: u32, stride_a: u32, stride_b: u32, stride_c: u32, batch0: u32, row_lo: u32, row_hi: u32, tiles: u32, a_off: u32, k_split: u32, splits: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
{{if .Bias}}@group(0) @binding({{.Bias}}) var<storage, read> bias: array<f32>;{{end}}
{{if .Scale}}@group(0) @binding({{.Scale}}) var<storage, read> scale: array<f32>;{{end}}
{{if .PreAct}}@group(0) @binding({{.PreAct}}) var<storage, read_write> preact: array<f32>;{{end}}
{{if .RowScale}}@group(0) @binding({{.RowScale}}) var<storage, read> rowscale: array<f32>;{{end}}
{{if .GELUGradAt}}@group(0) @binding({{.GELUGradAt}}) var<storage, read> gelu_at: array<f32>;{{end}}

// c_index is where element (batch, m, n) of the product goes in c: row-major
// [batch, M, N], or one of multi-head attention's layouts (nn.HeadsLayout).
fn c_index(batch: u32, m: u32, n: u32) -> u32 {
  {{if not .Heads.On}}return batch * p.stride_c + m * p.N + n;
  {{else if .Heads.Merge}}// batch = b H + h, m = t, n = d -> c[b, t, Col + h Dh + d], rows Row wide.
  let b = batch / {{.Heads.H}}u;
  let head = batch % {{.Heads.H}}u;
  return (b * p.M + m) * {{.Heads.Row}}u + {{.Heads.Col}}u + head * {{.Heads.Dh}}u + n;
  {{else}}// m = b T + t, n = part D + h Dh + d -> part [b, h, t, d]; parts start
  // every M D floats rounded up to 64 (256 bytes), so that each is a view.
  let D = {{mul .Heads.H .Heads.Dh}}u;
  let b = m / {{.Heads.T}}u;
  let t = m % {{.Heads.T}}u;
  let part = n / D;
  let head = n % D / {{.Heads.Dh}}u;
  let d = n % {{.Heads.Dh}}u;
  return part * ((p.M * D + 63u) & ~63u) + ((b * {{.Heads.H}}u + head) * {{.Heads.T}}u + t) * {{.Heads.Dh}}u + d;
  {{end}}
}

// store_c applies the epilogue to the product h of row m, column n of batch.
fn store_c(batch: u32, m: u32, n: u32, acc: f32) {
  if (m >= p.M || n >= p.N) { return; }
  var h = acc;
  {{if .Bias}}h += bias[n];{{end}}
  let idx = c_index(batch, m, n);
  {{if .PreAct}}preact[idx] = h;{{end}}
  var y = h;
  {{if eq .Act "gelu"}}y = gelu(h);{{end}}
  {{if .GELUGradAt}}y *= gelu_grad(gelu_at[idx]);{{end}}
  {{if .Scale}}y *= scale[n];{{end}}
  {{if .RowScale}}y *= rowscale[batch * p.M + m];{{end}}
  {{if .Accumulate}}c[idx] += y;{{else}}c[idx] = y;{{end}}
}
{{end}}

{{/*
matmul_vec4 is shaped by how lavapipe runs compute shaders: the invocations
of a workgroup are SIMD lanes of one CPU thread, and (in Mesa 25.0's JIT code)
every storage load inside a loop is done lane by lane with a bounds check per
component, whether its address is uniform or not, so a loaded vec4 costs about
30 instructions per lane and an FMA two. So the kernel minimises loads per
FMA: every load fetches a vec4, each invocation keeps a TM x TN tile of scalar
accumulators in registers, and all lanes share the rows (A values are the same
across lanes) while each lane owns TN columns. A vec4 runs along the contiguous dimension of each operand:
  A [M,K]: 4 consecutive k of one row      (needs K % 4 == 0)
  A [K,M] (TransA): 4 consecutive rows      (needs M % 4 == 0, TM % 4 == 0)
  B [K,N]: 4 consecutive columns            (needs N % 4 == 0, TN % 4 == 0)
  B [N,K] (TransB): 4 consecutive k         (needs K % 4 == 0)
With AScalar, A is read one float at a time instead (its contiguous
dimension is not a multiple of 4: attention's P V and the gradients through
P at 50 or 257 tokens): a gathered float costs about a quarter of a
gathered vec4 on lavapipe, so this costs little against the vec4 reads.
When either vec4 runs along k, one loop step covers 4 values of k (Us = 0..3),
otherwise one (Us = 0). Rows and columns past the edge are clamped for loading
and skipped when storing, so the loop has no bounds checks.
Data: WG (lanes), Rows and Cols (I, Q = I/4, R = I%4 for each of TM, TN),
RowGroups, ColGroups (0..TM/4-1, 0..TN/4-1), Us, Step, AScalar, TransA, TransB
and the epilogue fields. Strides of A (in floats with AScalar) and B are in vec4s.
*/}}
{{define "matmul_vec4"}}
{{template "matmul_bindings" .}}
@group(0) @binding(1) var<storage, read> a: array<{{if .AScalar}}f32{{else}}vec4<f32>{{end}}>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;

@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let base_a = wid.z * p.stride_a;
  let base_b = wid.z * p.stride_b;
  let K4 = p.K / 4u;
  let M4 = p.M / 4u;
  let N4 = p.N / 4u;
  let m0 = wid.y * {{len .Rows}}u;
  {{if .AScalar}}{{range .Rows}}let ar{{.I}} = base_a + min(m0 + {{.I}}u, p.M - 1u){{if not $.TransA}} * p.K{{end}};
  {{end}}{{else if .TransA}}{{range .RowGroups}}let ag{{.}} = base_a + min(m0 / 4u + {{.}}u, M4 - 1u);
  {{end}}{{else}}{{range .Rows}}let ar{{.I}} = base_a + min(m0 + {{.I}}u, p.M - 1u) * K4;
  {{end}}{{end}}
  {{if .TransB}}let n0 = wid.x * {{mul .WG (len .Cols)}}u + lid.x;
  {{range .Cols}}let bc{{.I}} = base_b + min(n0 + {{mul .I $.WG}}u, p.N - 1u) * K4;
  {{end}}{{else}}let g0 = wid.x * {{mul .WG (len .ColGroups)}}u + lid.x;
  {{range .ColGroups}}let bg{{.}} = base_b + min(g0 + {{mul . $.WG}}u, N4 - 1u);
  {{end}}{{end}}
  {{range $r := .Rows}}{{range $c := $.Cols}}var acc{{$r.I}}_{{$c.I}} = 0.0;
  {{end}}{{end}}
  for (var k = 0u; k < p.K; k += {{.Step}}u) {
    {{if .AScalar}}{{range $u := .Us}}{{range $r := $.Rows}}let va{{$r.I}}_{{$u}} = a[ar{{$r.I}} + {{if $.TransA}}(k + {{$u}}u) * p.M{{else}}k + {{$u}}u{{end}}];
    {{end}}{{end}}{{else if .TransA}}{{range $u := .Us}}{{range $q := $.RowGroups}}let va{{$q}}_{{$u}} = a[ag{{$q}} + (k + {{$u}}u) * M4];
    {{end}}{{end}}{{else}}{{range .Rows}}let va{{.I}} = a[ar{{.I}} + k / 4u];
    {{end}}{{end}}
    {{if .TransB}}{{range .Cols}}let vb{{.I}} = b[bc{{.I}} + k / 4u];
    {{end}}{{else}}{{range $u := .Us}}{{range $q := $.ColGroups}}let vb{{$q}}_{{$u}} = b[bg{{$q}} + (k + {{$u}}u) * N4];
    {{end}}{{end}}{{end}}
    {{range $u := .Us}}{{range $r := $.Rows}}{{range $c := $.Cols}}acc{{$r.I}}_{{$c.I}} = fma({{if $.AScalar}}va{{$r.I}}_{{$u}}{{else if $.TransA}}va{{$r.Q}}_{{$u}}[{{$r.R}}]{{else}}va{{$r.I}}[{{$u}}]{{end}}, {{if $.TransB}}vb{{$c.I}}[{{$u}}]{{else}}vb{{$c.Q}}_{{$u}}[{{$c.R}}]{{end}}, acc{{$r.I}}_{{$c.I}});
    {{end}}{{end}}{{end}}
  }
  {{range $r := .Rows}}{{range $c := $.Cols}}store_c(wid.z, m0 + {{$r.I}}u, {{if $.TransB}}n0 + {{mul $c.I $.WG}}u{{else}}4u * (g0 + {{mul $c.Q $.WG}}u) + {{$c.R}}u{{end}}, acc{{$r.I}}_{{$c.I}});
  {{end}}{{end}}
}
{{end}}

{{/*
matmul_bcast reads A through a uniform binding because lavapipe (Mesa 25.0)
gathers a uniform-buffer value lane by lane without branches (an extract and
an insert per lane and float), where a storage load costs a bounds-checked,
branching load per lane (see matmul_vec4): about 2.5 instructions against 7.
Only constant addresses are loaded once and broadcast; the A addresses here
move with k, so they are gathered too (docs/lavapipe.md has the profile). A uniform binding holds at most 64 KiB, so each
dispatch sees a window of A: rows [row_lo, row_hi) of the batches batch0 ..
batch0 + (grid y) / tiles - 1 (several whole batches when they fit, else part
of one), laid out as in A from element a_off of the binding. Bindings come in
a few sizes (Window, a power of two) so that shapes which change every step
(the masked patches of iBOT) do not compile new pipelines. A workgroup computes TM rows x 4 WG columns, each
lane a vec4 of 4 consecutive columns, so B is [K,N] with N % 4 == 0 or, with
TransB, [N,K] with K % 4 == 0. A is never transposed. AVec4 (K % 4 == 0)
reads A four k at a time. With Storage, A is a storage binding instead and
one dispatch covers the whole product (batch0 and row_lo 0, row_hi M, a_off
where A starts): a lavapipe that loads a workgroup-uniform address once
(Mesa 26; gpu.Device.BroadcastLoads) needs no window, whose rows at K 1536
were too few to reuse B well. Data: TM, Rows (0..TM-1), WG, Window (vec4s of
the binding), Storage, AVec4, TransB and the epilogue fields; stride_b is in
vec4s.
*/}}
{{define "matmul_bcast"}}
{{template "matmul_bindings" .}}
{{if .Storage}}@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;{{else}}@group(0) @binding(1) var<uniform> a: array<vec4<f32>, {{.Window}}>;{{end}}
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;

@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let bi = wid.y / p.tiles;
  let batch = p.batch0 + bi;
  let m0 = p.row_lo + (wid.y % p.tiles) * {{.TM}}u;
  let base_b = batch * p.stride_b;
  let K4 = p.K / 4u;
  let N4 = (p.N + 3u) / 4u;
  let g = wid.x * {{.WG}}u + lid.x;
  // Row r of the tile starts at element ar_r of the window (rows past the
  // window are clamped for loading and never stored).
  {{range .Rows}}let ar{{.}} = p.a_off + (bi * p.M + min(m0 + {{.}}u, p.row_hi - 1u) - p.row_lo) * p.K;
  var acc{{.}} = vec4<f32>();
  {{end}}
  {{if .TransB}}{{range $j := seq 4}}let bc{{$j}} = base_b + min(4u * g + {{$j}}u, p.N - 1u) * K4;
  {{end}}
  for (var k4 = 0u; k4 < K4; k4++) {
    let b0 = b[bc0 + k4]; let b1 = b[bc1 + k4]; let b2 = b[bc2 + k4]; let b3 = b[bc3 + k4];
    {{range .Rows}}{ let va = a[ar{{.}} / 4u + k4]; acc{{.}} += vec4(dot(va, b0), dot(va, b1), dot(va, b2), dot(va, b3)); }
    {{end}}
  }
  {{else}}let gb = base_b + min(g, N4 - 1u);
  {{if .AVec4}}for (var k4 = 0u; k4 < K4; k4++) {
    let kb = gb + 4u * k4 * N4;
    let b0 = b[kb]; let b1 = b[kb + N4]; let b2 = b[kb + 2u * N4]; let b3 = b[kb + 3u * N4];
    {{range .Rows}}{ let va = a[ar{{.}} / 4u + k4]; acc{{.}} = fma(vec4(va.x), b0, fma(vec4(va.y), b1, fma(vec4(va.z), b2, fma(vec4(va.w), b3, acc{{.}})))); }
    {{end}}
  }
  {{else}}for (var k = 0u; k < p.K; k++) {
    let bk = b[gb + k * N4];
    {{range .Rows}}{ let i = ar{{.}} + k; acc{{.}} = fma(vec4(a[i / 4u][i % 4u]), bk, acc{{.}}); }
    {{end}}
  }
  {{end}}{{end}}
  {{range $r := .Rows}}if (m0 + {{$r}}u < p.row_hi) {
    {{range $j := seq 4}}store_c(batch, m0 + {{$r}}u, 4u * g + {{$j}}u, acc{{$r}}[{{$j}}]);
    {{end}}
  }
  {{end}}
}
{{end}}

{{/*
matmul_tiled is the GPU kernel (any shape, any transposes): a 16 x 16
workgroup computes a BM x BM block of C (BM = 16 Tile), staging BK-deep
slices of A and B in workgroup memory so that each value loaded from device
memory feeds BM FMAs. Each invocation fetches BM BK / 256 values of each
slice (Fetches: as many, or a quarter as many vec4s with Vec); loads walk each operand along its contiguous axis (coalesced) and
zero-fill past the edges. The A slice is stored k-major, each k row padded by
Pad words so that transposing A on the way in spreads over the memory banks.
Without Contig, invocation (x, y) owns rows y + 16 i and columns x + 16 j: a
warp reads consecutive words of the B slice and stores consecutive columns of
C. With Contig it owns rows y Tile + i and columns x Tile + j, read from
workgroup memory as vec4s (a quarter of the load instructions); with Spread
as well, its columns are Tile/4 runs of 4 at 4 x + 64 q instead, so that
the 16 lanes of a row read 16 consecutive vec4s of the B slice (with runs of
8 or more adjacent columns, neighbouring lanes' reads would collide in the
memory banks). With
Prefetch the next slices are loaded into registers while the current ones
are multiplied, hiding device-memory latency behind the FMAs. With Vec (each
operand's contiguous axis a multiple of 4) slices are read from device
memory as vec4s. With Split, the product is batch 1 and workgroup z
multiplies only k in [z k_split, (z+1) k_split), writing its partial product
to slice z of C (then a scratch [splits, M, N] with no epilogue) for
matmul_split_sum to add up: products with few output blocks and a long k
(weight gradients) then still fill a large GPU. lavapipe runs
this correctly but slowly (a CPU has no workgroup memory to speak of): it
takes matmul_bcast and matmul_vec4. Data: Tile, BK, Pad, Fetches, Idx
(0..Tile-1), Contig, Spread, Prefetch, Vec, Split, TransA, TransB and the epilogue fields;
with Vec the strides of A and B are in vec4s.
*/}}
{{define "matmul_tiled"}}
{{template "matmul_bindings" .}}
{{if .Vec}}@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
{{else}}@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
{{end}}
const BM = {{mul 16 .Tile}}u;
const BK = {{.BK}}u;
const AS = BM + {{.Pad}}u; // padded k-row stride of a_tile, in words
var<private> k_hi: u32; // end of this workgroup's k range
{{if .Contig}}var<workgroup> a_tile: array<vec4<f32>, {{div (mul .BK (add (mul 16 .Tile) .Pad)) 4}}>; // A[m0 + m, k0 + k] at word k * AS + m
var<workgroup> b_tile: array<vec4<f32>, {{mul .BK (mul 4 .Tile)}}>;  // B[k0 + k, n0 + n] at word k * BM + n
fn put_a(w: u32, v: f32) { a_tile[w / 4u][w % 4u] = v; }
fn put_b(w: u32, v: f32) { b_tile[w / 4u][w % 4u] = v; }
{{else}}var<workgroup> a_tile: array<f32, {{mul .BK (add (mul 16 .Tile) .Pad)}}>; // A[m0 + m, k0 + k] at k * AS + m
var<workgroup> b_tile: array<f32, {{mul .BK (mul 16 .Tile)}}>;  // B[k0 + k, n0 + n] at k * BM + n
fn put_a(w: u32, v: f32) { a_tile[w] = v; }
fn put_b(w: u32, v: f32) { b_tile[w] = v; }
{{end}}
{{if .Vec}}
// Vec4 j of a slice holds A[m0 + mk.x, k0 + mk.y] and B[k0 + nk.y, n0 +
// nk.x] and the next three along the operand's contiguous axis.
fn a_mk(j: u32) -> vec2<u32> { {{if .TransA}}return vec2(4u * (j % (BM / 4u)), j / (BM / 4u));{{else}}return vec2(j / (BK / 4u), 4u * (j % (BK / 4u)));{{end}} }
fn b_nk(j: u32) -> vec2<u32> { {{if .TransB}}return vec2(j / (BK / 4u), 4u * (j % (BK / 4u)));{{else}}return vec2(4u * (j % (BM / 4u)), j / (BM / 4u));{{end}} }
fn fetch_a(base: u32, m0: u32, k0: u32, j: u32) -> vec4<f32> {
  let m = m0 + a_mk(j).x;
  let k = k0 + a_mk(j).y;
  if (m >= p.M || k >= k_hi) { return vec4<f32>(); }
  {{if .TransA}}return a[base + (k * p.M + m) / 4u];{{else}}return a[base + (m * p.K + k) / 4u];{{end}}
}
fn fetch_b(base: u32, n0: u32, k0: u32, j: u32) -> vec4<f32> {
  let n = n0 + b_nk(j).x;
  let k = k0 + b_nk(j).y;
  if (n >= p.N || k >= k_hi) { return vec4<f32>(); }
  {{if .TransB}}return b[base + (n * p.K + k) / 4u];{{else}}return b[base + (k * p.N + n) / 4u];{{end}}
}
fn stage(j: u32, va: vec4<f32>, vb: vec4<f32>) {
  let mk = a_mk(j);
  {{if .TransA}}{{range $r := seq 4}}put_a(mk.y * AS + mk.x + {{$r}}u, va[{{$r}}]);
  {{end}}{{else}}{{range $r := seq 4}}put_a((mk.y + {{$r}}u) * AS + mk.x, va[{{$r}}]);
  {{end}}{{end}}
  let nk = b_nk(j);
  {{if .TransB}}{{range $r := seq 4}}put_b((nk.y + {{$r}}u) * BM + nk.x, vb[{{$r}}]);
  {{end}}{{else}}{{range $r := seq 4}}put_b(nk.y * BM + nk.x + {{$r}}u, vb[{{$r}}]);
  {{end}}{{end}}
}
{{else}}
// Slot i of a slice holds A[m0 + mk.x, k0 + mk.y] and B[k0 + nk.y, n0 + nk.x].
fn a_mk(i: u32) -> vec2<u32> { {{if .TransA}}return vec2(i % BM, i / BM);{{else}}return vec2(i / BK, i % BK);{{end}} }
fn b_nk(i: u32) -> vec2<u32> { {{if .TransB}}return vec2(i / BK, i % BK);{{else}}return vec2(i % BM, i / BM);{{end}} }
fn fetch_a(base: u32, m0: u32, k0: u32, i: u32) -> f32 {
  let m = m0 + a_mk(i).x;
  let k = k0 + a_mk(i).y;
  if (m >= p.M || k >= k_hi) { return 0.0; }
  {{if .TransA}}return a[base + k * p.M + m];{{else}}return a[base + m * p.K + k];{{end}}
}
fn fetch_b(base: u32, n0: u32, k0: u32, i: u32) -> f32 {
  let n = n0 + b_nk(i).x;
  let k = k0 + b_nk(i).y;
  if (n >= p.N || k >= k_hi) { return 0.0; }
  {{if .TransB}}return b[base + n * p.K + k];{{else}}return b[base + k * p.N + n];{{end}}
}
fn stage(i: u32, va: f32, vb: f32) {
  put_a(a_mk(i).y * AS + a_mk(i).x, va);
  put_b(b_nk(i).y * BM + b_nk(i).x, vb);
}
{{end}}
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let base_a = wid.z * p.stride_a;
  let base_b = wid.z * p.stride_b;
  let m0 = wid.y * BM;
  let n0 = wid.x * BM;
  {{if .Split}}let k_lo = wid.z * p.k_split;
  k_hi = min(p.K, k_lo + p.k_split);{{else}}let k_lo = 0u;
  k_hi = p.K;{{end}}
  {{range $r := .Idx}}{{range $c := $.Idx}}var acc{{$r}}_{{$c}} = 0.0;
  {{end}}{{end}}
  {{if .Prefetch}}{{range $l := seq .Fetches}}var ra{{$l}} = fetch_a(base_a, m0, k_lo, li + {{mul $l 256}}u);
  var rb{{$l}} = fetch_b(base_b, n0, k_lo, li + {{mul $l 256}}u);
  {{end}}{{end}}
  for (var k0 = k_lo; k0 < k_hi; k0 += BK) {
    {{range $l := seq .Fetches}}{{if $.Prefetch}}stage(li + {{mul $l 256}}u, ra{{$l}}, rb{{$l}});{{else}}stage(li + {{mul $l 256}}u, fetch_a(base_a, m0, k0, li + {{mul $l 256}}u), fetch_b(base_b, n0, k0, li + {{mul $l 256}}u));{{end}}
    {{end}}
    workgroupBarrier();
    {{if .Prefetch}}if (k0 + BK < k_hi) {
      {{range $l := seq .Fetches}}ra{{$l}} = fetch_a(base_a, m0, k0 + BK, li + {{mul $l 256}}u);
      rb{{$l}} = fetch_b(base_b, n0, k0 + BK, li + {{mul $l 256}}u);
      {{end}}
    }{{end}}
    for (var k = 0u; k < BK; k++) {
      {{if .Contig}}{{range $q := seq (div .Tile 4)}}let aq{{$q}} = a_tile[(k * AS) / 4u + lid.y * {{div $.Tile 4}}u + {{$q}}u];
      let bq{{$q}} = b_tile[k * {{mul 4 $.Tile}}u + {{if $.Spread}}{{mul $q 16}}u + lid.x{{else}}lid.x * {{div $.Tile 4}}u + {{$q}}u{{end}}];
      {{end}}{{range $r := .Idx}}{{range $c := $.Idx}}acc{{$r}}_{{$c}} = fma(aq{{div $r 4}}[{{sub $r (mul (div $r 4) 4)}}], bq{{div $c 4}}[{{sub $c (mul (div $c 4) 4)}}], acc{{$r}}_{{$c}});
      {{end}}{{end}}{{else}}{{range .Idx}}let a{{.}} = a_tile[k * AS + lid.y + {{mul . 16}}u];
      let b{{.}} = b_tile[k * BM + lid.x + {{mul . 16}}u];
      {{end}}{{range $r := .Idx}}{{range $c := $.Idx}}acc{{$r}}_{{$c}} = fma(a{{$r}}, b{{$c}}, acc{{$r}}_{{$c}});
      {{end}}{{end}}{{end}}
    }
    workgroupBarrier();
  }
  {{range $r := .Idx}}{{range $c := $.Idx}}store_c(wid.z, m0 + {{if $.Contig}}lid.y * {{$.Tile}}u + {{$r}}u{{else}}lid.y + {{mul $r 16}}u{{end}}, n0 + {{if $.Spread}}{{mul (div $c 4) 64}}u + 4u * lid.x + {{sub $c (mul (div $c 4) 4)}}u{{else if $.Contig}}lid.x * {{$.Tile}}u + {{$c}}u{{else}}lid.x + {{mul $c 16}}u{{end}}, acc{{$r}}_{{$c}});
  {{end}}{{end}}
}
{{end}}

{{/*
matmul_split_sum finishes a split-K product: C = epilogue(sum over z of
partial[z]), partial [splits, M, N] (binding 2 is unused). Invocations run
over the M N outputs, each adding its splits in order.
*/}}
{{define "matmul_split_sum"}}
{{template "common" .}}
{{template "matmul_bindings" .}}
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 256u);
  if (i >= p.stride_c) { return; }
  var h = 0.0;
  for (var z = 0u; z < p.splits; z++) {
    h += partial[z * p.stride_c + i];
  }
  store_c(0u, i / p.N, i % p.N, h);
}
{{end}}

{{/*
matmul is the fallback for shapes matmul_vec4 cannot take. Data: TM, TN
(outputs per invocation), WGX, WGY (invocations), TransA, TransB and the
epilogue fields.
*/}}
{{define "matmul"}}
{{template "matmul_bindings" .}}
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

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
    for (var j = 0u; j < TN; j++) {
      store_c(batch, m0 + i * {{.WGY}}u, n0 + j * {{.WGX}}u, acc[i * TN + j]);
    }
  }
}
{{end}}

{{/*
transpose: dst [batch, cols, rows] = src [batch, rows, cols]^T, one
invocation per row of src walking a run of p.per columns (grid row y takes
run y); with Vec4 (rows and cols multiples of 4) one invocation per 4 rows
and runs of 4-column blocks, moving 4 x 4 blocks as vec4s (a quarter of the
loads and stores). An invocation reads its rows along, and neighbouring
invocations write neighbouring addresses. It turns an operand whose
contiguous axis is not k into one whose is, so that MatMul can run a
product as A B^T on a CPU (see nn.MatMul): a copy of K (M + N) floats
against the product's 2 M N K flops. Data: Vec4.
*/}}
{{define "transpose"}}
struct Params { rows: u32, cols: u32, per: u32 }
@group(0) @binding(0) var<uniform> p: Params;
{{if .Vec4}}@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
{{else}}@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
{{end}}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = wid.x * 64u + lid.x;
  {{if .Vec4}}let rows4 = p.rows / 4u;
  let cols4 = p.cols / 4u;
  if (r >= rows4) { return; }
  let base = wid.z * rows4 * p.cols;
  for (var col = wid.y * p.per; col < min(wid.y * p.per + p.per, cols4); col++) {
    let v0 = src[base + (4u * r) * cols4 + col];
    let v1 = src[base + (4u * r + 1u) * cols4 + col];
    let v2 = src[base + (4u * r + 2u) * cols4 + col];
    let v3 = src[base + (4u * r + 3u) * cols4 + col];
    dst[base + (4u * col) * rows4 + r] = vec4(v0.x, v1.x, v2.x, v3.x);
    dst[base + (4u * col + 1u) * rows4 + r] = vec4(v0.y, v1.y, v2.y, v3.y);
    dst[base + (4u * col + 2u) * rows4 + r] = vec4(v0.z, v1.z, v2.z, v3.z);
    dst[base + (4u * col + 3u) * rows4 + r] = vec4(v0.w, v1.w, v2.w, v3.w);
  }
  {{else}}if (r >= p.rows) { return; }
  let base = wid.z * p.rows * p.cols;
  for (var col = wid.y * p.per; col < min(wid.y * p.per + p.per, p.cols); col++) {
    dst[base + col * p.rows + r] = src[base + r * p.cols + col];
  }
  {{end}}
}
{{end}}
