package nn

import (
	"github.com/webdino/webdino/gpu"
)

// SumRows records out[n] = sum_m x[m, n] over every leading axis of x (the
// bias gradient of a linear layer); with accumulate it adds to out.
func SumRows(rec *gpu.Recorder, out, x *gpu.Tensor, accumulate bool) error {
	return sumRows(rec, out, x, accumulate, sumRowsLanes(rec.Device()))
}

// sumRowsLanes is the invocations per column of sum_rows on d: 32 on a GPU
// (8 columns a workgroup), 0 on a CPU (one invocation per column, rows in
// order).
func sumRowsLanes(d *gpu.Device) int {
	if d.Info().IsCPU() {
		return 0
	}
	return 32
}

// sumRows is SumRows with lanes invocations per column (0: one, with the
// CPU form of the kernel).
func sumRows(rec *gpu.Recorder, out, x *gpu.Tensor, accumulate bool, lanes int) error {
	const op = "sum_rows"
	if err := notNil(rec, op, []string{"out", "x"}, out, x); err != nil {
		return err
	}
	N := x.Dim(-1)
	if out.Len() != N {
		return shapeErr(rec, op, "x %s -> out %s: want %d outputs", x, out, N)
	}
	M := x.Len() / N
	params := []uint32{gpu.U32(M), gpu.U32(N)}
	access := []gpu.Access{gpu.Read, gpu.ReadWrite}
	type data struct {
		Accumulate bool
		Lanes      int
		Vec4       bool
	}
	if cols := 256 / max(lanes, 1); lanes > 0 && (N+cols-1)/cols <= int(rec.Device().Limits().MaxWorkgroupsPerDim) {
		k := gpu.Kernel{Name: "sum_rows", Data: data{Accumulate: accumulate, Lanes: lanes}, Access: access}
		return rec.Dispatch(k, [3]uint32{uint32((N + cols - 1) / cols), 1, 1}, params, x, out)
	}
	vec4 := N%4 == 0 && x.Off%16 == 0 && out.Off%16 == 0
	perInvocation := 1
	if vec4 {
		perInvocation = 4
	}
	groups := rec.Groups(N/perInvocation, 64)
	chunks := sumRowsChunks(M, int(groups[0]*groups[1]))
	chunk := (M + chunks - 1) / chunks
	chunks = (M + chunk - 1) / chunk
	dst := out
	if chunks > 1 {
		part, err := rec.Device().Scratch("sum_rows chunks", chunks*N)
		if err != nil {
			return rec.Fail(err)
		}
		dst = part
	}
	groups[2] = uint32(chunks)
	k := gpu.Kernel{Name: "sum_rows", Data: data{Accumulate: accumulate && chunks == 1, Vec4: vec4}, Access: access}
	if err := rec.Dispatch(k, groups, append(params, gpu.U32(chunk)), x, dst); err != nil || chunks == 1 {
		return err
	}
	part, err := dst.View(0, chunks, N)
	if err != nil {
		return rec.Fail(err)
	}
	return sumRows(rec, out, part, accumulate, 0)
}

// sumRowsChunks is the row chunks the CPU form of sum_rows splits M rows
// into when the columns fill colGroups workgroups: about 8 workgroups in
// all, none under 512 rows. On lavapipe (Mesa 26.1, 2 cores) the demo's
// bias gradients of 6400 x 64 and 6400 x 256 took 0.3 and 0.7-0.8 ms with
// 4-8 chunks and four columns an invocation, against 1.0 and 5.6 ms in one
// pass of a column an invocation; 16 or 32 chunks were no faster.
func sumRowsChunks(M, colGroups int) int {
	return max(1, min(M/512, (8+colGroups-1)/colGroups))
}

// Row kernels (reductions, normalisations, softmax) give each workgroup a run
// of whole rows, WG/lanes rows at a time with lanes invocations striding each
// row, and reduce a row across its lanes. At most maxRowGroups workgroups:
// enough for a GPU to fill its cores, few enough that a CPU device pays
// little per workgroup.
const maxRowGroups = 256

// rowLayoutOverride, when set (by tests), replaces rowLayout's choice.
var rowLayoutOverride *[2]int

// rowLayout picks the workgroup size and the lanes per row for rows of D on
// device d. A CPU device (lavapipe, SwiftShader) runs a workgroup on one
// thread as batches of 8 SIMD lanes and pays dearly for barriers: there one
// lane per row (no reduction at all) was fastest for rows up to a few
// thousand (LayerNorm 8224x384: 9 ms against 23 ms with 8 lanes per row;
// softmax 1542x257: 1.4 against 3.6 ms), and 8 lanes, one SIMD batch, per row
// for long rows, where one lane per row leaves too few invocations (softmax
// 64x65536 with scalar loads: 30 against 41-54 ms). A GPU gets 32 lanes (a
// warp) per row and 8 rows per workgroup, or 256 lanes per row for long rows;
// the tests run every layout on lavapipe, but no GPU timed them yet.
func rowLayout(d *gpu.Device, D int) (wg, lanes int) {
	cpu := d.Info().IsCPU()
	switch {
	case rowLayoutOverride != nil:
		return rowLayoutOverride[0], rowLayoutOverride[1]
	case cpu && D < 4096:
		return 8, 1
	case cpu:
		return 8, 8
	case D >= 4096:
		return 256, 256
	}
	return 256, 32
}

// rowGrid splits rows over at most maxGroups workgroups: rpw rows each (a
// multiple of step, the rows a workgroup takes at once), in groups
// workgroups (the last may hold fewer).
func rowGrid(rows, maxGroups, step int) (rpw, groups int) {
	rpw = (rows + maxGroups - 1) / maxGroups
	rpw = (rpw + step - 1) / step * step
	return rpw, (rows + rpw - 1) / rpw
}

// rowKernel is the template data of the row kernels.
type rowKernel struct {
	WG, Lanes  int
	Vec4       bool   // rows are read as vec4 (D is a multiple of 4)
	Accumulate bool   // the output gradient is added to
	Op         string // reduce_rows: the reduction
}

// rowDispatch records row kernel name over rows of D with parameters (rows,
// D, rows per workgroup, f).
func rowDispatch(rec *gpu.Recorder, name string, k rowKernel, rows, D int, f float32, access []gpu.Access, bufs ...*gpu.Tensor) error {
	k.WG, k.Lanes = rowLayout(rec.Device(), D)
	rpw, groups := rowGrid(rows, maxRowGroups, k.WG/k.Lanes)
	params := []uint32{gpu.U32(rows), gpu.U32(D), gpu.U32(rpw), gpu.F32(f)}
	return rec.Dispatch(gpu.Kernel{Name: name, Data: k, Access: access}, [3]uint32{uint32(groups), 1, 1}, params, bufs...)
}

// same reports whether two tensors are the same view (an in-place call).
func same(a, b *gpu.Tensor) bool { return a.Buf == b.Buf && a.Off == b.Off }

// Reduction names a reduction along the last axis.
type Reduction string

const (
	RowSum  Reduction = "sum"
	RowMean Reduction = "mean"
	RowMax  Reduction = "max"
	RowL2   Reduction = "l2" // Euclidean norm
)

// ReduceRows records out[r] = op(x[r, :]) over the last axis of x; out has
// one element per row.
func ReduceRows(rec *gpu.Recorder, out, x *gpu.Tensor, op Reduction) error {
	const name = "reduce_rows"
	if err := notNil(rec, name, []string{"out", "x"}, out, x); err != nil {
		return err
	}
	if op != RowSum && op != RowMean && op != RowMax && op != RowL2 {
		return shapeErr(rec, name, "unknown reduction %q", op)
	}
	D := x.Dim(-1)
	rows := x.Len() / D
	if out.Len() != rows {
		return shapeErr(rec, name, "x %s -> out %s: want %d outputs, one per row", x, out, rows)
	}
	return rowDispatch(rec, name, rowKernel{Op: string(op)}, rows, D, 0, []gpu.Access{gpu.Read, gpu.ReadWrite}, x, out)
}

// ReduceRowsBackward records dx (+)= d out / d x * dy for a sum, mean or L2
// row reduction: dy broadcast along each row, divided by D for the mean, times
// x / out for the norm (x and out, the forward's input and output, are only
// read for RowL2 and may be nil otherwise). The max has no backward here.
func ReduceRowsBackward(rec *gpu.Recorder, dx, dy, x, out *gpu.Tensor, op Reduction, accumulate bool) error {
	const name = "reduce_rows_backward"
	if err := notNil(rec, name, []string{"dx", "dy"}, dx, dy); err != nil {
		return err
	}
	D := dx.Dim(-1)
	rows := dx.Len() / D
	if dy.Len() != rows {
		return shapeErr(rec, name, "dx %s, dy %s: want %d gradients, one per row", dx, dy, rows)
	}
	scale := float32(1)
	switch op {
	case RowSum:
	case RowMean:
		scale = 1 / float32(D)
	case RowL2:
		if err := notNil(rec, name, []string{"x", "out"}, x, out); err != nil {
			return err
		}
		if x.Len() != dx.Len() || out.Len() != rows {
			return shapeErr(rec, name, "dx %s, x %s, out %s: x must match dx and out hold one norm per row", dx, x, out)
		}
	default:
		return shapeErr(rec, name, "no backward for reduction %q", op)
	}
	return broadcastRows(rec, dx, dy, x, out, D, scale, op == RowL2, accumulate)
}

func broadcastRows(rec *gpu.Recorder, dx, dy, x, norm *gpu.Tensor, D int, scale float32, l2, accumulate bool) error {
	access := []gpu.Access{gpu.Read, gpu.ReadWrite}
	bufs := []*gpu.Tensor{dy, dx}
	if l2 {
		access = append(access, gpu.Read, gpu.Read)
		bufs = append(bufs, x, norm)
	}
	k := gpu.Kernel{Name: "broadcast_rows", Data: struct{ L2, Accumulate bool }{l2, accumulate}, Access: access}
	n := dx.Len()
	return rec.Dispatch(k, eltGroups(n), []uint32{gpu.U32(n), gpu.U32(D), gpu.F32(scale)}, bufs...)
}

// sumWG is the workgroup size of Sum.
const sumWG = 256

// Sum records out[0] = scale * (sum of all elements of x), e.g. a loss
// averaged over samples. One workgroup does it all: meant for losses and
// statistics, not for tensors of many millions of elements.
func Sum(rec *gpu.Recorder, out, x *gpu.Tensor, scale float32) error {
	const name = "sum"
	if err := notNil(rec, name, []string{"out", "x"}, out, x); err != nil {
		return err
	}
	if out.Len() != 1 {
		return shapeErr(rec, name, "out %s: want a single element", out)
	}
	k := gpu.Kernel{Name: "sum_all", Data: rowKernel{WG: sumWG, Lanes: sumWG}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, [3]uint32{1, 1, 1}, []uint32{gpu.U32(x.Len()), gpu.F32(scale)}, x, out)
}

// SumBackward records dx (+)= scale * dy[0] for every element of dx.
func SumBackward(rec *gpu.Recorder, dx, dy *gpu.Tensor, scale float32, accumulate bool) error {
	const name = "sum_backward"
	if err := notNil(rec, name, []string{"dx", "dy"}, dx, dy); err != nil {
		return err
	}
	if dy.Len() != 1 {
		return shapeErr(rec, name, "dy %s: want a single element", dy)
	}
	return broadcastRows(rec, dx, dy, nil, nil, dx.Len(), scale, false, accumulate)
}
