package nn

import "github.com/webdino/webdino/gpu"

// AttnTensors are the per-head tensors of one attention call: Q, K and V
// [B, H, T, Dh], views of QKV, which the qkv Linear writes through
// SplitQKV; and Scores and Probs [B, H, T, T].
//
// Attention is composed of batched matmuls and a row softmax rather than
// fused, so every step runs on the library's most tuned kernels, and heads
// move between layouts inside the products' stores (HeadsLayout), not in
// kernels of their own. Memory: a layer keeps Q, K and V (3*B*T*D floats)
// for its backward; Scores and Probs (B*H*T*T floats each) are scratch that
// every layer of a network may share, since the backward recomputes the
// probabilities from Q and K. The T x T matrices therefore exist for one
// layer at a time; after a forward, Probs holds the last layer's (attention
// maps read it).
type AttnTensors struct {
	QKV, Q, K, V  *gpu.Tensor
	Scores, Probs *gpu.Tensor
}

// NewAttnTensors allocates the tensors of an attention over B images of T
// tokens with H heads of Dh, through alloc (which may record the first error
// and return nil; the caller checks it).
func NewAttnTensors(alloc func(shape ...int) *gpu.Tensor, B, T, H, Dh int) AttnTensors {
	a := AttnTensors{Scores: alloc(B, H, T, T), Probs: alloc(B, H, T, T)}
	a.setQKV(alloc, B, T, H, Dh)
	return a
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

// WithScratch returns a copy of a for another layer: new Q, K and V from
// alloc, the scratch Scores and Probs shared with a.
func (a AttnTensors) WithScratch(alloc func(shape ...int) *gpu.Tensor) AttnTensors {
	b := a
	if a.Q != nil {
		b.setQKV(alloc, a.Q.Dim(0), a.Q.Dim(2), a.Q.Dim(1), a.Q.Dim(3))
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
// writes through SplitDOut; DProbs [B, H, T, T].
type AttnGrads struct{ DOut, DProbs *gpu.Tensor }

// NewAttnGrads allocates AttnGrads through alloc, as NewAttnTensors.
func NewAttnGrads(alloc func(shape ...int) *gpu.Tensor, B, T, H, Dh int) AttnGrads {
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
// [B, H, T, T] and, when set, the gradients g alike, against the
// token-major x [B, T, parts*D] (named xName).
func attnCheck(rec *gpu.Recorder, op string, a AttnTensors, g *AttnGrads, xName string, x *gpu.Tensor, parts int) (attnShape, error) {
	names := []string{"Q", "K", "V", "Scores", "Probs", xName}
	ts := []*gpu.Tensor{a.Q, a.K, a.V, a.Scores, a.Probs, x}
	if g != nil {
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
		case xName:
			want = []int{s.B, s.T, parts * s.H * s.Dh}
		}
		if !shapeIs(t, want...) {
			return s, shapeErr(rec, op, "Q %s: %s %s, want %v", a.Q, names[i], t, want)
		}
	}
	return s, nil
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
// Dh^-0.5 and applies to the scores. a receives the intermediates; a.Probs
// row 0 of each (batch, head) is the CLS attention map.
func Attention(rec *gpu.Recorder, out *gpu.Tensor, scale float32, a AttnTensors) error {
	s, err := attnCheck(rec, "attention", a, nil, "out", out, 1)
	if err != nil {
		return err
	}
	if !(scale > 0) {
		return shapeErr(rec, "attention", "scale %g: must be positive", scale)
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
// a and g.DOut, dL/dout per head, it writes dqkv [B, T, 3*D] in the qkv
// Linear's layout (q, k, v columns), ready for its backward; g.DProbs is
// scratch.
//
// With S = q k^T, P = softmax(scale S), O = P V:
// dV = P^T dO, dP = dO V^T, dS = scale P * (dP - rowsum(dP * P)),
// dq = dS K, dK = dS^T q. a.Scores and a.Probs are first recomputed from
// a.Q and a.K (they may have been overwritten by later layers since the
// forward); dS goes over a.Scores, which P has made dead. dq, dK and dV go
// straight to their columns of dqkv.
func AttentionBackward(rec *gpu.Recorder, dqkv *gpu.Tensor, scale float32, a AttnTensors, g AttnGrads) error {
	const op = "attention_backward"
	s, err := attnCheck(rec, op, a, &g, "dqkv", dqkv, 3)
	if err != nil {
		return err
	}
	if !(scale > 0) {
		return shapeErr(rec, op, "scale %g: must be positive", scale)
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
