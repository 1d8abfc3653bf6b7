package nn

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/webdino/webdino/gpu"
)

// ViTActs holds the device tensors of one batch geometry (B images of
// GridH x GridW patches) for Encode, and, when made for training, everything
// Backward reads: every block's input stream and activations.
type ViTActs struct {
	B, GridH, GridW, N, T int
	Train                 bool

	Patches, PE *gpu.Tensor // flattened patches [B, N, C*P*P], their embeddings [B, N, D]
	PosGrid     *gpu.Tensor // interpolated patch positions [GridH, GridW, D], when the grid differs
	Mask        *gpu.Tensor // u32 [B*N], 1 where iBOT replaces a patch by the mask token
	X           []*gpu.Tensor
	blocks      []blockActs
	Inter       []*gpu.Tensor // the last len(Inter) blocks' outputs through the final norm (inference)
	Normed      *gpu.Tensor   // the final norm of X[len(X)-1], [B, T, D]
	mean, rstd  *gpu.Tensor

	// Backward only.
	DNormed, dx, dsum, dpe, dmask *gpu.Tensor
	grads                         blockGrads
	drop                          [][2]*gpu.Tensor // per block and branch: [B*T] factors

	bufs []*gpu.Tensor
}

// NewActs allocates the tensors for B images of h x w pixels. Training keeps
// one set of activations per block (memory grows with depth); inference
// shares one across blocks and keeps nothing for a backward. intermediate is
// the number of last blocks whose normed outputs Encode also writes.
// Attention runs fused where AttentionFuses says so.
func (m *ViT) NewActs(B, h, w int, train bool, intermediate int) (*ViTActs, error) {
	return m.newActs(B, h, w, train, intermediate, m.attentionFuses(h, w, train))
}

// attentionFuses is AttentionFuses for images of h x w pixels (h and w
// checked by newActs).
func (m *ViT) attentionFuses(h, w int, train bool) bool {
	c := m.Cfg
	return AttentionFuses(m.dev, 1+c.Registers+(h/c.PatchSize)*(w/c.PatchSize), c.HeadDim(), train)
}

// newActs is NewActs with the attention's kernels chosen by the caller:
// attention maps need the composed ones' probabilities.
func (m *ViT) newActs(B, h, w int, train bool, intermediate int, fused bool) (*ViTActs, error) {
	c := m.Cfg
	P := c.PatchSize
	if B <= 0 || h%P != 0 || w%P != 0 || h < P || w < P {
		return nil, fmt.Errorf("vit: %d images of %dx%d: height and width must be positive multiples of the patch size %d", B, h, w, P)
	}
	if intermediate < 0 || intermediate > c.Depth {
		return nil, fmt.Errorf("vit: %d intermediate layers of a %d-block model", intermediate, c.Depth)
	}
	gh, gw := h/P, w/P
	D := c.EmbedDim
	if train && D%paramAlign != 0 {
		return nil, fmt.Errorf("vit %s: training needs the embedding width to be a multiple of %d (the gradients of tokens are bound as row views)", c, paramAlign)
	}
	a := &ViTActs{B: B, GridH: gh, GridW: gw, N: gh * gw, T: 1 + c.Registers + gh*gw, Train: train}
	var err error
	t := func(shape ...int) *gpu.Tensor {
		if err != nil {
			return nil
		}
		var x *gpu.Tensor
		x, err = m.dev.NewTensor("vit activation", shape...)
		a.bufs = append(a.bufs, x)
		return x
	}
	T, N := a.T, a.N
	a.Patches, a.PE = t(B, N, c.InChans*P*P), t(B, N, D)
	if gh != c.PosGrid || gw != c.PosGrid {
		a.PosGrid = t(gh, gw, D)
	}
	a.Mask = t(B * N)
	if train {
		for l := 0; l <= c.Depth; l++ {
			a.X = append(a.X, t(B, T, D))
		}
		for l := 0; l < c.Depth; l++ {
			var prev *blockActs
			if l > 0 {
				prev = &a.blocks[0]
			}
			a.blocks = append(a.blocks, newBlockActs(t, c, B, T, nil, prev, fused))
			a.drop = append(a.drop, [2]*gpu.Tensor{t(B * T), t(B * T)})
		}
		a.DNormed, a.dx, a.dsum, a.dpe = t(B, T, D), t(B, T, D), t(T, D), t(B, N, D)
		a.dmask = t(N, D)
		a.grads = newBlockGrads(m.dev, t, c, B, T, fused)
	} else {
		x := t(B, T, D)
		a.X = []*gpu.Tensor{x}
		a.blocks = []blockActs{newBlockActs(t, c, B, T, x, nil, fused)}
	}
	for i := 0; i < intermediate; i++ {
		a.Inter = append(a.Inter, t(B, T, D))
	}
	a.Normed, a.mean, a.rstd = t(B, T, D), t(B*T), t(B*T)
	if err != nil {
		a.Release()
		return nil, fmt.Errorf("vit %s: activations for %d images of %dx%d: %w", c, B, h, w, err)
	}
	return a, nil
}

// Release frees the tensors.
func (a *ViTActs) Release() {
	for _, t := range a.bufs {
		if t != nil {
			t.Buf.Release()
		}
	}
	a.bufs = nil
}

// SetMask uploads the iBOT mask, [B*N] with true for a masked patch, or
// clears it with nil.
func (a *ViTActs) SetMask(dev *gpu.Device, mask []bool) error {
	if mask != nil && len(mask) != a.B*a.N {
		return fmt.Errorf("vit: mask of %d patches for %d images of %d patches", len(mask), a.B, a.N)
	}
	words := make([]uint32, a.B*a.N)
	for i, v := range mask {
		if v {
			words[i] = 1
		}
	}
	return dev.WriteU32(a.Mask, words)
}

// SetDropPath draws stochastic depth for the next Encode and Backward of
// these training activations: every residual branch of every block is
// dropped for each sample with probability rate, and kept ones are scaled
// by 1/(1-rate) (DINOv2 uses one rate for all blocks). rate 0 turns it off.
// Draws come from rng, so a seeded run is reproducible.
func (a *ViTActs) SetDropPath(dev *gpu.Device, rate float64, rng *rand.Rand) error {
	if !a.Train {
		return fmt.Errorf("vit: stochastic depth needs training activations")
	}
	if !(rate >= 0 && rate < 1) {
		return fmt.Errorf("vit: drop-path rate %g: want [0, 1)", rate)
	}
	for l := range a.blocks {
		a.blocks[l].Drop = [2]*gpu.Tensor{}
		if rate == 0 {
			continue
		}
		for br := 0; br < 2; br++ {
			f := make([]float32, a.B*a.T)
			for b := 0; b < a.B; b++ {
				keep := float32(0)
				if rng.Float64() >= rate {
					keep = float32(1 / (1 - rate))
				}
				for i := 0; i < a.T; i++ {
					f[b*a.T+i] = keep
				}
			}
			if err := dev.Write(a.drop[l][br], f); err != nil {
				return err
			}
			a.blocks[l].Drop[br] = a.drop[l][br]
		}
	}
	return nil
}

func (m *ViT) attnScale() float32 { return float32(1 / math.Sqrt(float64(m.Cfg.HeadDim()))) }

func (m *ViT) layer(a *ViTActs, l int) (in, out *gpu.Tensor, b *blockActs) {
	if !a.Train {
		return a.X[0], a.X[0], &a.blocks[0]
	}
	return a.X[l], a.X[l+1], &a.blocks[l]
}

// Encode records the forward pass of images [B, C, H, W] (normalised, the
// geometry of a) into a: a.Normed holds x_norm of every token, a.X's last
// entry x_prenorm. With masked, patches flagged in a.Mask are replaced by the
// mask token (iBOT's student).
func (m *ViT) Encode(rec *gpu.Recorder, a *ViTActs, images *gpu.Tensor, masked bool) error {
	c := m.Cfg
	P := c.PatchSize
	if !shapeIs(images, a.B, c.InChans, a.GridH*P, a.GridW*P) {
		return rec.Fail(fmt.Errorf("vit encode: images %s, want [%d %d %d %d]", images, a.B, c.InChans, a.GridH*P, a.GridW*P))
	}
	pi, err := m.posInterp(a.GridH, a.GridW)
	if err != nil {
		return rec.Fail(err)
	}
	p := m.Params.Get
	PatchEmbed(rec, a.PE, a.Patches, images, p("patch_embed.proj.weight"), p("patch_embed.proj.bias"), P)
	posGrid, gridBase := p("pos_embed"), 1
	if pi != nil {
		posGrid, gridBase = a.PosGrid, 0
		Interp(rec, a.PosGrid, m.posGridView(p("pos_embed"), rec), pi)
	}
	var mask *gpu.Tensor
	if masked {
		mask = a.Mask
	}
	m.tokens(rec, a.X[0], a.PE, posGrid, gridBase, mask)
	eps := float32(c.LNEps)
	for l := 0; l < c.Depth; l++ {
		in, out, b := m.layer(a, l)
		m.blockForward(rec, m.blockParams(m.Params, l), in, out, b)
		if i := l - (c.Depth - len(a.Inter)); i >= 0 {
			LayerNorm(rec, a.Inter[i], a.mean, a.rstd, out, p("norm.weight"), p("norm.bias"), eps)
		}
	}
	LayerNorm(rec, a.Normed, a.mean, a.rstd, a.X[len(a.X)-1], p("norm.weight"), p("norm.bias"), eps)
	return rec.Err()
}

// posGridView is the [M, M, D] patch-position part of pos_embed (or of its
// gradient).
func (m *ViT) posGridView(pos *gpu.Tensor, rec *gpu.Recorder) *gpu.Tensor {
	M, D := m.Cfg.PosGrid, m.Cfg.EmbedDim
	v, err := pos.View(D, M, M, D)
	if err != nil {
		rec.Fail(err)
	}
	return v
}

// NewGrads allocates zeroed gradients laid out like the parameters.
func (m *ViT) NewGrads() (*Flat, error) { return m.Params.Layout.Alloc(m.dev, "vit grads") }

// Backward records the gradients of a loss with respect to every parameter,
// given a.DNormed = dL/d(a.Normed) after an Encode of a (made for training)
// with the same masked flag; they are added into grads (zero it once per
// step: a step may run several batches, e.g. global and local crops).
func (m *ViT) Backward(rec *gpu.Recorder, a *ViTActs, grads *Flat, masked bool) error {
	return m.BackwardNotify(rec, a, grads, masked, nil)
}

// BackwardNotify is Backward calling done(from), when done is not nil,
// each time the gradients from parameter from to the end of the layout
// (the blocks from one on and the final norm) are recorded: after each
// block, from the last to the first. In this pass they are complete then,
// so a data-parallel trainer can read them back while the GPU runs the
// rest (done may submit rec and go on recording into it).
func (m *ViT) BackwardNotify(rec *gpu.Recorder, a *ViTActs, grads *Flat, masked bool, done func(from string)) error {
	if !a.Train {
		return rec.Fail(fmt.Errorf("vit backward: activations were made for inference"))
	}
	c := m.Cfg
	p, g := m.Params.Get, grads.Get
	ln := LayerNormBackwardOpts{Scratch: a.grads.Scratch, AccumulateParams: true}
	LayerNormBackward(rec, a.dx, g("norm.weight"), g("norm.bias"), a.DNormed, a.X[c.Depth], p("norm.weight"), a.mean, a.rstd, ln)
	for l := c.Depth - 1; l >= 0; l-- {
		m.blockBackward(rec, m.blockParams(m.Params, l), m.blockParams(grads, l), a.X[l], &a.blocks[l], &a.grads, a.dx)
		if done != nil {
			done(BlockStart(l))
		}
	}
	m.tokensBackward(rec, a, grads, masked)
	PatchEmbedBackward(rec, g("patch_embed.proj.weight"), g("patch_embed.proj.bias"), nil, nil, a.dpe, a.Patches, p("patch_embed.proj.weight"), c.PatchSize)
	return rec.Err()
}

// tokensBackward records the gradients of the token assembly: CLS token,
// registers, position embeddings (through the interpolation when the grid
// differs), mask token, and a.dpe for the patch embedding.
func (m *ViT) tokensBackward(rec *gpu.Recorder, a *ViTActs, grads *Flat, masked bool) {
	c := m.Cfg
	D, R, N, T := c.EmbedDim, c.Registers, a.N, a.T
	g := grads.Get
	access := []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite}
	bufs := []*gpu.Tensor{a.dx, a.dsum, a.dpe}
	if masked {
		access = append(access, gpu.Read, gpu.ReadWrite)
		bufs = append(bufs, a.Mask, a.dmask)
	}
	k := gpu.Kernel{Name: "vit_tokens_backward", Data: struct{ Masked bool }{masked}, Access: access}
	rec.Dispatch(k, rec.Groups(T*D, 256), []uint32{gpu.U32(T * D), gpu.U32(a.B), gpu.U32(N), gpu.U32(R), gpu.U32(D)}, bufs...)
	if masked {
		SumRows(rec, g("mask_token"), a.dmask, true)
	}
	rows := func(t *gpu.Tensor, first, n int) *gpu.Tensor {
		v, err := t.View(first*D, n, D)
		if err != nil {
			rec.Fail(err)
		}
		return v
	}
	cls := rows(a.dsum, 0, 1)
	Add(rec, g("cls_token"), g("cls_token"), cls)
	pos := g("pos_embed")
	Add(rec, rows(pos, 0, 1), rows(pos, 0, 1), cls)
	if R > 0 {
		Add(rec, g("register_tokens"), g("register_tokens"), rows(a.dsum, 1, R))
	}
	grid := rows(a.dsum, 1+R, N)
	if a.PosGrid == nil {
		Add(rec, rows(pos, 1, N), rows(pos, 1, N), grid)
		return
	}
	pi, err := m.posInterp(a.GridH, a.GridW)
	if err != nil {
		rec.Fail(err)
		return
	}
	InterpBackward(rec, m.posGridView(pos, rec), grid, pi, true)
}
