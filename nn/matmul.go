package nn

import (
	"fmt"

	"github.com/webdino/webdino/gpu"
)

// MatMulOpts selects transposes and the fused epilogue of MatMul.
type MatMulOpts struct {
	TransA, TransB bool
	Bias           *gpu.Tensor  // [N], added to every row
	Act            Activation   // applied after the bias
	PreAct         *gpu.Tensor  // if set, receives AB+bias (what the activation's backward needs)
	Scale          *gpu.Tensor  // [N], multiplies the activated output (LayerScale)
	RowScale       *gpu.Tensor  // one factor per row of C (over all batches): stochastic depth's per-sample keep
	Accumulate     bool         // C += result instead of C = result (gradient accumulation, residuals)
	Heads          *HeadsLayout // C in a multi-head attention layout instead of row-major (no PreAct or RowScale)
	// GELUGradAt, shaped as C, multiplies the result by GELU'(GELUGradAt):
	// the activation's backward fused into the product that gives its
	// output's gradient (C = dy W, GELUGradAt the pre-activation).
	GELUGradAt *gpu.Tensor
}

// HeadsLayout stores a product in the layouts of multi-head attention, so
// that no kernel runs only to move heads between them. With H heads of Dh
// columns (D = H Dh) over B sequences of T tokens:
//
//   - split (Merge false): the unbatched product [B T, Parts D] (the qkv
//     Linear, Parts 3; the gradient of the attention's output, Parts 1)
//     goes to Parts tensors [B, H, T, Dh], one after another in C, each
//     starting PartStride(B T, D) floats after the last;
//   - merge: the product batched over B H of [T, Dh] (a head's output or
//     gradient) goes to columns Part D .. Part D + D - 1 of the token-major
//     C [B, T, Parts D].
type HeadsLayout struct {
	Merge       bool
	T, H, Dh    int
	Parts, Part int
}

// PartStride is where each part of a split starts in C: rows x D floats,
// rounded up to 64 (256 bytes, the storage offset alignment of WebGPU
// devices) so that every part can be bound as a view.
func PartStride(rows, D int) int { return (rows*D + 63) &^ 63 }

// headsCheck validates layout h of the product of batch x M x N (after
// MatMul has flattened a shared B's batches) into C, and returns it as
// template data.
func headsCheck(h HeadsLayout, o MatMulOpts, c *gpu.Tensor, batch, M, N int) (headsData, error) {
	D := h.H * h.Dh
	switch {
	case h.T < 1 || h.H < 1 || h.Dh < 1 || h.Parts < 1 || h.Part < 0 || h.Part >= h.Parts:
		return headsData{}, fmt.Errorf("heads layout %+v: want T, H, Dh, Parts >= 1 and 0 <= Part < Parts", h)
	case o.PreAct != nil || o.RowScale != nil:
		return headsData{}, fmt.Errorf("heads layout %+v: no pre-activation or row scale with it", h)
	case h.Merge && (batch%h.H != 0 || M != h.T || N != h.Dh || c.Len() != batch/h.H*h.T*h.Parts*D):
		return headsData{}, fmt.Errorf("heads layout %+v: merging needs %d batches of [%d, %d] (a multiple of H) into C of B x T x Parts x D floats", h, batch, M, N)
	case !h.Merge && (batch != 1 || M%h.T != 0 || N != h.Parts*D || h.Part != 0 || c.Len() < (h.Parts-1)*PartStride(M, D)+M*D):
		return headsData{}, fmt.Errorf("heads layout %+v: splitting needs one product of B x T rows and Parts x D columns (a shared B) into C of %d parts %d floats apart", h, h.Parts, PartStride(M, D))
	}
	if h.Merge {
		return headsData{On: true, Merge: true, H: h.H, Dh: h.Dh, Row: h.Parts * D, Col: h.Part * D}, nil
	}
	return headsData{On: true, T: h.T, H: h.H, Dh: h.Dh}, nil
}

// headsData is HeadsLayout as template data (see c_index in shaders/matmul.wgsl).
type headsData struct {
	On, Merge bool
	T, H, Dh  int
	Row, Col  int
}

// Fallback kernel tile: each invocation computes mmTM x mmTN outputs.
const (
	mmTM, mmTN   = 4, 4
	mmWGX, mmWGY = 16, 16
)

// mmTile is the register tile of matmul_vec4: TM rows shared by the lanes of a
// workgroup, TN columns per lane, WG lanes. Loads per FMA fall as the tile
// grows, but past about 32 accumulators (the vector registers of an AVX-512
// CPU under lavapipe) the spills cost more than they save.
type mmTile struct{ TM, TN, WG int }

// mmTiles holds the tile per transpose variant, indexed by [TransA][TransB].
// TM must be a multiple of 4 when A is transposed and TN when B is not (see
// matmul_vec4). Measured on lavapipe at 1024^3 (fraction of the FMA peak):
// NN 6x4 18%, 8x4 17%, 8x8 11-15%; NT 6x4 17%, 6x6 17%, 4x4 15%, 16x1 3%;
// TN 8x4 20%, 8x8 19%, 4x4 9%. An 8x16 tile crashed lavapipe.
var mmTiles = [2][2]mmTile{
	{{TM: 6, TN: 4, WG: 8}, {TM: 6, TN: 4, WG: 8}},
	{{TM: 8, TN: 4, WG: 8}, {TM: 8, TN: 4, WG: 8}},
}

// mmScalarAWide is matmul_vec4's tile when it reads A as scalars and N
// fills it: attention's products with K or M = T at 257 tokens and N = 64
// (bench kernels, lavapipe, four interleaved runs: attention forward +
// backward 12.6-16.5 GFLOP/s against 9.8-13.8 with mmTiles' 6x4 and 8x4;
// 8x8 12.5-16.3, 4x8 14.3-15.3, 12x4 14.6-15.1). Narrower products (the
// demo's N 16) keep mmTiles, whose 32 columns a workgroup already overhangs.
var mmScalarAWide = mmTile{TM: 6, TN: 8, WG: 8}

// epilogue is the template data of the fused epilogue: the binding of each
// optional tensor (0 when absent), the activation and accumulation.
type epilogue struct {
	Bias, Scale, PreAct, RowScale, GELUGradAt int
	Act                                       string
	Accumulate                                bool
	Heads                                     headsData
}

// mmIdx names accumulator I of a tile and its place Q*4+R in a vec4.
type mmIdx struct{ I, Q, R int }

func mmIdxs(n int) []mmIdx {
	s := make([]mmIdx, n)
	for i := range s {
		s[i] = mmIdx{i, i / 4, i % 4}
	}
	return s
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// MatMul records C = epilogue(op(A) op(B)) for every batch. A is [..., M, K]
// ([..., K, M] with TransA), B is [..., K, N] ([..., N, K] with TransB) or 2-D and
// shared by all batches, C is [..., M, N].
func MatMul(rec *gpu.Recorder, c, a, b *gpu.Tensor, o MatMulOpts) error {
	return matMul(rec, c, a, b, o, Tiling{}, bcastWhenPays)
}

// Tiling shapes matmul_tiled, the GPU kernel (see shaders/matmul.wgsl): a
// workgroup of 16 x 16 invocations computes a block of 16 Tile x 16 Tile
// outputs, staging slices of BK values of k in workgroup memory (Tile BK a
// multiple of 16); Contig gives each invocation Tile adjacent rows and
// columns read from workgroup memory as vec4s (Tile a multiple of 4) instead
// of rows and columns 16 apart; Spread (with Contig) gives it runs of 4
// columns 64 apart instead, so that neighbouring lanes read neighbouring
// vec4s of the B slice (no bank conflicts past Tile 4); Prefetch loads the
// next slices while the current ones are used; Vec reads device memory as
// vec4s where both operands' contiguous axes are multiples of 4 (Tile BK a
// multiple of 64; other shapes take scalar reads). Split cuts the k range of an unbatched
// product into that many parts, which a second kernel adds up (0: as splitK
// decides, 1: never); batched products are not split. The zero Tiling is the
// device's choice (DefaultTiling).
type Tiling struct {
	Tile, BK                      int
	Contig, Spread, Prefetch, Vec bool
	Split                         int
}

// DefaultTiling is MatMul's tiling for o on d for a batch of M x K x N
// products, or the zero Tiling where d is a CPU, whose faster kernels
// (matmul_bcast, matmul_vec4) MatMul takes instead. On a GPU it is
// wideTiling for unbatched products that keep its larger blocks busy
// (wideFills), else 64 x 64 blocks with contiguous vec4 reads and prefetch
// (4x16cp): on an H100 (bench kernels -tilings, the ViT-S/14 shapes and
// 1024^3) they ran 15-27 TFLOP/s, 1.7x the plain 4x16 by geometric mean.
// Vec4 loads ran y = x W^T (B transposed) 1.24-1.28x faster there, but
// untransposed products 0.95-1.0x and weight gradients (A transposed)
// 0.84-0.89x, so only the first take them.
func DefaultTiling(d *gpu.Device, o MatMulOpts, batch, M, K, N int) Tiling {
	if d.Info().IsCPU() {
		return Tiling{}
	}
	if batch == 1 && wideFills(M, K, N) {
		return wideTiling
	}
	return Tiling{Tile: 4, BK: 16, Contig: true, Prefetch: true, Vec: o.TransB && !o.TransA}
}

// wideTiling is 128 x 128 blocks, 8 x 8 outputs per invocation in runs of
// 4 columns 64 apart (8x8cwp). On an H100, at the 16448 rows of a ViT-S/14
// training step (bench kernels -images 64), it ran the linear layers at
// 26.7-30.3 TFLOP/s against 4x16cp's 22.7-27.5 (weight gradients 1.09-1.33x,
// the rest 1.07-1.14x); with fewer rows it pays only where wideFills says.
// Its bank-conflicted twin without Spread (8x8cp) ran 18-27 TFLOP/s.
var wideTiling = Tiling{Tile: 8, BK: 8, Contig: true, Spread: true, Prefetch: true}

// wideFills says whether an unbatched M x K x N product keeps wideTiling
// busy: with at least 384 of its blocks (about three per multiprocessor of
// an H100), or, for a long k (weight gradients), with split-K cutting it
// into 8 or more parts for as many workgroups. bench kernels on an H100
// (4112 to 16448 rows, against 4x16cp(v)): products of 387 blocks or more
// ran 1.00-1.14x as fast, 27-36 blocks split 15-19 ways 1.07-1.33x; but
// 195-block products that split-K takes to 390-585 workgroups in 2 or 3
// parts ran 0.90-0.97x, and those of at most 297 blocks unsplit 0.65-0.95x.
// (27 blocks split 8 ways, 216 workgroups, ran 1.11x; the rule leaves it.)
func wideFills(M, K, N int) bool {
	const enough = 384
	bm := 16 * wideTiling.Tile
	groups := ((M + bm - 1) / bm) * ((N + bm - 1) / bm)
	if groups >= enough {
		return true
	}
	parts := splitK(groups, M*N, K)
	return parts >= 8 && groups*parts >= enough
}

// MatMulTiled is MatMul through matmul_tiled with tiling t on any device:
// for benchmarks that compare tilings, and for tests.
func MatMulTiled(rec *gpu.Recorder, c, a, b *gpu.Tensor, o MatMulOpts, t Tiling) error {
	if t.Tile < 1 || t.BK < 1 || t.Split < 0 || t.Tile*t.BK%16 != 0 || t.Contig && t.Tile%4 != 0 || t.Spread && !t.Contig || t.Vec && (t.Tile*t.BK%64 != 0 || t.BK%4 != 0) {
		return shapeErr(rec, "matmul", "tiling %+v: want Tile, BK >= 1, Split >= 0, Tile BK a multiple of 16 (64 and BK of 4 with Vec) and, with Contig, Tile a multiple of 4 (Spread only with Contig)", t)
	}
	return matMul(rec, c, a, b, o, t, bcastNever)
}

// bcastUse is when matMul takes matmul_bcast for a shape it can run.
type bcastUse int

const (
	bcastNever    bcastUse = iota // tests of the other kernels, and matmul_tiled
	bcastWhenPays                 // MatMul: where bcastPays, or matmul_vec4 cannot run
	bcastAlways                   // tests of matmul_bcast
	bcastStorage                  // tests of matmul_bcast with A in storage, operands transposed (bcastRows)
)

// matMul is MatMul with tiling t (the zero value: the device's choice),
// taking matmul_bcast as bcast says.
func matMul(rec *gpu.Recorder, c, a, b *gpu.Tensor, o MatMulOpts, t Tiling, bcast bcastUse) error {
	const op = "matmul"
	if err := notNil(rec, op, []string{"A", "B", "C"}, a, b, c); err != nil {
		return err
	}
	if len(a.Shape) < 2 || len(b.Shape) < 2 || len(c.Shape) < 2 && o.Heads == nil {
		return shapeErr(rec, op, "A %s, B %s, C %s: need at least 2 dimensions each", a, b, c)
	}
	M, K := a.Dim(-2), a.Dim(-1)
	if o.TransA {
		M, K = K, M
	}
	Kb, N := b.Dim(-2), b.Dim(-1)
	if o.TransB {
		Kb, N = N, Kb
	}
	batch := a.Len() / (M * K)
	bBatch := b.Len() / (Kb * N)
	cShaped := o.Heads != nil || c.Dim(-2) == M && c.Dim(-1) == N && c.Len() == batch*M*N // Heads: headsCheck checks C
	if K != Kb || !cShaped || (bBatch != batch && bBatch != 1) {
		return shapeErr(rec, op, "A %s (transposed %v) x B %s (transposed %v) -> C %s: shapes do not agree",
			a, o.TransA, b, o.TransB, c)
	}
	if bBatch == 1 && !o.TransA {
		// A shared B: the batches of A and C lie one after another, so they
		// are the rows of one product, whose blocks and tiles then round up
		// batch x M rows once instead of each batch's M (257 tokens took 5
		// blocks of 64 rows, 320).
		M, batch = batch*M, 1
	}
	var heads headsData
	if o.Heads != nil {
		var err error
		if heads, err = headsCheck(*o.Heads, o, c, batch, M, N); err != nil {
			return shapeErr(rec, op, "A %s x B %s -> C %s: %v", a, b, c, err)
		}
	}
	if o.Bias != nil && o.Bias.Len() != N {
		return shapeErr(rec, op, "bias %s for %d columns", o.Bias, N)
	}
	if o.Scale != nil && o.Scale.Len() != N {
		return shapeErr(rec, op, "scale %s for %d columns", o.Scale, N)
	}
	if o.RowScale != nil && o.RowScale.Len() != c.Len()/N {
		return shapeErr(rec, op, "row scale %s for %d rows", o.RowScale, c.Len()/N)
	}
	if o.PreAct != nil && o.PreAct.Len() != c.Len() {
		return shapeErr(rec, op, "pre-activation %s for output %s", o.PreAct, c)
	}
	if o.GELUGradAt != nil && (o.GELUGradAt.Len() != c.Len() || o.Heads != nil) {
		return shapeErr(rec, op, "GELU gradient at %s for output %s: want C's size, and no heads layout", o.GELUGradAt, c)
	}
	if o.Act != NoAct && o.Act != GELU {
		return shapeErr(rec, op, "unknown activation %q", o.Act)
	}
	rec.Device().CountFLOPs(2 * int64(batch) * int64(M) * int64(N) * int64(K))
	e := epilogue{Act: string(o.Act), Accumulate: o.Accumulate, Heads: heads}
	access := []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}
	bufs := []*gpu.Tensor{a, b, c}
	add := func(t *gpu.Tensor, acc gpu.Access) int {
		if t == nil {
			return 0
		}
		bufs = append(bufs, t)
		access = append(access, acc)
		return len(bufs)
	}
	e.Bias = add(o.Bias, gpu.Read)
	e.Scale = add(o.Scale, gpu.Read)
	e.PreAct = add(o.PreAct, gpu.ReadWrite)
	e.RowScale = add(o.RowScale, gpu.Read)
	e.GELUGradAt = add(o.GELUGradAt, gpu.Read)
	strideA, strideB := M*K, K*N
	if bBatch == 1 {
		strideB = 0
	}
	params := func(vec int) []uint32 {
		return []uint32{gpu.U32(M), gpu.U32(N), gpu.U32(K), gpu.U32(strideA / vec), gpu.U32(strideB / vec), gpu.U32(M * N)}
	}
	// The axis each operand is contiguous along, which vec4 reads run along.
	alongA, alongB := K, N
	if o.TransA {
		alongA = M
	}
	if o.TransB {
		alongB = K
	}
	if t == (Tiling{}) {
		t = DefaultTiling(rec.Device(), o, batch, M, K, N)
	}
	if t.Tile > 0 {
		vec := t.Vec && alongA%4 == 0 && alongB%4 == 0 && a.Off%16 == 0 && b.Off%16 == 0
		d := tiledData{Tile: t.Tile, BK: t.BK, Pad: 1, Fetches: t.Tile * t.BK / 16, Idx: seq(t.Tile), Contig: t.Contig, Spread: t.Spread, Prefetch: t.Prefetch,
			Vec: vec, TransA: o.TransA, TransB: o.TransB, epilogue: e}
		if t.Contig || vec {
			d.Pad = 4 // the A slice's k rows stay vec4-aligned
		}
		p := params(1)
		if vec {
			d.Fetches /= 4
			p = params(4)
		}
		bm := 16 * t.Tile
		if need := 4 * t.BK * (2*bm + d.Pad); need > int(rec.Device().Limits().MaxWorkgroupStorage) {
			return shapeErr(rec, op, "tiling %+v needs %d bytes of workgroup memory, over the device's %d", t, need, rec.Device().Limits().MaxWorkgroupStorage)
		}
		groups := [3]uint32{uint32((N + bm - 1) / bm), uint32((M + bm - 1) / bm), uint32(batch)}
		splits := 1
		if batch == 1 {
			splits = t.Split
			if splits == 0 {
				splits = splitK(int(groups[0]*groups[1]), M*N, K)
			}
		}
		if splits <= 1 {
			return rec.Dispatch(gpu.Kernel{Name: "matmul_tiled", Data: d, Access: access, Profile: mmProfile(batch, M, K, N, o)}, groups, p, bufs...)
		}
		return splitMatMul(rec, d, e, splits, groups, p, bufs, access, mmProfile(batch, M, K, N, o))
	}
	// matmul_vec4 can run it: B's vec4s need their axis a multiple of 4;
	// A's too, else it reads A as scalars.
	vec4, aScalar := alongB%4 == 0, alongA%4 != 0
	if bcast == bcastStorage || bcast == bcastWhenPays && bcastRowsPay(M, o) && rec.Device().BroadcastLoads() {
		if ran, err := bcastRows(rec, bufs, access, e, o, batch, bBatch, M, K, N, mmProfile(batch, M, K, N, o)); ran {
			return err
		}
	}
	if bcast != bcastNever && !o.TransA && (o.TransB && K%4 == 0 || !o.TransB && N%4 == 0) &&
		(bcast == bcastAlways || !vec4 || bcastPays(K, N)) {
		if plan, ok := planBcast(rec.Device().Limits(), batch, M, K); ok {
			return dispatchBcast(rec, plan, bufs, access, e, o.TransB, M, N, K, strideB/4, mmProfile(batch, M, K, N, o))
		}
	}
	if vec4 {
		t := mmTiles[b2i(o.TransA)][b2i(o.TransB)]
		if aScalar && N >= mmScalarAWide.TN*mmScalarAWide.WG {
			t = mmScalarAWide
		}
		type data struct {
			WG                   int
			Rows, Cols           []mmIdx
			RowGroups, ColGroups []int
			Us                   []int
			Step                 int
			AScalar              bool
			TransA, TransB       bool
			epilogue
		}
		d := data{WG: t.WG, Rows: mmIdxs(t.TM), Cols: mmIdxs(t.TN), RowGroups: seq(t.TM / 4), ColGroups: seq(t.TN / 4),
			Us: seq(4), Step: 4, AScalar: aScalar, TransA: o.TransA, TransB: o.TransB, epilogue: e}
		if !o.TransB && (o.TransA || aScalar) {
			// No vec4 runs along k, so one step covers one k.
			d.Us, d.Step = seq(1), 1
		}
		p := params(4)
		if aScalar {
			p[3] = gpu.U32(strideA)
		}
		groups := [3]uint32{uint32((N + t.TN*t.WG - 1) / (t.TN * t.WG)), uint32((M + t.TM - 1) / t.TM), uint32(batch)}
		return rec.Dispatch(gpu.Kernel{Name: "matmul_vec4", Data: d, Access: access, Profile: mmProfile(batch, M, K, N, o)}, groups, p, bufs...)
	}
	type data struct {
		TM, TN, WGX, WGY int
		TransA, TransB   bool
		epilogue
	}
	d := data{TM: mmTM, TN: mmTN, WGX: mmWGX, WGY: mmWGY, TransA: o.TransA, TransB: o.TransB, epilogue: e}
	groups := [3]uint32{
		uint32((N + mmTN*mmWGX - 1) / (mmTN * mmWGX)),
		uint32((M + mmTM*mmWGY - 1) / (mmTM * mmWGY)),
		uint32(batch),
	}
	return rec.Dispatch(gpu.Kernel{Name: "matmul", Data: d, Access: access, Profile: mmProfile(batch, M, K, N, o)}, groups, params(1), bufs...)
}

// tiledData is the template data of matmul_tiled (see shaders/matmul.wgsl).
type tiledData struct {
	Tile, BK, Pad, Fetches   int
	Idx                      []int
	Contig, Spread, Prefetch bool
	Vec, Split               bool
	TransA, TransB           bool
	epilogue
}

// splitK is how many parts the k range of an unbatched product of K deep
// and MN outputs in `groups` workgroups is cut into. Under 256 workgroups
// (two per multiprocessor of an H100), enough parts for about 512, each at
// least 512 deep so that the partial products outweigh the extra memory
// traffic, and at most 32 parts and 2^24 partial floats (64 MiB of
// scratch). Measured on an H100 (docs/gpu.md): ViT-S/14 weight gradients
// over 64 images 1.1-1.6x faster, 2056-row products 1.1-1.15x; 1024^3
// (256 workgroups) 0.93x split in two, so left whole.
func splitK(groups, MN, K int) int {
	const fewGroups, wantGroups, minDepth, maxParts, maxFloats = 256, 512, 512, 32, 1 << 24
	if groups >= fewGroups {
		return 1
	}
	return max(1, min((wantGroups+groups-1)/groups, K/minDepth, maxParts, maxFloats/MN))
}

// splitMatMul records an unbatched matmul_tiled (template data td, params p)
// as `splits` partial products over consecutive ranges of whole BK slices of
// k, written to the device's split-K scratch, and matmul_split_sum, which
// adds them up and applies the epilogue e.
func splitMatMul(rec *gpu.Recorder, td tiledData, e epilogue, splits int, groups [3]uint32, p []uint32, bufs []*gpu.Tensor, access []gpu.Access, label string) error {
	M, N, K := int(p[0]), int(p[1]), int(p[2])
	kSplit := ((K+splits-1)/splits + td.BK - 1) / td.BK * td.BK
	splits = (K + kSplit - 1) / kSplit
	partial, err := rec.Device().Scratch("matmul split-K", splits*M*N)
	if err != nil {
		return rec.Fail(fmt.Errorf("matmul: %w", err))
	}
	td.Split, td.epilogue = true, epilogue{}
	// Workgroup z writes slice z of the scratch: a batch of its own, over
	// the same A and B (strides 0). Params fields 11 and 12 are k_split and
	// splits (shaders/matmul.wgsl).
	sp := make([]uint32, 13)
	copy(sp, p)
	sp[3], sp[4], sp[11], sp[12] = 0, 0, gpu.U32(kSplit), gpu.U32(splits)
	groups[2] = uint32(splits)
	if err := rec.Dispatch(gpu.Kernel{Name: "matmul_tiled", Data: td, Access: access[:3], Profile: fmt.Sprintf("%s split%d", label, splits)},
		groups, sp, bufs[0], bufs[1], partial); err != nil {
		return err
	}
	sum := append([]*gpu.Tensor{partial, partial}, bufs[2:]...)
	sumAccess := append([]gpu.Access{gpu.Read, gpu.Read}, access[2:]...)
	return rec.Dispatch(gpu.Kernel{Name: "matmul_split_sum", Data: e, Access: sumAccess, Profile: label}, rec.Groups(M*N, 256), sp, sum...)
}

// mmProfile labels a matmul in profiles: [bBATCH ]MxKxN, then ta and tb for
// the transposes (bench kernels names its cases the same way).
func mmProfile(batch, M, K, N int, o MatMulOpts) string {
	s := fmt.Sprintf("%dx%dx%d", M, K, N)
	if batch > 1 {
		s = fmt.Sprintf("b%d %s", batch, s)
	}
	if o.TransA {
		s += " ta"
	}
	if o.TransB {
		s += " tb"
	}
	return s
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bcastPlan is how matmul_bcast covers A: windows of whole batches or, when
// one batch exceeds a uniform binding, of rows within each batch, and the
// rows per workgroup.
type bcastPlan struct {
	windows []bcastWindow
	tm      int
}

// bcastWindow is one dispatch: batches [batch0, batch0+batches), rows
// [rowLo, rowHi) of each.
type bcastWindow struct{ batch0, batches, rowLo, rowHi int }

// planBcast splits A [batch, M, K] into windows that fit the device's
// uniform binding: whole batches when one fits, else balanced row ranges of
// each batch. A window's binding starts on the uniform offset alignment up to
// align-1 floats before its data, so that much of each binding is reserved.
// ok is false when a single row is longer than a binding.
func planBcast(l gpu.Limits, batch, M, K int) (bcastPlan, bool) {
	capF := int(l.MaxUniformBinding/4)&^3 - int(l.UniformOffsetAlign/4) // floats of data per window
	if K > capF {
		return bcastPlan{}, false
	}
	var p bcastPlan
	if M*K <= capF {
		nb := capF / (M * K)
		for b0 := 0; b0 < batch; b0 += nb {
			p.windows = append(p.windows, bcastWindow{b0, min(nb, batch-b0), 0, M})
		}
		p.tm = tileRows(M)
		return p, true
	}
	// Rows per window: whole tiles when a tile fits, spread evenly. A
	// power-of-two tile may overhang the rows that fit, computing rows it
	// then drops; past an eighth of the tile (16 rows for the 10 that fit at
	// K 1536, 32 for 21 at K 768) tiles are instead at most bcastSplitTile
	// rows: that ran the K 1536 products of bench kernels (lavapipe) 1.3x
	// faster, while at K 1152 (14 rows in tiles of 16) and K 1024 (16) the
	// power of two was 1.05-1.2x faster than 10. The tile depends on K alone,
	// so one pipeline serves a layer whatever its rows.
	maxRows := capF / K
	p.tm = tileRows(min(M, maxRows))
	if over := p.tm - maxRows; over > 0 && 8*over > p.tm {
		p.tm = min(maxRows, bcastSplitTile)
	}
	rows := maxRows
	if maxRows >= p.tm {
		rows = maxRows / p.tm * p.tm
	}
	parts := (M + rows - 1) / rows
	if even := (M + parts - 1) / parts; even < rows {
		rows = min((even+p.tm-1)/p.tm*p.tm, maxRows)
	}
	for b := 0; b < batch; b++ {
		for lo := 0; lo < M; lo += rows {
			p.windows = append(p.windows, bcastWindow{b, 1, lo, min(lo+rows, M)})
		}
	}
	return p, true
}

// bcastPays says whether matmul_bcast beats matmul_vec4 for K deep
// products with N columns. Its uniform windows hold 16384 floats of A, so
// past K 64 a window is at most 128 rows, and a workgroup covers 32
// columns: with few columns a dispatch has too little work for its cost.
// Measured on lavapipe (2 cores, GFLOP/s, bcast against vec4): A 6400 rows,
// K 256 N 64 6.2 vs 10.5, K 128 N 64 7.3 vs 12.0, K 256 N 128 11.4 vs 13.8,
// K 128 N 128 10.8 vs 13.3; attention's q k^T, 512 x 50x16x50 4.3 vs 5.9,
// 1024 x 10x16x10 0.8 vs 2.2; but K 64 N 64 10.7 vs 8.6, K 64 N 192 14.8
// vs 11.4, ViT-S's q k^T (64 x 257x64x257) 13.3 vs 12.1, and ViT-S's
// linear layers (N 384 to 1536, K up to 1536) 1.15-1.5x faster.
func bcastPays(K, N int) bool { return N >= 192 || K <= 64 && N >= 64 }

// bcastSplitTile caps the rows per workgroup of matmul_bcast where a
// power-of-two tile would overhang a window by more than an eighth (see
// planBcast).
const bcastSplitTile = 10

// tileRows is the rows per workgroup for m rows: a power of two from 4 to
// 32, so that shapes which change every step (iBOT's masked patches, an IVF
// list's queries) reuse a few pipelines.
func tileRows(m int) int {
	tm := 4
	for tm < min(m, 32) {
		tm *= 2
	}
	return tm
}

// bcastData is the template data of matmul_bcast (see shaders/matmul.wgsl).
type bcastData struct {
	TM, WG, Window         int
	Rows                   []int
	Storage, AVec4, TransB bool
	epilogue
}

// dispatchBcast records one matmul_bcast dispatch per window of the plan.
// bufs[0] is A; each dispatch binds a window's view of it as a uniform.
func dispatchBcast(rec *gpu.Recorder, p bcastPlan, bufs []*gpu.Tensor, access []gpu.Access, e epilogue, transB bool, M, N, K, strideB4 int, profile string) error {
	a := bufs[0]
	access = append([]gpu.Access{gpu.Uniform}, access[1:]...)
	const wg = 8
	l := rec.Device().Limits()
	maxVec4 := int(l.MaxUniformBinding / 16)
	align := int(l.UniformOffsetAlign / 4)
	bufF := int(a.Buf.Size() / 4) // a multiple of the alignment (gpu.NewBuffer)
	for _, w := range p.windows {
		first := int(a.Off/4) + (w.batch0*M+w.rowLo)*K // in the buffer
		start := first / align * align
		n := first - start + ((w.batches-1)*M+w.rowHi-w.rowLo)*K
		// The binding: the smallest power-of-two number of vec4s (at least
		// 16, one browser alignment) holding the window, moved back from
		// the buffer's end if it would run past it; or the whole buffer.
		size := 16
		for size*4 < n && size < maxVec4 {
			size *= 2
		}
		size = min(size, maxVec4)
		if n > 4*size {
			return rec.Fail(fmt.Errorf("matmul: window %+v of A %s needs %d floats, over a uniform binding", w, a, n))
		}
		start = min(start, bufF-4*size)
		if start < 0 {
			start, size = 0, bufF/4
		}
		view := &gpu.Tensor{Buf: a.Buf, Off: uint64(start) * 4, Shape: []int{4 * size}}
		args := append([]*gpu.Tensor{view}, bufs[1:]...)
		tiles := (w.rowHi - w.rowLo + p.tm - 1) / p.tm
		d := bcastData{TM: p.tm, WG: wg, Window: size, Rows: seq(p.tm), AVec4: K%4 == 0 && a.Off%16 == 0, TransB: transB, epilogue: e}
		groups := [3]uint32{uint32(((N+3)/4 + wg - 1) / wg), uint32(w.batches * tiles), 1}
		params := []uint32{gpu.U32(M), gpu.U32(N), gpu.U32(K), 0, gpu.U32(strideB4), gpu.U32(M * N),
			gpu.U32(w.batch0), gpu.U32(w.rowLo), gpu.U32(w.rowHi), gpu.U32(tiles), gpu.U32(first - start)}
		if err := rec.Dispatch(gpu.Kernel{Name: "matmul_bcast", Data: d, Access: access, Profile: profile}, groups, params, args...); err != nil {
			return err
		}
	}
	return nil
}

// bcastRowsPay says whether MatMul runs a product through bcastRows on a
// device that broadcasts uniform loads: always where no operand needs
// transposing, else for at least 64 rows (the copy of K (M + N) floats is
// then under 1% of the product's work). With A in storage there are no
// windows, whose per-dispatch cost made bcastPays turn narrow products away.
// Measured on lavapipe from Mesa 26.1 (2 cores, GFLOP/s, best of three;
// MatMul before, then bcastRows): weight gradients dW = dY^T X at 2056
// tokens, 1152 x 2056 x 384 and 384 x 2056 x 1536, 5.0-5.6 and 4.4-4.8
// through matmul_vec4, 52-55 and 44-50 with both operands transposed (22-30
// and 22-25 with dY alone transposed, B then untransposed); y = x W^T at K
// 1536 (2056 x 1536 x 384) 25-32 in uniform windows, 40-54 in storage, at K
// 384 about equal; the demo's 6400 x 256 x 64 (B transposed) 23 against
// 44-46, its dW 256 x 6400 x 64 16 against 23-25, 6400 x 64 x 256 37-42
// against 37-38.
func bcastRowsPay(M int, o MatMulOpts) bool {
	return !o.TransA && o.TransB || M >= 64
}

// maxTransposed caps the floats of each operand bcastRows transposes into
// scratch: 4 MiB. Scratch grows in powers of two and keeps what it outgrew,
// so with 16 MiB a ViT-S/14 step took 42 MiB of it, over PyTorch's peak.
const maxTransposed = 1 << 20

// minChunk is the fewest tokens per chunk of a weight gradient: each chunk
// reads and writes all of C.
const minChunk = 32

// bcastRows records the product as matmul_bcast with A in a storage binding
// (Storage), one dispatch for all of it, after transposing into scratch
// whichever operand does not run along k: A when TransA (weight gradients),
// B unless TransB. (A kernel reading A^T as it is, four rows of one k as a
// vec4, ran the demo's step and ViT-S/14's weight gradients 5-15% slower
// than transposing first.) ran is false, with nothing recorded, where it
// cannot run: K not a multiple of 4, a grid or binding over the device's
// limits, an operand to transpose over maxTransposed floats that cannot go
// in chunks.
func bcastRows(rec *gpu.Recorder, bufs []*gpu.Tensor, access []gpu.Access, e epilogue, o MatMulOpts, batch, bBatch, M, K, N int, profile string) (ran bool, err error) {
	const wg = 8
	l := rec.Device().Limits()
	tm := tileRows(M)
	tiles := (M + tm - 1) / tm
	a, b := bufs[0], bufs[1]
	if K%4 != 0 || batch*tiles > int(l.MaxWorkgroupsPerDim) || a.Off%16 != 0 || b.Off%16 != 0 ||
		max(a.Bytes(), b.Bytes()) > l.MaxStorageBinding || batch > int(l.MaxWorkgroupsPerDim) {
		return false, nil
	}
	// Weight gradients take k (the tokens) in chunks that keep each
	// transposed operand under maxTransposed floats, the later chunks adding
	// into C.
	widest, copies := 0, 0 // the operands to transpose: copies of [K, widest] at most
	if o.TransA {
		widest, copies = M, batch
	}
	if !o.TransB {
		widest, copies = max(widest, N), max(copies, bBatch)
	}
	kc := K
	if copies*K*widest > maxTransposed {
		// Chunks add up raw products, and start where a storage binding may.
		plain := e == epilogue{Accumulate: e.Accumulate}
		step := int(l.StorageOffsetAlign) / 4
		kc = maxTransposed / widest / step * step
		if !o.TransA || o.TransB || copies > 1 || !plain || kc < max(minChunk, step) {
			return false, nil
		}
	}
	for k0 := 0; k0 < K; k0 += kc {
		k := min(kc, K-k0)
		ac, bc := a, b
		if kc < K {
			if ac, err = a.View(k0*M, k, M); err == nil {
				bc, err = b.View(k0*N, k, N)
			}
			if err != nil {
				return true, rec.Fail(err)
			}
		}
		if o.TransA {
			if ac, err = transposed(rec, "matmul A^T", ac, batch, k, M); err != nil {
				return true, err
			}
		}
		if !o.TransB {
			if bc, err = transposed(rec, "matmul B^T", bc, bBatch, k, N); err != nil {
				return true, err
			}
		}
		strideB4 := 0
		if bBatch > 1 {
			strideB4 = k * N / 4
		}
		ek := e
		ek.Accumulate = e.Accumulate || k0 > 0
		d := bcastData{TM: tm, WG: wg, Rows: seq(tm), Storage: true, AVec4: true, TransB: true, epilogue: ek}
		groups := [3]uint32{uint32(((N+3)/4 + wg - 1) / wg), uint32(batch * tiles), 1}
		params := []uint32{gpu.U32(M), gpu.U32(N), gpu.U32(k), 0, gpu.U32(strideB4), gpu.U32(M * N),
			0, 0, gpu.U32(M), gpu.U32(tiles), 0}
		args := append([]*gpu.Tensor{ac, bc}, bufs[2:]...)
		if err := rec.Dispatch(gpu.Kernel{Name: "matmul_bcast", Data: d, Access: access, Profile: profile}, groups, params, args...); err != nil {
			return true, err
		}
	}
	return true, nil
}

// transposeGroups is the fewest workgroups transposed splits its columns
// over (more when there are more groups of rows): on lavapipe (Mesa 26.1,
// 2 cores) a workgroup per 4 columns moved the demo's 6400 x 64 and 6400 x
// 256 in 0.7-0.9 and 2.8-3.2 ms, 25 workgroups each walking all columns
// (its rows read along) in 0.37 and 1.9 ms.
const transposeGroups = 8

// transposed records src [batch, rows, cols] transposed into the named
// scratch as [batch, cols, rows] and returns that.
func transposed(rec *gpu.Recorder, scratch string, src *gpu.Tensor, batch, rows, cols int) (*gpu.Tensor, error) {
	dst, err := rec.Device().Scratch(scratch, batch*rows*cols)
	if err != nil {
		return nil, rec.Fail(err)
	}
	if dst, err = dst.Reshape(batch, cols, rows); err != nil {
		return nil, rec.Fail(err)
	}
	vec4 := rows%4 == 0 && cols%4 == 0 && src.Off%16 == 0
	v := 1
	if vec4 {
		v = 4
	}
	rowGroups := (rows/v + 63) / 64
	runs := min(cols/v, max(1, (transposeGroups+rowGroups*batch-1)/(rowGroups*batch)))
	per := (cols/v + runs - 1) / runs
	runs = (cols/v + per - 1) / per
	groups := [3]uint32{uint32(rowGroups), uint32(runs), uint32(batch)}
	k := gpu.Kernel{Name: "transpose", Data: struct{ Vec4 bool }{vec4}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}, Profile: "transpose"}
	return dst, rec.Dispatch(k, groups, []uint32{gpu.U32(rows), gpu.U32(cols), gpu.U32(per)}, src, dst)
}
