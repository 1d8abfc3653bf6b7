package nn

import (
	"fmt"
	"math"

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
	sk, err := newSinkhorn(rec, q, logits, scratch, temp, iters, false)
	if err != nil {
		return err
	}
	for it := 0; it < iters; it++ {
		if err := sk.cols(rec, it == 0, false); err != nil {
			return err
		}
		if err := sk.rows(rec); err != nil {
			return err
		}
	}
	return sk.apply(rec)
}

// Reducer combines vectors across data-parallel replicas, leaving the same
// result on every replica (dist.Group is one).
type Reducer interface {
	AllReduceSum(x []float32) error
	AllReduceMax(x []float32) error
}

// SinkhornKnoppAcross is SinkhornKnopp over the samples of every replica of
// r: logits [B, K] are this replica's B samples, and each prototype's mass
// 1/K is shared among all replicas' samples, as the reference's distributed
// Sinkhorn-Knopp. The column maxima and, in every iteration, the column sums
// are combined through r, so it records and submits its own work: 2 + iters
// submissions on dev after everything submitted before. Per-sample
// normalisations stay local and leave out the factor B (see sinkhorn_rows),
// so no replica needs another's B.
func SinkhornKnoppAcross(dev *gpu.Device, r Reducer, q, logits, scratch *gpu.Tensor, temp float32, iters int) error {
	rec := dev.Record()
	sk, err := newSinkhorn(rec, q, logits, scratch, temp, iters, true)
	if err != nil {
		return err
	}
	u, err := scratch.View(0, sk.K)
	if err != nil {
		return err
	}
	// combine reads the replica's column statistics from u, combines them
	// across replicas and writes f of them back.
	combine := func(rec *gpu.Recorder, all func([]float32) error, f func(float32) float32) error {
		if err := rec.Submit(); err != nil {
			return err
		}
		v, err := dev.Read(u)
		if err != nil {
			return err
		}
		if err := all(v); err != nil {
			return fmt.Errorf("sinkhorn_knopp across replicas: %w", err)
		}
		for i := range v {
			v[i] = f(v[i])
		}
		return dev.Write(u, v)
	}
	k := gpu.Kernel{Name: "sinkhorn_colmax", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	if err := rec.Dispatch(k, sk.grid, sk.colParams[:2], logits, scratch); err != nil {
		return err
	}
	if err := combine(rec, r.AllReduceMax, func(m float32) float32 { return m }); err != nil {
		return err
	}
	K := float32(sk.K)
	rec = dev.Record()
	for it := 0; it < iters; it++ {
		// Each sample sweep shares a recording with the next prototype
		// sweep (or the final scaling).
		if err := sk.cols(rec, it == 0, true); err != nil {
			return err
		}
		if err := combine(rec, r.AllReduceSum, func(sum float32) float32 { return 1 / (K * sum) }); err != nil {
			return err
		}
		rec = dev.Record()
		if err := sk.rows(rec); err != nil {
			return err
		}
	}
	if err := sk.apply(rec); err != nil {
		return err
	}
	return rec.Submit()
}

// sinkhornOp holds one Sinkhorn-Knopp's checked arguments and kernel layout.
type sinkhornOp struct {
	q, logits, scratch *gpu.Tensor
	K                  int
	grid               [3]uint32
	colParams          []uint32
	applyParams        []uint32
	rowKernel          gpu.Kernel
	rowParams          []uint32
	rowGroups          int
}

func newSinkhorn(rec *gpu.Recorder, q, logits, scratch *gpu.Tensor, temp float32, iters int, across bool) (*sinkhornOp, error) {
	const op = "sinkhorn_knopp"
	if err := notNil(rec, op, []string{"q", "logits", "scratch"}, q, logits, scratch); err != nil {
		return nil, err
	}
	B, K := rowsOf(logits)
	if q.Len() != logits.Len() || q.Dim(-1) != K {
		return nil, shapeErr(rec, op, "logits %s -> q %s: shapes differ", logits, q)
	}
	if scratch.Len() < SinkhornScratchLen(B, K) {
		return nil, shapeErr(rec, op, "scratch %s: want at least %d elements for %d x %d logits", scratch, SinkhornScratchLen(B, K), B, K)
	}
	if !(temp > 0) {
		return nil, shapeErr(rec, op, "temperature %g must be positive", temp)
	}
	if iters < 1 {
		return nil, shapeErr(rec, op, "%d iterations, want at least 1", iters)
	}
	wg, lanes := sinkhornLayout(rec.Device(), K)
	rpw, groups := rowGrid(B, maxRowGroups, wg/lanes)
	n := float32(B)
	if across {
		n = 1
	}
	return &sinkhornOp{
		q: q, logits: logits, scratch: scratch, K: K,
		grid:        rec.Groups(K, 64),
		colParams:   []uint32{gpu.U32(B), gpu.U32(K), gpu.U32(K), gpu.F32(1 / temp)},
		applyParams: []uint32{gpu.U32(B), gpu.U32(K), gpu.U32(K), gpu.F32(n)},
		rowKernel:   gpu.Kernel{Name: "sinkhorn_rows", Data: rowKernel{WG: wg, Lanes: lanes}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}},
		rowParams:   []uint32{gpu.U32(B), gpu.U32(K), gpu.U32(rpw), gpu.U32(K), gpu.F32(n)},
		rowGroups:   groups,
	}, nil
}

// cols records the prototype sweep: u, or with across the column sums.
func (sk *sinkhornOp) cols(rec *gpu.Recorder, first, across bool) error {
	data := struct{ Exp, Across bool }{first, across}
	if first {
		k := gpu.Kernel{Name: "sinkhorn_cols", Data: data, Access: []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
		return rec.Dispatch(k, sk.grid, sk.colParams, sk.logits, sk.q, sk.scratch)
	}
	k := gpu.Kernel{Name: "sinkhorn_cols", Data: data, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, sk.grid, sk.colParams, sk.q, sk.scratch)
}

// rows records the sample sweep: v.
func (sk *sinkhornOp) rows(rec *gpu.Recorder) error {
	return rec.Dispatch(sk.rowKernel, [3]uint32{uint32(sk.rowGroups), 1, 1}, sk.rowParams, sk.q, sk.scratch)
}

// apply records q = B e u v.
func (sk *sinkhornOp) apply(rec *gpu.Recorder) error {
	k := gpu.Kernel{Name: "sinkhorn_apply", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, sk.grid, sk.applyParams, sk.scratch, sk.q)
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

// SinkhornKnoppAbsent takes a replica without samples (no masked patch this
// step) through the collectives of the other replicas' SinkhornKnoppAcross
// over K prototypes.
func SinkhornKnoppAbsent(r Reducer, K, iters int) error {
	v := make([]float32, K)
	for i := range v {
		v[i] = float32(math.Inf(-1))
	}
	if err := r.AllReduceMax(v); err != nil {
		return fmt.Errorf("sinkhorn_knopp across replicas: %w", err)
	}
	for it := 0; it < iters; it++ {
		clear(v)
		if err := r.AllReduceSum(v); err != nil {
			return fmt.Errorf("sinkhorn_knopp across replicas: %w", err)
		}
	}
	return nil
}
