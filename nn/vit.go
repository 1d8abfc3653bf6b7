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
	f, err := allocParams(dev, cfg.ParamShapes(), "vit "+cfg.String())
	if err != nil {
		return nil, err
	}
	return &ViT{Cfg: cfg, Params: f, dev: dev, interp: map[[2]int]*PosInterp{}}, nil
}

// Fits reports whether a backbone of config c can be allocated on a device
// with limits lim, without allocating anything: every parameter tensor must
// fit one storage binding.
func (c ViTConfig) Fits(lim gpu.Limits) error {
	if err := c.Validate(); err != nil {
		return err
	}
	_, err := paramLayout(lim, c.ParamShapes())
	return err
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
	a, err := m.newActs(B, H, W, false, o.Intermediate, !o.Attn0 && m.attentionFuses(H, W, false))
	if err != nil {
		return nil, fmt.Errorf("vit forward on %s: %w", images, err)
	}
	defer a.Release()
	if o.Mask != nil {
		if err := a.SetMask(m.dev, o.Mask); err != nil {
			return nil, fmt.Errorf("vit forward: %w", err)
		}
	}
	rec := m.dev.Record()
	m.Encode(rec, a, images, o.Mask != nil)
	if err := rec.Submit(); err != nil {
		return nil, fmt.Errorf("vit forward on %s: %w", images, err)
	}
	out := &Output{B: B, R: c.Registers, N: a.N, D: c.EmbedDim, GridH: a.GridH, GridW: a.GridW, Heads: c.Heads}
	// One readback for all outputs: each wait on the device is a round trip
	// to a browser's GPU process.
	reads := append([]*gpu.Tensor{a.X[0], a.Normed}, a.Inter...)
	if o.Attn0 {
		reads = append(reads, a.blocks[0].Attn.Probs)
	}
	vs, err := m.dev.ReadAll(reads...)
	if err != nil {
		return nil, fmt.Errorf("vit forward on %s: %w", images, err)
	}
	out.Prenorm, out.Normed = vs[0], vs[1]
	if len(a.Inter) > 0 {
		out.Intermediate = vs[2 : 2+len(a.Inter)]
	}
	if o.Attn0 {
		probs, T := vs[len(vs)-1], a.T
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
