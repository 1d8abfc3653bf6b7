package nn

import (
	"github.com/webdino/webdino/gpu"
)

// SinkhornScratchLen is the number of floats of scratch SinkhornKnopp needs
// for B samples of K prototypes: one scaling factor per prototype and one
// per sample.
func SinkhornScratchLen(B, K int) int { return K + B }

// SinkhornKnopp records DINOv2's Sinkhorn-Knopp teacher centering of teacher
// logits [B, K] into probabilities q [B, K]. In the reference's layout,
// with Q = exp(t / temp) transposed to [K, B]:
//
//	Q /= sum(Q)
//	iters times: Q[k, :] /= sum_b Q[k, b] * K  (each prototype gets mass 1/K)
//	             Q[:, b] /= sum_k Q[k, b] * B  (each sample gets mass 1/B)
//	Q *= B, transposed back
//
// so each row of q sums to 1. The recipe uses iters = 3.
//
// Before exp each prototype's logits are shifted by their maximum over the
// samples, the column max of logits. That changes nothing: a factor per
// prototype is divided out by the first prototype normalisation (and so is
// the first global normalisation, which is therefore skipped). A global max
// would not be safe: at temp 0.04 a prototype whose logits all sit more than
// about 3.5 below the batch's maximum underflows (exp(-88) is the smallest
// normal f32) to a zero column and 0/0. A max per sample would change the
// result, as the first prototype sums mix samples. What remains is a sample
// whose logits all sit more than 87 temp below every prototype's maximum:
// its row underflows to zeros and gives NaN (the NaN check of a training
// step catches it). Cosine logits with the head's norm g near 1 span at most
// 2 < 87 * 0.04.
//
// The kernels keep exp(...) in q and update only the scaling vectors, one
// sweep over q per axis and iteration; scratch holds
// SinkhornScratchLen(B, K) floats. q, logits and scratch must be in three
// different buffers. The teacher gets no gradient, so there is no backward.
func SinkhornKnopp(rec *gpu.Recorder, q, logits, scratch *gpu.Tensor, temp float32, iters int) error {
	const op = "sinkhorn_knopp"
	if err := notNil(rec, op, []string{"q", "logits", "scratch"}, q, logits, scratch); err != nil {
		return err
	}
	B, K := rowsOf(logits)
	if q.Len() != logits.Len() || q.Dim(-1) != K {
		return shapeErr(rec, op, "logits %s -> q %s: shapes differ", logits, q)
	}
	if scratch.Len() < SinkhornScratchLen(B, K) {
		return shapeErr(rec, op, "scratch %s: want at least %d elements for %d x %d logits", scratch, SinkhornScratchLen(B, K), B, K)
	}
	if !(temp > 0) {
		return shapeErr(rec, op, "temperature %g must be positive", temp)
	}
	if iters < 1 {
		return shapeErr(rec, op, "%d iterations, want at least 1", iters)
	}
	cols := rec.Groups(K, 64)
	colParams := []uint32{gpu.U32(B), gpu.U32(K), gpu.U32(K), gpu.F32(1 / temp)}
	wg, lanes := sinkhornLayout(rec.Device(), K)
	rpw, groups := rowGrid(B, maxRowGroups, wg/lanes)
	rows := gpu.Kernel{Name: "sinkhorn_rows", Data: rowKernel{WG: wg, Lanes: lanes}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	rowParams := []uint32{gpu.U32(B), gpu.U32(K), gpu.U32(rpw), gpu.U32(K)}
	for it := 0; it < iters; it++ {
		var err error
		if it == 0 {
			k := gpu.Kernel{Name: "sinkhorn_cols", Data: struct{ Exp bool }{true}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
			err = rec.Dispatch(k, cols, colParams, logits, q, scratch)
		} else {
			k := gpu.Kernel{Name: "sinkhorn_cols", Data: struct{ Exp bool }{false}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
			err = rec.Dispatch(k, cols, colParams, q, scratch)
		}
		if err != nil {
			return err
		}
		if err := rec.Dispatch(rows, [3]uint32{uint32(groups), 1, 1}, rowParams, q, scratch); err != nil {
			return err
		}
	}
	k := gpu.Kernel{Name: "sinkhorn_apply", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, cols, colParams[:3], scratch, q)
}

// sinkhornLayout is the row layout of the per-sample sweep. It reads two
// streams, q and the prototype factors, and on a CPU device one lane per row
// was fastest even for K = 65536 (64x65536, 10 iterations: 120-126 ms
// against 197-213 ms with rowLayout's 8 lanes per long row).
func sinkhornLayout(d *gpu.Device, K int) (wg, lanes int) {
	if rowLayoutOverride == nil && d.Info().IsCPU() {
		return 8, 1
	}
	return rowLayout(d, K)
}
