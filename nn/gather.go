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
