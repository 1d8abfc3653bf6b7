package nn

import (
	"fmt"

	"github.com/webdino/webdino/gpu"
)

// blockActs are the activations of one transformer block that its backward
// reads, for a batch of B sequences of T tokens. The block's input and output
// residual streams live outside (ViTActs.X); X1 is the stream between the
// attention and MLP branches. In inference one blockActs serves every block
// and X1 is the stream itself.
type blockActs struct {
	Ln                    *gpu.Tensor // either LayerNorm's output (the backward recomputes it from the saved statistics)
	Mean1, Rstd1, Att, H1 *gpu.Tensor
	Attn                  AttnTensors
	X1                    *gpu.Tensor
	Mean2, Rstd2          *gpu.Tensor
	Pre, Hid, H2          *gpu.Tensor // MLP pre-activation (SwiGLU: its [.., 2*hidden] input), activation, output
	// Drop holds stochastic depth's per-token factors of the two branches
	// (keep/(1-rate) of the token's sample), or nil when it is off.
	Drop [2]*gpu.Tensor
}

// newBlockActs allocates one block's activations; prev, when set, is an
// earlier block whose scratch this one shares: the attention's Scores and
// Probs, the MLP's Ln and Hid and the first LayerNorm's output (the backward
// recomputes them from the block's inputs, statistics and MLP pre-activation
// Pre, which each block keeps: mlpAgain).
// x1 is nil in training (each block keeps its mid-block stream) and the
// stream itself in inference, which also keeps no GELU pre-activation.
// fused selects the attention's kernels (NewAttnTensors).
func newBlockActs(t func(...int) *gpu.Tensor, c ViTConfig, B, T int, x1 *gpu.Tensor, prev *blockActs, fused bool) blockActs {
	D := c.EmbedDim
	pre := c.MLPHidden
	if c.FFN == FFNSwiGLU {
		pre *= 2
	}
	train := x1 == nil
	if train {
		x1 = t(B, T, D)
	}
	a := blockActs{
		Mean1: t(B * T), Rstd1: t(B * T), Att: t(B, T, D), H1: t(B, T, D),
		X1: x1, Mean2: t(B * T), Rstd2: t(B * T), H2: t(B, T, D),
	}
	if prev != nil {
		a.Attn, a.Hid, a.Ln, a.Pre = prev.Attn.WithScratch(t), prev.Hid, prev.Ln, t(B, T, pre)
	} else {
		a.Attn, a.Hid, a.Ln = NewAttnTensors(t, B, T, c.Heads, c.HeadDim(), fused), t(B, T, c.MLPHidden), t(B, T, D)
		if train || c.FFN == FFNSwiGLU { // inference with GELU needs no pre-activation
			a.Pre = t(B, T, pre)
		}
	}
	return a
}

// blockGrads is the backward's scratch, shared by all blocks.
type blockGrads struct {
	Ln, QKV, H *gpu.Tensor // d of Ln1/Ln2, of the qkv Linear's output, and of H1/H2 when LayerScale is on
	Drop       *gpu.Tensor // the residual gradient times a branch's drop factors
	Pre, Hid   *gpu.Tensor // d of the MLP's pre-activation, and of its activation (SwiGLU only: GELU's backward is fused into fc2's)
	Attn       AttnGrads
	Scratch    *gpu.Tensor // column-sum partials of LayerNorm / LayerScale
}

func newBlockGrads(d *gpu.Device, t func(...int) *gpu.Tensor, c ViTConfig, B, T int, fused bool) blockGrads {
	D := c.EmbedDim
	g := blockGrads{
		Ln: t(B, T, D), QKV: t(B, T, 3*D), H: t(B, T, D), Drop: t(B, T, D),
		Attn: NewAttnGrads(t, B, T, c.Heads, c.HeadDim(), fused), Scratch: t(ScratchLen(d, D)),
	}
	if c.FFN == FFNSwiGLU {
		g.Pre, g.Hid = t(B, T, 2*c.MLPHidden), t(B, T, c.MLPHidden)
	} else {
		g.Pre = t(B, T, c.MLPHidden)
	}
	return g
}

// blockParams resolves the tensors of block l in a flat buffer laid out by
// the config (parameters or their gradients); optional ones are nil.
type blockParams struct {
	N1w, N1b, QKVw, QKVb, Projw, Projb, LS1 *gpu.Tensor
	N2w, N2b, W1, B1, W2, B2, LS2           *gpu.Tensor
}

func (m *ViT) blockParams(f *Flat, l int) blockParams {
	get := func(name string) *gpu.Tensor {
		full := fmt.Sprintf("blocks.%d.%s", l, name)
		if f.Layout.Shape(full) == nil {
			return nil
		}
		return f.Get(full)
	}
	fc1, fc2 := "mlp.fc1", "mlp.fc2"
	if m.Cfg.FFN == FFNSwiGLU {
		fc1, fc2 = "mlp.w12", "mlp.w3"
	}
	return blockParams{
		N1w: get("norm1.weight"), N1b: get("norm1.bias"), QKVw: get("attn.qkv.weight"), QKVb: get("attn.qkv.bias"),
		Projw: get("attn.proj.weight"), Projb: get("attn.proj.bias"), LS1: get("ls1.gamma"),
		N2w: get("norm2.weight"), N2b: get("norm2.bias"), W1: get(fc1 + ".weight"), B1: get(fc1 + ".bias"),
		W2: get(fc2 + ".weight"), B2: get(fc2 + ".bias"), LS2: get("ls2.gamma"),
	}
}

// mlpIn records the MLP's first half from X1: Ln = norm2(X1) (with its
// statistics), Pre = fc1(Ln) and Hid = act(Pre).
func (m *ViT) mlpIn(rec *gpu.Recorder, p blockParams, a *blockActs) {
	LayerNorm(rec, a.Ln, a.Mean2, a.Rstd2, a.X1, p.N2w, p.N2b, float32(m.Cfg.LNEps))
	if m.Cfg.FFN == FFNSwiGLU {
		MatMul(rec, a.Pre, a.Ln, p.W1, MatMulOpts{TransB: true, Bias: p.B1})
		SwiGLU(rec, a.Hid, a.Pre)
	} else {
		MatMul(rec, a.Hid, a.Ln, p.W1, MatMulOpts{TransB: true, Bias: p.B1, Act: GELU, PreAct: a.Pre})
	}
}

// mlpAgain records what the backward of a block needs of mlpIn that later
// blocks have overwritten, Ln and Hid, from the block's own Pre: a
// LayerNorm and an activation instead of fc1's product again (a tenth of a
// block's training FLOPs), for Pre's B T hidden floats per block.
func (m *ViT) mlpAgain(rec *gpu.Recorder, p blockParams, a *blockActs) {
	LayerNorm(rec, a.Ln, a.Mean2, a.Rstd2, a.X1, p.N2w, p.N2b, float32(m.Cfg.LNEps))
	if m.Cfg.FFN == FFNSwiGLU {
		SwiGLU(rec, a.Hid, a.Pre)
	} else {
		Activate(rec, a.Hid, a.Pre, GELU)
	}
}

// blockForward records out = block(in): x1 = in + ls1 * proj(attn(norm1(in)));
// out = x1 + ls2 * mlp(norm2(x1)). in, a.X1 and out may be one tensor (inference).
func (m *ViT) blockForward(rec *gpu.Recorder, p blockParams, in, out *gpu.Tensor, a *blockActs) {
	c := m.Cfg
	eps := float32(c.LNEps)
	if a.X1 != in {
		rec.Copy(a.X1, in)
	}
	LayerNorm(rec, a.Ln, a.Mean1, a.Rstd1, in, p.N1w, p.N1b, eps)
	MatMul(rec, a.Attn.QKV, a.Ln, p.QKVw, MatMulOpts{TransB: true, Bias: p.QKVb, Heads: a.Attn.SplitQKV()})
	Attention(rec, a.Att, m.attnScale(), a.Attn)
	MatMul(rec, a.X1, a.Att, p.Projw, MatMulOpts{TransB: true, Bias: p.Projb, PreAct: a.H1, Scale: p.LS1, RowScale: a.Drop[0], Accumulate: true})
	if out != a.X1 {
		rec.Copy(out, a.X1)
	}
	m.mlpIn(rec, p, a)
	MatMul(rec, out, a.Hid, p.W2, MatMulOpts{TransB: true, Bias: p.B2, PreAct: a.H2, Scale: p.LS2, RowScale: a.Drop[1], Accumulate: true})
}

// linearBackward records the gradients of y = x W^T + b for x [.., K],
// W [N, K]: dW += dy^T x, db += column sums of dy (skipped when db is nil),
// dx = dy W through dxOpts's epilogue and layout (skipped when dx is nil).
func linearBackward(rec *gpu.Recorder, dx, dW, db, dy, x, W *gpu.Tensor, dxOpts MatMulOpts) {
	N, K := dy.Dim(-1), x.Dim(-1)
	dy2, err1 := dy.Reshape(dy.Len()/N, N)
	x2, err2 := x.Reshape(x.Len()/K, K)
	for _, err := range []error{err1, err2} {
		if err != nil {
			rec.Fail(err)
			return
		}
	}
	MatMul(rec, dW, dy2, x2, MatMulOpts{TransA: true, Accumulate: true})
	if db != nil {
		SumRows(rec, db, dy2, true)
	}
	if dx != nil {
		MatMul(rec, dx, dy, W, dxOpts)
	}
}

// blockBackward records the gradients of block l: dx holds dL/d(out) on
// entry and dL/d(in) on exit (the residual stream's gradient, updated in
// place); parameter gradients are added into gp.
func (m *ViT) blockBackward(rec *gpu.Recorder, p, gp blockParams, in *gpu.Tensor, a *blockActs, g *blockGrads, dx *gpu.Tensor) {
	c := m.Cfg
	ln := LayerNormBackwardOpts{Scratch: g.Scratch, AccumulateDX: true, AccumulateParams: true}
	// The branch output's gradient: dx through the drop factors and
	// LayerScale, when they are on.
	branch := func(ls, gls, h, drop *gpu.Tensor) *gpu.Tensor {
		dy := dx
		if drop != nil {
			ScaleRows(rec, g.Drop, dx, drop)
			dy = g.Drop
		}
		if ls == nil {
			return dy
		}
		LayerScaleBackward(rec, g.H, gls, dy, h, ls, g.Scratch, true)
		return g.H
	}
	dh2 := branch(p.LS2, gp.LS2, a.H2, a.Drop[1])
	m.mlpAgain(rec, p, a)
	if c.FFN == FFNSwiGLU {
		linearBackward(rec, g.Hid, gp.W2, gp.B2, dh2, a.Hid, p.W2, MatMulOpts{})
		SwiGLUBackward(rec, g.Pre, g.Hid, a.Pre)
	} else {
		linearBackward(rec, g.Pre, gp.W2, gp.B2, dh2, a.Hid, p.W2, MatMulOpts{GELUGradAt: a.Pre})
	}
	linearBackward(rec, g.Ln, gp.W1, gp.B1, g.Pre, a.Ln, p.W1, MatMulOpts{})
	LayerNormBackward(rec, dx, gp.N2w, gp.N2b, g.Ln, a.X1, p.N2w, a.Mean2, a.Rstd2, ln)

	dh1 := branch(p.LS1, gp.LS1, a.H1, a.Drop[0])
	linearBackward(rec, g.Attn.DOut, gp.Projw, gp.Projb, dh1, a.Att, p.Projw, MatMulOpts{Heads: g.Attn.SplitDOut()})
	AttentionBackward(rec, g.QKV, a.Att, m.attnScale(), a.Attn, g.Attn)
	LayerNorm(rec, a.Ln, a.Mean1, a.Rstd1, in, p.N1w, p.N1b, float32(c.LNEps))
	linearBackward(rec, g.Ln, gp.QKVw, gp.QKVb, g.QKV, a.Ln, p.QKVw, MatMulOpts{})
	LayerNormBackward(rec, dx, gp.N1w, gp.N1b, g.Ln, in, p.N1w, a.Mean1, a.Rstd1, ln)
}
