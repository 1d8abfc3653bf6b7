package nn

import "github.com/webdino/webdino/gpu"

// AttnTensors are the per-head intermediates of one attention call, all
// [B, H, T, Dh] except Scores and Probs [B, H, T, T]. The forward fills them
// from qkv; the backward reads Q, K and V, and writes the gradients of the
// same quantities into a second AttnTensors (its Scores holds dL/dProbs, its
// Probs dL/dScores).
//
// Attention is composed of batched matmuls and a row softmax rather than
// fused, so every step runs on the library's most tuned kernels. Memory: a
// layer keeps Q, K and V (3*B*T*D floats) for its backward; O, Scores and
// Probs (B*H*T*T floats each for the last two) are scratch that every layer
// of a network may share, since the backward recomputes the probabilities
// from Q and K. The T x T matrices therefore exist for one layer at a time;
// after a forward, Probs holds the last layer's (attention maps read it).
type AttnTensors struct {
	Q, K, V, O    *gpu.Tensor
	Scores, Probs *gpu.Tensor
}

// NewAttnTensors allocates the tensors of an attention over B images of T
// tokens with H heads of Dh, through alloc (which may record the first error
// and return nil; the caller checks it).
func NewAttnTensors(alloc func(shape ...int) *gpu.Tensor, B, T, H, Dh int) AttnTensors {
	return AttnTensors{
		Q: alloc(B, H, T, Dh), K: alloc(B, H, T, Dh), V: alloc(B, H, T, Dh), O: alloc(B, H, T, Dh),
		Scores: alloc(B, H, T, T), Probs: alloc(B, H, T, T),
	}
}

// NewAttnGrads allocates AttentionBackward's scratch g: NewAttnTensors'
// tensors but Probs.
func NewAttnGrads(alloc func(shape ...int) *gpu.Tensor, B, T, H, Dh int) AttnTensors {
	return AttnTensors{
		Q: alloc(B, H, T, Dh), K: alloc(B, H, T, Dh), V: alloc(B, H, T, Dh), O: alloc(B, H, T, Dh),
		Scores: alloc(B, H, T, T),
	}
}

// WithScratch returns a copy of a for another layer: new Q, K and V from
// alloc, the scratch O, Scores and Probs shared with a.
func (a AttnTensors) WithScratch(alloc func(shape ...int) *gpu.Tensor) AttnTensors {
	b := a
	if a.Q == nil {
		return b
	}
	b.Q, b.K, b.V = alloc(a.Q.Shape...), alloc(a.K.Shape...), alloc(a.V.Shape...)
	return b
}

// attnShape is the checked geometry of one attention call.
type attnShape struct{ B, T, H, D, Dh int }

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

// attnCheck validates qkv [B, T, 3*D] against heads, the output or its
// gradient x [B, T, D], and the intermediates a (named with prefix).
func attnCheck(rec *gpu.Recorder, op string, qkv, x *gpu.Tensor, xName string, heads int, a AttnTensors, prefix string) (attnShape, error) {
	names := []string{"qkv", xName}
	for _, n := range []string{"Q", "K", "V", "O", "Scores", "Probs"} {
		names = append(names, prefix+n)
	}
	if err := notNil(rec, op, names, qkv, x, a.Q, a.K, a.V, a.O, a.Scores, a.Probs); err != nil {
		return attnShape{}, err
	}
	if len(qkv.Shape) != 3 || qkv.Dim(2)%3 != 0 {
		return attnShape{}, shapeErr(rec, op, "qkv %s: want [B, T, 3*D]", qkv)
	}
	s := attnShape{B: qkv.Dim(0), T: qkv.Dim(1), H: heads, D: qkv.Dim(2) / 3}
	if heads <= 0 || s.D%heads != 0 {
		return s, shapeErr(rec, op, "qkv %s: D = %d is not divisible by %d heads", qkv, s.D, heads)
	}
	s.Dh = s.D / heads
	if !shapeIs(x, s.B, s.T, s.D) {
		return s, shapeErr(rec, op, "qkv %s -> %s %s: want [%d %d %d]", qkv, xName, x, s.B, s.T, s.D)
	}
	for i, t := range []*gpu.Tensor{a.Q, a.K, a.V, a.O, a.Scores, a.Probs} {
		last := s.Dh
		if i >= 4 {
			last = s.T
		}
		if !shapeIs(t, s.B, s.H, s.T, last) {
			return s, shapeErr(rec, op, "qkv %s, %d heads: %s %s, want [%d %d %d %d]", qkv, heads, names[i+2], t, s.B, s.H, s.T, last)
		}
	}
	return s, nil
}

// permute records one part of x [B, T, parts*D] <-> heads [B, H, T, Dh],
// times a (see heads_permute).
func (s attnShape) permute(rec *gpu.Recorder, merge bool, heads, x *gpu.Tensor, part int, a float32) error {
	k := gpu.Kernel{Name: "heads_permute", Data: struct {
		Merge bool
		Dh    int
	}{merge, s.Dh}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	params := []uint32{gpu.U32(s.T), gpu.U32(s.H), gpu.U32(x.Dim(2)), gpu.U32(part * s.D), gpu.F32(a)}
	groups := [3]uint32{uint32((s.T*s.Dh + 255) / 256), uint32(s.H), uint32(s.B)}
	if merge {
		return rec.Dispatch(k, groups, params, heads, x)
	}
	return rec.Dispatch(k, groups, params, x, heads)
}

// Attention records multi-head self-attention without mask,
// out = softmax(scale q k^T) v per (batch, head), heads concatenated:
// qkv [B, T, 3*D] is the fused qkv Linear's output (q, k, v, each split into
// heads of Dh = D/heads columns), out [B, T, D] is what the projection
// consumes. scale is normally Dh^-0.5. a receives the intermediates; a.Probs
// row 0 of each (batch, head) is the CLS attention map.
func Attention(rec *gpu.Recorder, out, qkv *gpu.Tensor, heads int, scale float32, a AttnTensors) error {
	s, err := attnCheck(rec, "attention", qkv, out, "out", heads, a, "")
	if err != nil {
		return err
	}
	for i, h := range []*gpu.Tensor{a.Q, a.K, a.V} {
		f := float32(1)
		if i == 0 {
			f = scale
		}
		if err := s.permute(rec, false, h, qkv, i, f); err != nil {
			return err
		}
	}
	if err := MatMul(rec, a.Scores, a.Q, a.K, MatMulOpts{TransB: true}); err != nil {
		return err
	}
	if err := Softmax(rec, a.Probs, a.Scores, 1); err != nil {
		return err
	}
	if err := MatMul(rec, a.O, a.Probs, a.V, MatMulOpts{}); err != nil {
		return err
	}
	return s.permute(rec, true, a.O, out, 0, 1)
}

// AttentionBackward records the gradient of Attention: from qkv, the
// forward's intermediates a and dout = dL/dout [B, T, D], it writes dqkv
// [B, T, 3*D] in qkv's layout (ready for the qkv Linear's backward); g is
// scratch of a's shapes for the gradients of the intermediates, without
// Probs (NewAttnGrads).
//
// With P = softmax(S), S = (scale q) k^T, O = P V:
// dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)),
// d(scale q) = dS K, dK = dS^T (scale q). a.Scores and a.Probs are first
// recomputed from a.Q and a.K (they may have been overwritten by later
// layers since the forward); dP goes to g.Scores and dS over a.Scores,
// which P has made dead.
func AttentionBackward(rec *gpu.Recorder, dqkv, dout, qkv *gpu.Tensor, heads int, scale float32, a, g AttnTensors) error {
	const op = "attention_backward"
	s, err := attnCheck(rec, op, qkv, dout, "dout", heads, a, "")
	if err != nil {
		return err
	}
	gc := g
	gc.Probs = a.Probs // g has none
	if _, err := attnCheck(rec, op, qkv, dout, "dout", heads, gc, "d"); err != nil {
		return err
	}
	if err := notNil(rec, op, []string{"dqkv"}, dqkv); err != nil {
		return err
	}
	if !shapeIs(dqkv, qkv.Shape...) {
		return shapeErr(rec, op, "qkv %s -> dqkv %s: shapes differ", qkv, dqkv)
	}
	steps := []func() error{
		func() error { return MatMul(rec, a.Scores, a.Q, a.K, MatMulOpts{TransB: true}) },
		func() error { return Softmax(rec, a.Probs, a.Scores, 1) },
		func() error { return s.permute(rec, false, g.O, dout, 0, 1) },
		func() error { return MatMul(rec, g.V, a.Probs, g.O, MatMulOpts{TransA: true}) },
		func() error { return MatMul(rec, g.Scores, g.O, a.V, MatMulOpts{TransB: true}) },
		func() error { return SoftmaxBackward(rec, a.Scores, g.Scores, a.Probs, 1) },
		func() error { return MatMul(rec, g.Q, a.Scores, a.K, MatMulOpts{}) },
		func() error { return MatMul(rec, g.K, a.Scores, a.Q, MatMulOpts{TransA: true}) },
		func() error { return s.permute(rec, true, g.Q, dqkv, 0, scale) },
		func() error { return s.permute(rec, true, g.K, dqkv, 1, 1) },
		func() error { return s.permute(rec, true, g.V, dqkv, 2, 1) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
