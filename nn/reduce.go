package nn

import "github.com/webdino/webdino/gpu"

// SumRows records out[n] = sum_m x[m, n] over every leading axis of x (the
// bias gradient of a linear layer); with accumulate it adds to out.
func SumRows(rec *gpu.Recorder, out, x *gpu.Tensor, accumulate bool) error {
	const op = "sum_rows"
	if err := notNil(rec, op, []string{"out", "x"}, out, x); err != nil {
		return err
	}
	N := x.Dim(-1)
	if out.Len() != N {
		return shapeErr(rec, op, "x %s -> out %s: want %d outputs", x, out, N)
	}
	M := x.Len() / N
	k := gpu.Kernel{Name: "sum_rows", Data: struct{ Accumulate bool }{accumulate}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(N, 64), []uint32{gpu.U32(M), gpu.U32(N)}, x, out)
}
