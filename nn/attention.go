package nn

import "github.com/webdino/webdino/gpu"

// AttnTensors are the per-head tensors of one attention call: Q, K and V
// [B, H, T, Dh], views of QKV, which the qkv Linear writes through
// SplitQKV; and either Scores and Probs [B, H, T, T] (composed attention) or
// LSE [B, H, T] (fused attention).
//
// Composed attention is batched matmuls and a row softmax, so every step runs
// on the library's most tuned kernels, and heads move between layouts inside
// the products' stores (HeadsLayout), not in kernels of their own. Memory: a
// layer keeps Q, K and V (3*B*T*D floats) for its backward; Scores and Probs
// (B*H*T*T floats each) are scratch that every layer of a network may share,
// since the backward recomputes the probabilities from Q and K. The T x T
// matrices therefore exist for one layer at a time; after a forward, Probs
// holds the last layer's (attention maps read it).
//
// Fused attention (attention.wgsl) stores no T x T matrix at all: each layer
// keeps its rows' log-sum-exp LSE (B*H*T floats), from which the backward
// rebuilds the probabilities. Where it runs faster is AttentionFuses's call.
type AttnTensors struct {
	QKV, Q, K, V  *gpu.Tensor
	Scores, Probs *gpu.Tensor
	LSE           *gpu.Tensor
}

// NewAttnTensors allocates the tensors of an attention over B images of T
// tokens with H heads of Dh, composed or fused, through alloc (which may
// record the first error and return nil; the caller checks it).
func NewAttnTensors(alloc func(shape ...int) *gpu.Tensor, B, T, H, Dh int, fused bool) AttnTensors {
	var a AttnTensors
	if fused {
		a.LSE = alloc(B, H, T)
	} else {
		a.Scores, a.Probs = alloc(B, H, T, T), alloc(B, H, T, T)
	}
	a.setQKV(alloc, B, T, H, Dh)
	return a
}

// AttentionFuses reports whether attention over T tokens with heads of Dh
// runs fused on d, for training (backward) or inference. Dh must be a
// multiple of 4, and d a CPU whose loads at a workgroup-uniform address cost
// one load (the kernels read the other side's rows so). There, in bench
// kernels on lavapipe (Mesa 26, 2 cores), forward and backward fused ran
// 2.3x the composed kernels' speed at the demo's 50 tokens (heads of 16),
// 1.15x at 129 tokens and 1.0x at 257 (heads of 64); the forward alone 2.6x
// at 50 tokens (1.4x with heads of 64) but 0.86x at 129 and 257, where
// a row's query and accumulator spill from the CPU's registers. So
// inference fuses up to 64 tokens. GPUs keep the composed kernels, which
// are tuned there and not yet measured against the fused ones.
func AttentionFuses(d *gpu.Device, T, Dh int, backward bool) bool {
	return Dh%4 == 0 && (backward || T <= 64) && d.Info().IsCPU() && d.BroadcastLoads()
}

// setQKV allocates QKV and views Q, K and V in it, PartStride apart.
func (a *AttnTensors) setQKV(alloc func(shape ...int) *gpu.Tensor, B, T, H, Dh int) {
	stride := PartStride(B*T, H*Dh)
	if a.QKV = alloc(2*stride + B*T*H*Dh); a.QKV == nil {
		return
	}
	for i, v := range []**gpu.Tensor{&a.Q, &a.K, &a.V} {
		*v, _ = a.QKV.View(i*stride, B, H, T, Dh) // in range by construction
	}
}

// WithScratch returns a copy of a for another layer: new Q, K and V (and
// LSE) from alloc, the scratch Scores and Probs shared with a.
func (a AttnTensors) WithScratch(alloc func(shape ...int) *gpu.Tensor) AttnTensors {
	b := a
	if a.Q != nil {
		B, H, T, Dh := a.Q.Dim(0), a.Q.Dim(1), a.Q.Dim(2), a.Q.Dim(3)
		b.setQKV(alloc, B, T, H, Dh)
		if a.LSE != nil {
			b.LSE = alloc(B, H, T)
		}
	}
	return b
}

// SplitQKV is the layout through which the qkv Linear's output [B T, 3D]
// goes to a.QKV (MatMulOpts.Heads).
func (a AttnTensors) SplitQKV() *HeadsLayout {
	return &HeadsLayout{T: a.Q.Dim(2), H: a.Q.Dim(1), Dh: a.Q.Dim(3), Parts: 3}
}

// AttnGrads are AttentionBackward's inputs and scratch: DOut, dL/d(output)
// per head [B, H, T, Dh], which the projection's input gradient [B T, D]
// writes through SplitDOut; DProbs [B, H, T, T] (composed) or Delta
// [B, H, T] (fused: each row's sum of dL/dP times P).
type AttnGrads struct{ DOut, DProbs, Delta *gpu.Tensor }

// NewAttnGrads allocates AttnGrads through alloc, as NewAttnTensors.
func NewAttnGrads(alloc func(shape ...int) *gpu.Tensor, B, T, H, Dh int, fused bool) AttnGrads {
	if fused {
		return AttnGrads{DOut: alloc(B, H, T, Dh), Delta: alloc(B, H, T)}
	}
	return AttnGrads{DOut: alloc(B, H, T, Dh), DProbs: alloc(B, H, T, T)}
}

// SplitDOut is the layout through which the projection's input gradient
// [B T, D] goes to g.DOut (MatMulOpts.Heads).
func (g AttnGrads) SplitDOut() *HeadsLayout {
	return &HeadsLayout{T: g.DOut.Dim(2), H: g.DOut.Dim(1), Dh: g.DOut.Dim(3), Parts: 1}
}

// attnShape is the checked geometry of one attention call.
type attnShape struct{ B, T, H, Dh int }

func shapeIs(t *gpu.Tensor, shape ...int) bool {
	if len(t.Shape) != len(shape) {
		return false
	}
	for i, v := range shape {
		if t.Shape[i] != v {
			return false
		}
	}
	return true
}

// attnCheck validates a's Q, K, V [B, H, T, Dh], Scores and Probs
// [B, H, T, T] or LSE [B, H, T] and, when set, the gradients g alike
// (DProbs or Delta, as a is composed or fused), against the token-major x
// [B, T, parts*D] (named xName).
func attnCheck(rec *gpu.Recorder, op string, a AttnTensors, g *AttnGrads, xName string, x *gpu.Tensor, parts int) (attnShape, error) {
	fused := a.LSE != nil
	names, ts := []string{"Q", "K", "V"}, []*gpu.Tensor{a.Q, a.K, a.V}
	if fused {
		names, ts = append(names, "LSE"), append(ts, a.LSE)
	} else {
		names, ts = append(names, "Scores", "Probs"), append(ts, a.Scores, a.Probs)
	}
	names, ts = append(names, xName), append(ts, x)
	switch {
	case g != nil && fused:
		names, ts = append(names, "DOut", "Delta"), append(ts, g.DOut, g.Delta)
	case g != nil:
		names, ts = append(names, "DOut", "DProbs"), append(ts, g.DOut, g.DProbs)
	}
	if err := notNil(rec, op, names, ts...); err != nil {
		return attnShape{}, err
	}
	if len(a.Q.Shape) != 4 {
		return attnShape{}, shapeErr(rec, op, "Q %s: want [B, H, T, Dh]", a.Q)
	}
	s := attnShape{B: a.Q.Dim(0), H: a.Q.Dim(1), T: a.Q.Dim(2), Dh: a.Q.Dim(3)}
	for i, t := range ts {
		want := []int{s.B, s.H, s.T, s.Dh}
		switch names[i] {
		case "Scores", "Probs", "DProbs":
			want[3] = s.T
		case "LSE", "Delta":
			want = want[:3]
		case xName:
			want = []int{s.B, s.T, parts * s.H * s.Dh}
		}
		if !shapeIs(t, want...) {
			return s, shapeErr(rec, op, "Q %s: %s %s, want %v", a.Q, names[i], t, want)
		}
	}
	if fused && s.Dh%4 != 0 {
		return s, shapeErr(rec, op, "Q %s: fused attention needs heads of a multiple of 4 (AttentionFuses)", a.Q)
	}
	return s, nil
}

// fusedKernel is the data of attention.wgsl's kernels: heads of 4 DH4
// floats, WG rows per workgroup.
type fusedKernel struct{ DH4, WG int }

// fusedDispatch records one of attention.wgsl's kernels over s: a
// workgroup per (sequence, head) and block of rows, the smallest power of
// two from 8 to 64 that covers T.
func fusedDispatch(rec *gpu.Recorder, name string, s attnShape, scale float32, access []gpu.Access, bufs ...*gpu.Tensor) error {
	wg := 8
	for wg < s.T && wg < 64 {
		wg *= 2
	}
	bh := s.B * s.H
	most := int(rec.Device().Limits().MaxWorkgroupsPerDim)
	groups := [3]uint32{uint32((s.T + wg - 1) / wg), uint32(min(bh, most)), uint32((bh + most - 1) / most)}
	params := []uint32{gpu.U32(s.T), gpu.U32(s.H), gpu.U32(bh), gpu.F32(scale)}
	return rec.Dispatch(gpu.Kernel{Name: name, Data: fusedKernel{DH4: s.Dh / 4, WG: wg}, Access: access}, groups, params, bufs...)
}

// productFLOPs is the work of n T x Dh x T products over s's sequences and
// heads, what the fused kernels count (the composed ones count their
// products in MatMul).
func (s attnShape) productFLOPs(n int) int64 {
	return int64(n) * 2 * int64(s.B*s.H) * int64(s.T) * int64(s.T) * int64(s.Dh)
}

// merge is the layout of a product batched over heads [B H, T, Dh] into
// part `part` of a token-major [B, T, parts D].
func (s attnShape) merge(parts, part int) *HeadsLayout {
	return &HeadsLayout{Merge: true, T: s.T, H: s.H, Dh: s.Dh, Parts: parts, Part: part}
}

// Attention records multi-head self-attention without mask,
// out = softmax(scale q k^T) v per (batch, head), heads concatenated into
// out [B, T, D], what the projection consumes. a.Q, a.K and a.V hold the
// heads (the qkv Linear writes them through a.SplitQKV); scale is normally
// Dh^-0.5 and applies to the scores. a receives the intermediates; when
// composed, a.Probs row 0 of each (batch, head) is the CLS attention map.
func Attention(rec *gpu.Recorder, out *gpu.Tensor, scale float32, a AttnTensors) error {
	s, err := attnCheck(rec, "attention", a, nil, "out", out, 1)
	if err != nil {
		return err
	}
	if !(scale > 0) {
		return shapeErr(rec, "attention", "scale %g: must be positive", scale)
	}
	if a.LSE != nil {
		rec.Device().CountFLOPs(s.productFLOPs(2))
		return fusedDispatch(rec, "attention_forward", s, scale,
			[]gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite}, a.Q, a.K, a.V, out, a.LSE)
	}
	if err := MatMul(rec, a.Scores, a.Q, a.K, MatMulOpts{TransB: true}); err != nil {
		return err
	}
	if err := Softmax(rec, a.Probs, a.Scores, 1/scale); err != nil {
		return err
	}
	return MatMul(rec, out, a.Probs, a.V, MatMulOpts{Heads: s.merge(1, 0)})
}

// AttentionBackward records the gradient of Attention: from the forward's
// a and out and g.DOut, dL/dout per head, it writes dqkv [B, T, 3*D] in the
// qkv Linear's layout (q, k, v columns), ready for its backward; g.DProbs or
// g.Delta is scratch.
//
// With S = q k^T, P = softmax(scale S), O = P V:
// dV = P^T dO, dP = dO V^T, dS = scale P * (dP - rowsum(dP * P)),
// dq = dS K, dK = dS^T q. Composed, a.Scores and a.Probs are first
// recomputed from a.Q and a.K (they may have been overwritten by later
// layers since the forward); dS goes over a.Scores, which P has made dead.
// Fused, P comes back from a.LSE, and rowsum(dP * P) = rowsum(dO * O) reads
// out. dq, dK and dV go straight to their columns of dqkv.
func AttentionBackward(rec *gpu.Recorder, dqkv, out *gpu.Tensor, scale float32, a AttnTensors, g AttnGrads) error {
	const op = "attention_backward"
	s, err := attnCheck(rec, op, a, &g, "dqkv", dqkv, 3)
	if err != nil {
		return err
	}
	if !(scale > 0) {
		return shapeErr(rec, op, "scale %g: must be positive", scale)
	}
	if a.LSE != nil {
		if err := notNil(rec, op, []string{"out"}, out); err != nil {
			return err
		}
		if !shapeIs(out, s.B, s.T, s.H*s.Dh) {
			return shapeErr(rec, op, "Q %s: out %s, want %v", a.Q, out, []int{s.B, s.T, s.H * s.Dh})
		}
		rec.Device().CountFLOPs(s.productFLOPs(7)) // q k^T and dO v^T twice, dS k, dS^T q, P^T dO
		r := gpu.Read
		if err := fusedDispatch(rec, "attention_backward_q", s, scale, []gpu.Access{r, r, r, r, r, r, gpu.ReadWrite, gpu.ReadWrite},
			a.Q, a.K, a.V, out, g.DOut, a.LSE, g.Delta, dqkv); err != nil {
			return err
		}
		return fusedDispatch(rec, "attention_backward_kv", s, scale, []gpu.Access{r, r, r, r, r, r, gpu.ReadWrite},
			a.Q, a.K, a.V, g.DOut, a.LSE, g.Delta, dqkv)
	}
	steps := []func() error{
		func() error { return MatMul(rec, a.Scores, a.Q, a.K, MatMulOpts{TransB: true}) },
		func() error { return Softmax(rec, a.Probs, a.Scores, 1/scale) },
		func() error {
			return MatMul(rec, dqkv, a.Probs, g.DOut, MatMulOpts{TransA: true, Heads: s.merge(3, 2)})
		},
		func() error { return MatMul(rec, g.DProbs, g.DOut, a.V, MatMulOpts{TransB: true}) },
		func() error { return SoftmaxBackward(rec, a.Scores, g.DProbs, a.Probs, 1/scale) },
		func() error { return MatMul(rec, dqkv, a.Scores, a.K, MatMulOpts{Heads: s.merge(3, 0)}) },
		func() error { return MatMul(rec, dqkv, a.Scores, a.Q, MatMulOpts{TransA: true, Heads: s.merge(3, 1)}) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
