package nn

import (
	"github.com/webdino/webdino/gpu"
)

// MatMulOpts selects transposes and the fused epilogue of MatMul.
type MatMulOpts struct {
	TransA, TransB bool
	Bias           *gpu.Tensor // [N], added to every row
	Act            Activation  // applied after the bias
	PreAct         *gpu.Tensor // if set, receives AB+bias (what the activation's backward needs)
	Scale          *gpu.Tensor // [N], multiplies the activated output (LayerScale)
	Accumulate     bool        // C += result instead of C = result (gradient accumulation, residuals)
}

// matmul tile shape: each invocation computes TM x TN outputs.
const (
	mmTM, mmTN   = 4, 4
	mmWGX, mmWGY = 16, 16
)

// MatMul records C = epilogue(op(A) op(B)) for every batch. A is [..., M, K]
// ([..., K, M] with TransA), B is [..., K, N] ([..., N, K] with TransB) or 2-D and
// shared by all batches, C is [..., M, N].
func MatMul(rec *gpu.Recorder, c, a, b *gpu.Tensor, o MatMulOpts) error {
	const op = "matmul"
	if err := notNil(rec, op, []string{"A", "B", "C"}, a, b, c); err != nil {
		return err
	}
	if len(a.Shape) < 2 || len(b.Shape) < 2 || len(c.Shape) < 2 {
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
	if K != Kb || c.Dim(-2) != M || c.Dim(-1) != N || c.Len() != batch*M*N || (bBatch != batch && bBatch != 1) {
		return shapeErr(rec, op, "A %s (transposed %v) x B %s (transposed %v) -> C %s: shapes do not agree",
			a, o.TransA, b, o.TransB, c)
	}
	if o.Bias != nil && o.Bias.Len() != N {
		return shapeErr(rec, op, "bias %s for %d columns", o.Bias, N)
	}
	if o.Scale != nil && o.Scale.Len() != N {
		return shapeErr(rec, op, "scale %s for %d columns", o.Scale, N)
	}
	if o.PreAct != nil && o.PreAct.Len() != c.Len() {
		return shapeErr(rec, op, "pre-activation %s for output %s", o.PreAct, c)
	}
	if o.Act != NoAct && o.Act != GELU {
		return shapeErr(rec, op, "unknown activation %q", o.Act)
	}
	type data struct {
		TM, TN, WGX, WGY    int
		TransA, TransB      bool
		Bias, Scale, PreAct int
		Act                 string
		Accumulate          bool
	}
	d := data{TM: mmTM, TN: mmTN, WGX: mmWGX, WGY: mmWGY, TransA: o.TransA, TransB: o.TransB, Act: string(o.Act), Accumulate: o.Accumulate}
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
	d.Bias = add(o.Bias, gpu.Read)
	d.Scale = add(o.Scale, gpu.Read)
	d.PreAct = add(o.PreAct, gpu.ReadWrite)
	strideB := K * N
	if bBatch == 1 {
		strideB = 0
	}
	groups := [3]uint32{
		uint32((N + mmTN*mmWGX - 1) / (mmTN * mmWGX)),
		uint32((M + mmTM*mmWGY - 1) / (mmTM * mmWGY)),
		uint32(batch),
	}
	params := []uint32{gpu.U32(M), gpu.U32(N), gpu.U32(K), gpu.U32(M * K), gpu.U32(strideB), gpu.U32(M * N)}
	return rec.Dispatch(gpu.Kernel{Name: "matmul", Data: d, Access: access}, groups, params, bufs...)
}
