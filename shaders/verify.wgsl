{{/* Copy verification (curate/verify.go): the normalised correlation of one
thumbnail with crops of another, resized to its side. Thumbnails arrive
centred to unit norm, so a crop's correlation needs only its sum, its sum
of squares and its product with the target. Each task is one direction of a
candidate pair: task[t] = (source thumbnail, target thumbnail). */}}

{{/* verify_correlation: fn correlation(b) of the crop b = (x, y, w, h) of
src_at with dst_at, both SIDE x SIDE: bilinear at pixel centres, clamped to
the crop and the image, as cutting the box out and resizing it would. Data:
Side. */}}
{{define "verify_correlation"}}
const SIDE = {{.Side}}u;
const FLAT_VARIANCE = 1e-8;

// crop_tap is the pair of source pixels and the weight of the second for
// output pixel o of a crop starting at start of size pixels.
fn crop_tap(o: u32, start: f32, size: f32) -> vec3<f32> {
  var s = start + (f32(o) + 0.5) * size / f32(SIDE) - 0.5;
  s = clamp(s, start, start + size - 1.0);
  s = clamp(s, 0.0, f32(SIDE - 1u));
  let i = floor(s);
  return vec3<f32>(i, min(i + 1.0, f32(SIDE - 1u)), s - i);
}

fn correlation(b: vec4<f32>) -> f32 {
  var sum = 0.0;
  var sum_sq = 0.0;
  var dot_dst = 0.0;
  for (var y = 0u; y < SIDE; y++) {
    let ty = crop_tap(y, b.y, b.w);
    let row0 = u32(ty.x) * SIDE;
    let row1 = u32(ty.y) * SIDE;
    for (var x = 0u; x < SIDE; x++) {
      let tx = crop_tap(x, b.x, b.z);
      let x0 = u32(tx.x);
      let x1 = u32(tx.y);
      let top = mix(src_at(row0 + x0), src_at(row0 + x1), tx.z);
      let bot = mix(src_at(row1 + x0), src_at(row1 + x1), tx.z);
      let v = mix(top, bot, ty.z);
      sum += v;
      sum_sq += v * v;
      dot_dst += v * dst_at(y * SIDE + x);
    }
  }
  let variance = sum_sq - sum * sum / f32(SIDE * SIDE);
  if (variance <= FLAT_VARIANCE) { return 0.0; }
  // The target sums to zero: the crop's mean drops out of the product.
  return dot_dst / sqrt(variance);
}
{{end}}

{{/* verify_coarse: score[t, h] = the correlation of crop box[h] of task t's
source with its target, on half-resolution thumbnails (Side x Side, centred
unit rows of image). One workgroup per task holds both in workgroup memory;
its WG invocations take the boxes in turn. Data: Side, WG. */}}
{{define "verify_coarse"}}
struct Params { tasks: u32, boxes: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> image: array<f32>;
@group(0) @binding(2) var<storage, read> task: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> box: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> score: array<f32>;

const WG = {{.WG}}u;
var<workgroup> src: array<f32, {{mul .Side .Side}}>;
var<workgroup> dst: array<f32, {{mul .Side .Side}}>;

fn src_at(i: u32) -> f32 { return src[i]; }
fn dst_at(i: u32) -> f32 { return dst[i]; }
{{template "verify_correlation" .}}
@compute @workgroup_size({{.WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wid.x + wid.y * 65535u;
  if (t >= p.tasks) { return; }
  let pair = task[t];
  for (var i = lid.x; i < SIDE * SIDE; i += WG) {
    src[i] = image[pair.x * SIDE * SIDE + i];
    dst[i] = image[pair.y * SIDE * SIDE + i];
  }
  workgroupBarrier();
  for (var h = lid.x; h < p.boxes; h += WG) {
    score[t * p.boxes + h] = correlation(box[h]);
  }
}
{{end}}

{{/* verify_refine: refined[t, j] for the j-th best coarse box of task t
(top_value and top_index [tasks, K], from topk over verify_coarse's
scores): a pattern search at full resolution (Side x Side thumbnails,
centred unit rows of image) from that box scaled by p.scale. The box, or one
of its edges, moves by a step while that raises the correlation, the step
halving from one pixel to an eighth; crops keep sides of at least
p.min_side. A task whose best coarse score is below p.coarse_floor is not
refined (its coarse score stands), nor is a box whose whole-pixel steps end
below p.pixel_floor. One invocation per (task, box). Data: Side, K, Moves
(the moves at a step of one pixel), Steps (how many halvings from one
pixel), EdgeSlack. */}}
{{define "verify_refine"}}
{{template "common" .}}
struct Params { tasks: u32, scale: f32, min_side: f32, coarse_floor: f32, pixel_floor: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> image: array<f32>;
@group(0) @binding(2) var<storage, read> task: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> box: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> top_value: array<f32>;
@group(0) @binding(5) var<storage, read> top_index: array<u32>;
@group(0) @binding(6) var<storage, read_write> refined: array<f32>;

const K = {{.K}}u;
const EDGE_SLACK = {{.EdgeSlack}};
const STEPS = {{.Steps}}u;
// The moves at a step of one pixel, as curate.refineMoves.
const MOVES = array<vec4<f32>, {{len .Moves}}>({{range $i, $m := .Moves}}{{if $i}},{{end}}
  vec4<f32>({{printf "%.1f, %.1f, %.1f, %.1f" (index $m 0) (index $m 1) (index $m 2) (index $m 3)}}){{end}});

var<private> src_base: u32;
var<private> dst_base: u32;
fn src_at(i: u32) -> f32 { return image[src_base + i]; }
fn dst_at(i: u32) -> f32 { return image[dst_base + i]; }
{{template "verify_correlation" .}}
fn valid(b: vec4<f32>) -> bool {
  let side = f32(SIDE);
  return b.x >= 0.0 && b.y >= 0.0 && b.z >= p.min_side && b.w >= p.min_side &&
    b.x + b.z <= side + EDGE_SLACK && b.y + b.w <= side + EDGE_SLACK;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat_id(gid, nwg, 64u);
  if (i >= p.tasks * K) { return; }
  let t = i / K;
  let coarse = top_value[t * K];
  if (coarse < p.coarse_floor || top_index[i] == 0xffffffffu) {
    refined[i] = coarse;
    return;
  }
  src_base = task[t].x * SIDE * SIDE;
  dst_base = task[t].y * SIDE * SIDE;
  var moves = MOVES;
  var b = box[top_index[i]] * p.scale;
  var best = correlation(b);
  var step = 1.0;
  for (var s = 0u; s < STEPS; s++) {
    var moved = true;
    while (moved) {
      moved = false;
      for (var m = 0u; m < {{len .Moves}}u; m++) {
        let c = b + step * moves[m];
        if (!valid(c)) { continue; }
        let r = correlation(c);
        if (r > best) {
          b = c;
          best = r;
          moved = true;
        }
      }
    }
    if (s == 0u && best < p.pixel_floor) { break; }
    step *= 0.5;
  }
  refined[i] = best;
}
{{end}}
