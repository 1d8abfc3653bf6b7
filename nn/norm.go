package nn

import "github.com/webdino/webdino/gpu"

// partials is the number of row chunks whose per-column partial sums
// LayerNormBackward and LayerScaleBackward keep in their scratch tensor
// before adding them up (WGSL has no float atomics), for rows of D on d: 64
// on a CPU (lavapipe); on a GPU enough that chunks x D/4 columns make about
// 64k invocations, between 64 and 1024 chunks. A multiple of 64, so that the
// second output's block of scratch starts 256-byte aligned. (64 workgroups of 64
// invocations each walking 130 rows left an H100 mostly idle: 386 µs for
// LayerScale's gradient of a 8224 x 384 tensor, 14 µs of memory traffic.)
func partials(d *gpu.Device, D int) int {
	switch {
	case partialsOverride > 0:
		return partialsOverride
	case d.Info().IsCPU():
		return 64
	}
	return gpuPartials(D)
}

// gpuPartials is partials on a GPU.
func gpuPartials(D int) int { return min(1024, max(64, 262144/max(D, 1)/64*64)) }

// partialsOverride, when set (by tests), replaces partials' choice.
var partialsOverride int

// ScratchLen is the number of floats of scratch LayerNormBackward and
// LayerScaleBackward need on d for rows of D channels. One scratch tensor,
// in a buffer of its own, can serve every such call of a recording in turn
// (calls with fewer channels need no more).
func ScratchLen(d *gpu.Device, D int) int { return 2 * partials(d, D) * D }

// rowArgs checks that each tensor in ts holds one value per channel of x's
// last axis, or one per row where perRow says so; it returns the row count.
func rowArgs(rec *gpu.Recorder, op string, x *gpu.Tensor, names []string, ts []*gpu.Tensor, perRow []bool) (rows int, err error) {
	D := x.Dim(-1)
	rows = x.Len() / D
	for i, t := range ts {
		want := D
		what := "one per channel"
		if perRow[i] {
			want, what = rows, "one per row"
		}
		if t.Len() != want {
			return 0, shapeErr(rec, op, "x %s, %s %s: %s must have %d elements (%s)", x, names[i], t, names[i], want, what)
		}
	}
	return rows, nil
}

// LayerNorm records y = (x - mean) / sqrt(var + eps) * gamma + beta over the
// last axis of x (D channels), and saves each row's mean and rstd =
// 1/sqrt(var + eps) for LayerNormBackward. DINOv2 uses eps = 1e-6.
func LayerNorm(rec *gpu.Recorder, y, mean, rstd, x, gamma, beta *gpu.Tensor, eps float32) error {
	const op = "layernorm"
	names := []string{"y", "mean", "rstd", "gamma", "beta"}
	if err := notNil(rec, op, append([]string{"x"}, names...), x, y, mean, rstd, gamma, beta); err != nil {
		return err
	}
	if y.Len() != x.Len() {
		return shapeErr(rec, op, "x %s, y %s: y must match x", x, y)
	}
	rows, err := rowArgs(rec, op, x, names[1:], []*gpu.Tensor{mean, rstd, gamma, beta}, []bool{true, true, false, false})
	if err != nil {
		return err
	}
	D := x.Dim(-1)
	return rowDispatch(rec, op, rowKernel{Vec4: D%4 == 0}, rows, D, eps,
		[]gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite, gpu.ReadWrite}, x, gamma, beta, y, mean, rstd)
}

// LayerNormBackwardOpts are LayerNormBackward's scratch and accumulation flags.
type LayerNormBackwardOpts struct {
	Scratch *gpu.Tensor // at least ScratchLen(D) floats, overwritten
	// AccumulateDX adds to dx: in a pre-norm block dx is the residual stream's
	// gradient, which already holds the skip path's share.
	AccumulateDX bool
	// AccumulateParams adds to dgamma and dbeta (a norm applied more than once).
	AccumulateParams bool
}

// LayerNormBackward records the gradients of LayerNorm: dx from dy, and
// dgamma = sum over rows of dy * xhat, dbeta = sum over rows of dy, from the
// forward's x, gamma and saved mean and rstd. Workgroups sum their own rows
// into o.Scratch; SumRows then adds those partials up.
func LayerNormBackward(rec *gpu.Recorder, dx, dgamma, dbeta, dy, x, gamma, mean, rstd *gpu.Tensor, o LayerNormBackwardOpts) error {
	const op = "layernorm_backward"
	names := []string{"dy", "dx", "dgamma", "dbeta", "gamma", "mean", "rstd", "scratch"}
	if err := notNil(rec, op, append([]string{"x"}, names...), x, dy, dx, dgamma, dbeta, gamma, mean, rstd, o.Scratch); err != nil {
		return err
	}
	if dy.Len() != x.Len() || dx.Len() != x.Len() {
		return shapeErr(rec, op, "x %s, dy %s, dx %s: dy and dx must match x", x, dy, dx)
	}
	rows, err := rowArgs(rec, op, x, names[2:7], []*gpu.Tensor{dgamma, dbeta, gamma, mean, rstd}, []bool{false, false, false, true, true})
	if err != nil {
		return err
	}
	D := x.Dim(-1)
	if need := ScratchLen(rec.Device(), D); o.Scratch.Len() < need {
		return shapeErr(rec, op, "scratch %s: want at least %d elements for D = %d", o.Scratch, need, D)
	}
	k := rowKernel{Vec4: D%4 == 0, Accumulate: o.AccumulateDX}
	if err := rowDispatch(rec, op, k, rows, D, 0, []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite},
		dy, x, gamma, mean, rstd, dx); err != nil {
		return err
	}
	parts := partials(rec.Device(), D)
	rpw, groups := rowGrid(rows, parts, 1)
	pk := gpu.Kernel{Name: "layernorm_param_grads", Data: rowKernel{WG: colWG, Vec4: D%4 == 0},
		Access: []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}}
	params := []uint32{gpu.U32(rows), gpu.U32(D), gpu.U32(rpw), gpu.U32(parts)}
	if err := rec.Dispatch(pk, colGroups(D, groups), params, dy, x, mean, rstd, o.Scratch); err != nil {
		return err
	}
	return sumPartials(rec, o.Scratch, parts, groups, D, o.AccumulateParams, dgamma, dbeta)
}

// colWG is the workgroup size of the kernels whose lanes own columns and
// loop over a chunk of rows (the parameter gradients of LayerNorm and
// LayerScale); they have no barriers, so one size suits every device.
const colWG = 64

// colGroups is the grid of those kernels for rows of D: workgroups of colWG
// columns (vec4s when D % 4 == 0) along x, one per chunk of rows along y.
// (One workgroup per chunk, its lanes looping over the columns, ran them
// 10-25% slower on lavapipe.)
func colGroups(D, chunks int) [3]uint32 {
	cols := D
	if D%4 == 0 {
		cols = D / 4
	}
	return [3]uint32{uint32((cols + colWG - 1) / colWG), uint32(chunks), 1}
}

// sumPartials adds up the groups rows of partial sums that a kernel left in
// consecutive [parts, D] blocks of scratch, one block per output.
func sumPartials(rec *gpu.Recorder, scratch *gpu.Tensor, parts, groups, D int, accumulate bool, outs ...*gpu.Tensor) error {
	for i, out := range outs {
		part, err := scratch.View(i*parts*D, groups, D)
		if err != nil {
			return rec.Fail(err)
		}
		if err := SumRows(rec, out, part, accumulate); err != nil {
			return err
		}
	}
	return nil
}

// Softmax records y = softmax(x / T) over the last axis of x, subtracting
// each row's max first. T = 1 is the plain softmax.
func Softmax(rec *gpu.Recorder, y, x *gpu.Tensor, T float32) error {
	const op = "softmax"
	if err := notNil(rec, op, []string{"y", "x"}, y, x); err != nil {
		return err
	}
	if y.Len() != x.Len() || y.Dim(-1) != x.Dim(-1) {
		return shapeErr(rec, op, "x %s, y %s: y must match x", x, y)
	}
	if !(T > 0) {
		return shapeErr(rec, op, "temperature %g: must be positive", T)
	}
	return rowDispatch(rec, op, rowKernel{Vec4: x.Dim(-1)%4 == 0}, x.Len()/x.Dim(-1), x.Dim(-1), 1/T, []gpu.Access{gpu.Read, gpu.ReadWrite}, x, y)
}

// SoftmaxBackward records dx = y * (dy - sum(dy * y)) / T per row, from the
// forward's output y.
func SoftmaxBackward(rec *gpu.Recorder, dx, dy, y *gpu.Tensor, T float32) error {
	const op = "softmax_backward"
	if err := notNil(rec, op, []string{"dx", "dy", "y"}, dx, dy, y); err != nil {
		return err
	}
	if dx.Len() != y.Len() || dy.Len() != y.Len() || dx.Dim(-1) != y.Dim(-1) || dy.Dim(-1) != y.Dim(-1) {
		return shapeErr(rec, op, "y %s, dy %s, dx %s: dy and dx must match y", y, dy, dx)
	}
	if !(T > 0) {
		return shapeErr(rec, op, "temperature %g: must be positive", T)
	}
	return rowDispatch(rec, op, rowKernel{Vec4: y.Dim(-1)%4 == 0}, y.Len()/y.Dim(-1), y.Dim(-1), 1/T, []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}, dy, y, dx)
}

// L2Normalize records y = x / max(||x||, eps) per row of x and saves each
// row's norm ||x|| (for L2NormalizeBackward; it is also the RowL2 reduction).
func L2Normalize(rec *gpu.Recorder, y, norm, x *gpu.Tensor, eps float32) error {
	const op = "l2_normalize"
	if err := notNil(rec, op, []string{"y", "norm", "x"}, y, norm, x); err != nil {
		return err
	}
	if y.Len() != x.Len() {
		return shapeErr(rec, op, "x %s, y %s: y must match x", x, y)
	}
	rows, err := rowArgs(rec, op, x, []string{"norm"}, []*gpu.Tensor{norm}, []bool{true})
	if err != nil {
		return err
	}
	return rowDispatch(rec, op, rowKernel{}, rows, x.Dim(-1), eps, []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite}, x, y, norm)
}

// L2NormalizeBackward records dx (+)= (dy - y * sum(dy * y)) / ||x|| per row
// from the forward's y and norm (dx = dy / eps where the eps clamp was active).
func L2NormalizeBackward(rec *gpu.Recorder, dx, dy, y, norm *gpu.Tensor, eps float32, accumulate bool) error {
	const op = "l2_normalize_backward"
	if err := notNil(rec, op, []string{"dx", "dy", "y", "norm"}, dx, dy, y, norm); err != nil {
		return err
	}
	if dx.Len() != y.Len() || dy.Len() != y.Len() {
		return shapeErr(rec, op, "y %s, dy %s, dx %s: dy and dx must match y", y, dy, dx)
	}
	rows, err := rowArgs(rec, op, y, []string{"norm"}, []*gpu.Tensor{norm}, []bool{true})
	if err != nil {
		return err
	}
	return rowDispatch(rec, op, rowKernel{Accumulate: accumulate}, rows, y.Dim(-1), eps, []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}, dy, y, norm, dx)
}
