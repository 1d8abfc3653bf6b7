package nn

import "github.com/webdino/webdino/gpu"

// GatherRows records y[m, :] = x[idx[m], :] for x [R, D] and idx [M] row
// indices (a u32 tensor, uploaded with dev.WriteU32); y holds M rows of D.
// iBOT uses it to pick the masked patch tokens out of [tokens, D]. An index
// of R or more gives a row of zeros.
func GatherRows(rec *gpu.Recorder, y, x, idx *gpu.Tensor) error {
	const op = "gather_rows"
	if err := notNil(rec, op, []string{"y", "x", "idx"}, y, x, idx); err != nil {
		return err
	}
	R, D, err := rowIndexArgs(rec, op, x, y, idx, "x", "y")
	if err != nil {
		return err
	}
	n := y.Len()
	k := gpu.Kernel{Name: "gather_rows", Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, eltGroups(n), []uint32{gpu.U32(n), gpu.U32(D), gpu.U32(R)}, x, idx, y)
}

// ScatterRowsAdd records the backward of GatherRows: dx [R, D] (set to zero
// first unless accumulate) gets dy[m, :] added to row idx[m]. The indices
// must be distinct (a mask's positions are), which is what lets the kernel
// add without atomics; nothing checks it, and with a repeated index one of
// the additions to that row may be lost. Indices of R or more are skipped.
func ScatterRowsAdd(rec *gpu.Recorder, dx, dy, idx *gpu.Tensor, accumulate bool) error {
	const op = "scatter_rows_add"
	if err := notNil(rec, op, []string{"dx", "dy", "idx"}, dx, dy, idx); err != nil {
		return err
	}
	R, D, err := rowIndexArgs(rec, op, dx, dy, idx, "dx", "dy")
	if err != nil {
		return err
	}
	if !accumulate {
		if err := Fill(rec, dx, 0); err != nil {
			return err
		}
	}
	n := dy.Len()
	k := gpu.Kernel{Name: "scatter_rows_add", Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, eltGroups(n), []uint32{gpu.U32(n), gpu.U32(D), gpu.U32(R)}, dy, idx, dx)
}

// rowIndexArgs checks a full tensor [R, D] against a gathered one of
// idx.Len() rows of D and returns R and D.
func rowIndexArgs(rec *gpu.Recorder, op string, full, part, idx *gpu.Tensor, fullName, partName string) (R, D int, err error) {
	R, D = rowsOf(full)
	if part.Dim(-1) != D || part.Len() != idx.Len()*D {
		return 0, 0, shapeErr(rec, op, "%s %s, idx %s, %s %s: %s must hold %d rows of %d", fullName, full, idx, partName, part, partName, idx.Len(), D)
	}
	return R, D, nil
}

// WeightedSum records out[0] = sum_i w[i] x[i] over the elements of x and w
// (same length). iBOT averages its per-patch losses per image over the
// image's masked patches and then over images: that is this sum with w[i] =
// 1 / (masked patches of i's image * images). One workgroup does it all, so
// it is meant for a few thousand elements.
func WeightedSum(rec *gpu.Recorder, out, x, w *gpu.Tensor) error {
	const op = "weighted_sum"
	if err := notNil(rec, op, []string{"out", "x", "w"}, out, x, w); err != nil {
		return err
	}
	if out.Len() != 1 || w.Len() != x.Len() {
		return shapeErr(rec, op, "x %s, w %s -> out %s: w must match x and out hold one element", x, w, out)
	}
	k := gpu.Kernel{Name: op, Data: rowKernel{WG: sumWG, Lanes: sumWG}, Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, [3]uint32{1, 1, 1}, []uint32{gpu.U32(x.Len())}, x, w, out)
}

// WeightedSumBackward records dx[i] (+)= w[i] dOut[0], which is also the
// per-row dLoss that SoftmaxCrossEntropyBackward takes.
func WeightedSumBackward(rec *gpu.Recorder, dx, dOut, w *gpu.Tensor, accumulate bool) error {
	const op = "weighted_sum_backward"
	if err := notNil(rec, op, []string{"dx", "dOut", "w"}, dx, dOut, w); err != nil {
		return err
	}
	if dOut.Len() != 1 || w.Len() != dx.Len() {
		return shapeErr(rec, op, "dx %s, w %s, dOut %s: w must match dx and dOut hold one element", dx, w, dOut)
	}
	k := gpu.Kernel{Name: op, Data: struct{ Accumulate bool }{accumulate}, Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}}
	n := dx.Len()
	return rec.Dispatch(k, eltGroups(n), []uint32{gpu.U32(n)}, dOut, w, dx)
}
