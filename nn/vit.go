package nn

import (
	"fmt"
	"math"

	"github.com/webdino/webdino/gpu"
)

// ViT is a DINOv2 backbone on a device: its config, its parameters in one
// flat buffer named by the official state-dict keys, and cached position
// interpolation tables per input grid.
type ViT struct {
	Cfg    ViTConfig
	Params *Flat
	dev    *gpu.Device
	interp map[[2]int]*PosInterp
}

// NewViT allocates a zero-initialised backbone for cfg on dev.
func NewViT(dev *gpu.Device, cfg ViTConfig) (*ViT, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := NewLayout(dev.Limits().MaxStorageBinding)
	for _, p := range cfg.ParamShapes() {
		if err := l.Add(p.Name, p.Shape...); err != nil {
			return nil, fmt.Errorf("vit %s: %w", cfg, err)
		}
	}
	f, err := l.Alloc(dev, "vit params")
	if err != nil {
		return nil, err
	}
	return &ViT{Cfg: cfg, Params: f, dev: dev, interp: map[[2]int]*PosInterp{}}, nil
}

// Release frees the parameters and cached tables.
func (m *ViT) Release() {
	m.Params.Release()
	for _, pi := range m.interp {
		pi.Release()
	}
	m.interp = nil
}

// SetWeights uploads named tensors (official keys, float32). Every parameter
// of the config must be present with its exact element count; unknown names
// are an error naming the key.
func (m *ViT) SetWeights(w map[string][]float32) error {
	want := map[string]Param{}
	for _, p := range m.Cfg.ParamShapes() {
		want[p.Name] = p
	}
	for name := range w {
		if _, ok := want[name]; !ok {
			return fmt.Errorf("vit weights: unknown tensor %q for %s", name, m.Cfg)
		}
	}
	for _, p := range m.Cfg.ParamShapes() {
		data, ok := w[p.Name]
		if !ok {
			return fmt.Errorf("vit weights: tensor %q missing", p.Name)
		}
		if int64(len(data)) != p.Numel() {
			return fmt.Errorf("vit weights: tensor %q has %d values, shape %v wants %d", p.Name, len(data), p.Shape, p.Numel())
		}
		if err := m.dev.Write(m.Params.Get(p.Name), data); err != nil {
			return fmt.Errorf("vit weights: %q: %w", p.Name, err)
		}
	}
	return nil
}

// Weights reads every parameter back (for checkpoints).
func (m *ViT) Weights() (map[string][]float32, error) {
	out := map[string][]float32{}
	for _, p := range m.Cfg.ParamShapes() {
		v, err := m.dev.Read(m.Params.Get(p.Name))
		if err != nil {
			return nil, fmt.Errorf("read %q: %w", p.Name, err)
		}
		out[p.Name] = v
	}
	return out, nil
}

// posInterp returns the cached tables that resize the stored position grid
// to gh x gw patches, or nil when the grid already matches.
func (m *ViT) posInterp(gh, gw int) (*PosInterp, error) {
	M := m.Cfg.PosGrid
	if gh == M && gw == M {
		return nil, nil
	}
	key := [2]int{gh, gw}
	if pi, ok := m.interp[key]; ok {
		return pi, nil
	}
	mode := BicubicOffset
	if m.Cfg.InterpAntialias {
		mode = BicubicAntialias
	} else if math.Abs(m.Cfg.InterpOffset-0.1) > 1e-12 {
		return nil, fmt.Errorf("vit: position interpolation offset %g is not supported (0.1 plain or antialiased)", m.Cfg.InterpOffset)
	}
	pi, err := NewPosInterp(m.dev, M, M, gh, gw, mode)
	if err != nil {
		return nil, err
	}
	m.interp[key] = pi
	return pi, nil
}

// Output is what a forward pass returns, in the reference's terms. Token
// order in every [B, T, D] array is cls, registers, patches (row-major over
// the patch grid).
type Output struct {
	B, R, N, D   int
	GridH, GridW int
	Heads        int
	Prenorm      []float32   // x_prenorm [B, T, D]
	Normed       []float32   // the final norm of Prenorm [B, T, D]
	Intermediate [][]float32 // last-n blocks' outputs through the final norm, earliest first, [B, T, D] each
	Attn0        []float32   // CLS attention of the last block [B, heads, T], when asked for
}

// T is the number of tokens per image.
func (o *Output) T() int { return 1 + o.R + o.N }

// slice copies tokens [t0, t0+n) of every image of a [B, T, D] array.
func (o *Output) slice(x []float32, t0, n int) []float32 {
	T, D := o.T(), o.D
	out := make([]float32, 0, o.B*n*D)
	for b := 0; b < o.B; b++ {
		out = append(out, x[(b*T+t0)*D:(b*T+t0+n)*D]...)
	}
	return out
}

// ClsToken is x_norm_clstoken [B, D].
func (o *Output) ClsToken() []float32 { return o.slice(o.Normed, 0, 1) }

// RegTokens is x_norm_regtokens [B, R, D].
func (o *Output) RegTokens() []float32 { return o.slice(o.Normed, 1, o.R) }

// PatchTokens is x_norm_patchtokens [B, N, D].
func (o *Output) PatchTokens() []float32 { return o.slice(o.Normed, 1+o.R, o.N) }

// IntermediatePatchTokens and IntermediateClsToken are layer i of
// get_intermediate_layers: registers and cls stripped, or the cls alone.
func (o *Output) IntermediatePatchTokens(i int) []float32 {
	return o.slice(o.Intermediate[i], 1+o.R, o.N)
}
func (o *Output) IntermediateClsToken(i int) []float32 { return o.slice(o.Intermediate[i], 0, 1) }

// ForwardOpts selects optional outputs.
type ForwardOpts struct {
	Intermediate int  // number of last blocks whose normed outputs to return
	Attn0        bool // return the last block's CLS attention
	// Mask, if set, is [B*N] with true where a patch is replaced by the
	// mask token (iBOT); inference leaves it nil.
	Mask []bool
}

// Forward runs images [B, C, H, W] (H, W multiples of the patch size,
// normalised) through the backbone and reads the outputs back.
func (m *ViT) Forward(images *gpu.Tensor, o ForwardOpts) (*Output, error) {
	c := m.Cfg
	if len(images.Shape) != 4 || images.Shape[1] != c.InChans {
		return nil, fmt.Errorf("vit forward: images %s, want [B, %d, H, W]", images, c.InChans)
	}
	B, H, W := images.Shape[0], images.Shape[2], images.Shape[3]
	P := c.PatchSize
	if H%P != 0 || W%P != 0 || H < P || W < P {
		return nil, fmt.Errorf("vit forward: images %s: height and width must be positive multiples of the patch size %d", images, P)
	}
	if o.Intermediate < 0 || o.Intermediate > c.Depth {
		return nil, fmt.Errorf("vit forward: %d intermediate layers of a %d-block model", o.Intermediate, c.Depth)
	}
	gh, gw := H/P, W/P
	N, R, D := gh*gw, c.Registers, c.EmbedDim
	T := 1 + R + N
	if o.Mask != nil && len(o.Mask) != B*N {
		return nil, fmt.Errorf("vit forward: mask of %d patches for %d images of %d patches", len(o.Mask), B, N)
	}
	a, err := newActArena(m.dev)
	if err != nil {
		return nil, err
	}
	defer a.release()
	t := a.tensor
	patches, pe := t(B, N, c.InChans*P*P), t(B, N, D)
	x, ln, mean, rstd := t(B, T, D), t(B, T, D), t(B*T), t(B*T)
	qkv, att := t(B, T, 3*D), t(B, T, D)
	attn := NewAttnTensors(t, B, T, c.Heads, c.HeadDim())
	hidden := t(B, T, c.MLPHidden)
	var h12 *gpu.Tensor
	if c.FFN == FFNSwiGLU {
		h12 = t(B, T, 2*c.MLPHidden)
	}
	inter := make([]*gpu.Tensor, o.Intermediate)
	for i := range inter {
		inter[i] = t(B, T, D)
	}
	normed := t(B, T, D)
	var mask *gpu.Tensor
	if o.Mask != nil {
		mask = t(B, N)
	}
	if a.err != nil {
		return nil, fmt.Errorf("vit forward on %s: %w", images, a.err)
	}
	if mask != nil {
		words := make([]uint32, len(o.Mask))
		for i, v := range o.Mask {
			if v {
				words[i] = 1
			}
		}
		if err := m.dev.WriteU32(mask, words); err != nil {
			return nil, err
		}
	}
	pi, err := m.posInterp(gh, gw)
	if err != nil {
		return nil, err
	}
	rec := m.dev.Record()
	p := m.Params.Get
	PatchEmbed(rec, pe, patches, images, p("patch_embed.proj.weight"), p("patch_embed.proj.bias"), P)
	posGrid, gridBase := p("pos_embed"), 1
	if pi != nil {
		posGrid, gridBase = t(gh, gw, D), 0
		if a.err != nil {
			return nil, fmt.Errorf("vit forward on %s: %w", images, a.err)
		}
		grid, err := p("pos_embed").View(D, c.PosGrid, c.PosGrid, D)
		if err != nil {
			return nil, err
		}
		Interp(rec, posGrid, grid, pi)
	}
	m.tokens(rec, x, pe, posGrid, gridBase, mask)
	eps := float32(c.LNEps)
	scale := float32(1 / math.Sqrt(float64(c.HeadDim())))
	for l := 0; l < c.Depth; l++ {
		bp := func(name string) *gpu.Tensor {
			full := fmt.Sprintf("blocks.%d.%s", l, name)
			if m.Params.Layout.Shape(full) == nil {
				return nil // optional: qkv bias, LayerScale
			}
			return p(full)
		}
		LayerNorm(rec, ln, mean, rstd, x, bp("norm1.weight"), bp("norm1.bias"), eps)
		MatMul(rec, qkv, ln, bp("attn.qkv.weight"), MatMulOpts{TransB: true, Bias: bp("attn.qkv.bias")})
		Attention(rec, att, qkv, c.Heads, scale, attn)
		MatMul(rec, x, att, bp("attn.proj.weight"), MatMulOpts{TransB: true, Bias: bp("attn.proj.bias"), Scale: bp("ls1.gamma"), Accumulate: true})
		LayerNorm(rec, ln, mean, rstd, x, bp("norm2.weight"), bp("norm2.bias"), eps)
		if c.FFN == FFNSwiGLU {
			MatMul(rec, h12, ln, bp("mlp.w12.weight"), MatMulOpts{TransB: true, Bias: bp("mlp.w12.bias")})
			SwiGLU(rec, hidden, h12)
			MatMul(rec, x, hidden, bp("mlp.w3.weight"), MatMulOpts{TransB: true, Bias: bp("mlp.w3.bias"), Scale: bp("ls2.gamma"), Accumulate: true})
		} else {
			MatMul(rec, hidden, ln, bp("mlp.fc1.weight"), MatMulOpts{TransB: true, Bias: bp("mlp.fc1.bias"), Act: GELU})
			MatMul(rec, x, hidden, bp("mlp.fc2.weight"), MatMulOpts{TransB: true, Bias: bp("mlp.fc2.bias"), Scale: bp("ls2.gamma"), Accumulate: true})
		}
		if i := l - (c.Depth - o.Intermediate); i >= 0 {
			LayerNorm(rec, inter[i], mean, rstd, x, p("norm.weight"), p("norm.bias"), eps)
		}
	}
	LayerNorm(rec, normed, mean, rstd, x, p("norm.weight"), p("norm.bias"), eps)
	if err := rec.Submit(); err != nil {
		return nil, fmt.Errorf("vit forward on %s: %w", images, err)
	}
	out := &Output{B: B, R: R, N: N, D: D, GridH: gh, GridW: gw, Heads: c.Heads}
	if out.Prenorm, err = m.dev.Read(x); err != nil {
		return nil, err
	}
	if out.Normed, err = m.dev.Read(normed); err != nil {
		return nil, err
	}
	for _, it := range inter {
		v, err := m.dev.Read(it)
		if err != nil {
			return nil, err
		}
		out.Intermediate = append(out.Intermediate, v)
	}
	if o.Attn0 {
		probs, err := m.dev.Read(attn.Probs)
		if err != nil {
			return nil, err
		}
		for bh := 0; bh < B*c.Heads; bh++ {
			out.Attn0 = append(out.Attn0, probs[bh*T*T:bh*T*T+T]...)
		}
	}
	return out, nil
}

// tokens records the assembly of x [B, T, D] from patch embeddings, the CLS
// token, registers and positions (see vit_tokens in shaders/vit.wgsl).
func (m *ViT) tokens(rec *gpu.Recorder, x, pe, posGrid *gpu.Tensor, gridBase int, mask *gpu.Tensor) error {
	c := m.Cfg
	p := m.Params.Get
	N, D := pe.Dim(1), c.EmbedDim
	data := struct {
		Registers, Masked bool
		MaskTokenBinding  int
	}{Registers: c.Registers > 0, Masked: mask != nil, MaskTokenBinding: 6}
	access := []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}
	bufs := []*gpu.Tensor{pe, p("cls_token"), p("pos_embed"), posGrid, x}
	if data.Registers {
		access = append(access, gpu.Read)
		bufs = append(bufs, p("register_tokens"))
		data.MaskTokenBinding = 7
	}
	if data.Masked {
		access = append(access, gpu.Read, gpu.Read)
		bufs = append(bufs, p("mask_token"), mask)
	}
	n := x.Len()
	k := gpu.Kernel{Name: "vit_tokens", Data: data, Access: access}
	return rec.Dispatch(k, rec.Groups(n, 256), []uint32{gpu.U32(n), gpu.U32(N), gpu.U32(c.Registers), gpu.U32(D), gpu.U32(gridBase)}, bufs...)
}

// actArena allocates the activations of one pass and frees them together.
type actArena struct {
	dev  *gpu.Device
	bufs []*gpu.Tensor
	err  error
}

func newActArena(dev *gpu.Device) (*actArena, error) { return &actArena{dev: dev}, nil }

// tensor allocates a zeroed tensor; the first failure is kept in a.err and
// later calls return nil (callers check a.err once).
func (a *actArena) tensor(shape ...int) *gpu.Tensor {
	if a.err != nil {
		return nil
	}
	t, err := a.dev.NewTensor("activation", shape...)
	if err != nil {
		a.err = err
		return nil
	}
	a.bufs = append(a.bufs, t)
	return t
}

func (a *actArena) release() {
	for _, t := range a.bufs {
		t.Buf.Release()
	}
}
