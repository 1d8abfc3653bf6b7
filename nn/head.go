package nn

import (
	"fmt"

	"github.com/webdino/webdino/gpu"
)

// HeadConfig shapes a DINO projection head: an MLP In -> Hidden (-> Hidden)*
// -> Bottleneck with GELUs between, L2 normalisation, then a weight-normalised
// linear layer Bottleneck -> Prototypes without bias.
type HeadConfig struct {
	In, Hidden, Bottleneck, Prototypes int
	Layers                             int // linear layers of the MLP (DINOv2: 3)
}

// DINOv2Head is the recipe's head for a backbone of width in.
func DINOv2Head(in, prototypes int) HeadConfig {
	return HeadConfig{In: in, Hidden: 2048, Bottleneck: 256, Prototypes: prototypes, Layers: 3}
}

// Validate reports a head that cannot be built.
func (c HeadConfig) Validate() error {
	if c.In <= 0 || c.Hidden <= 0 || c.Bottleneck <= 0 || c.Prototypes <= 0 || c.Layers < 1 {
		return fmt.Errorf("dino head %+v: every size must be positive and layers >= 1", c)
	}
	return nil
}

// ParamShapes lists the parameters by the reference's names (module
// dino_head: mlp.0, mlp.2, ... with the GELUs at odd indices; weight-norm's
// last_layer.weight_g [K, 1] and weight_v [K, Bottleneck]).
func (c HeadConfig) ParamShapes() []Param {
	var ps []Param
	in := c.In
	for i := 0; i < c.Layers; i++ {
		out := c.Hidden
		if i == c.Layers-1 {
			out = c.Bottleneck
		}
		ps = append(ps, Param{Name: fmt.Sprintf("mlp.%d.weight", 2*i), Shape: []int{out, in}},
			Param{Name: fmt.Sprintf("mlp.%d.bias", 2*i), Shape: []int{out}})
		in = out
	}
	return append(ps, Param{Name: "last_layer.weight_g", Shape: []int{c.Prototypes, 1}},
		Param{Name: "last_layer.weight_v", Shape: []int{c.Prototypes, c.Bottleneck}})
}

// DINOHead is a head on a device with its parameters in one flat buffer.
type DINOHead struct {
	Cfg    HeadConfig
	Params *Flat
	dev    *gpu.Device
	// The normalised prototypes v/||v||, ||v|| and their gradient's
	// scratch ([K, Bottleneck] each): one set for all the head's
	// activations (a shared DINO/iBOT head runs twice a step), made by
	// the first NewActs that needs them.
	wn, vnorm, dWn *gpu.Tensor
}

// NewDINOHead allocates a zero-initialised head.
func NewDINOHead(dev *gpu.Device, c HeadConfig) (*DINOHead, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	f, err := allocParams(dev, c.ParamShapes(), "dino head")
	if err != nil {
		return nil, err
	}
	return &DINOHead{Cfg: c, Params: f, dev: dev}, nil
}

// allocParams lays out and allocates named parameters.
func allocParams(dev *gpu.Device, ps []Param, label string) (*Flat, error) {
	l, err := paramLayout(dev.Limits(), ps)
	if err != nil {
		return nil, fmt.Errorf("%s does not fit this device (%s): %w", label, dev.Info().Name, err)
	}
	return l.Alloc(dev, label)
}

// paramLayout places ps in buffers no larger than the device's largest
// storage binding, or says which tensor cannot fit one.
func paramLayout(lim gpu.Limits, ps []Param) (*Layout, error) {
	l := NewLayout(lim.MaxStorageBinding)
	for _, p := range ps {
		if err := l.Add(p.Name, p.Shape...); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Release frees the parameters.
func (h *DINOHead) Release() {
	h.Params.Release()
	for _, t := range []*gpu.Tensor{h.wn, h.vnorm, h.dWn} {
		if t != nil {
			t.Buf.Release()
		}
	}
	h.wn, h.vnorm, h.dWn = nil, nil, nil
}

// NewGrads allocates zeroed gradients laid out like the parameters.
func (h *DINOHead) NewGrads() (*Flat, error) { return h.Params.Layout.Alloc(h.dev, "dino head grads") }

// HeadActs holds one batch of R rows through the head: the input X [R, In]
// (the caller fills it, e.g. gathered CLS tokens), the outputs Logits
// [R, K], everything the backward reads, and its scratch. The caller writes
// DLogits before Backward (which overwrites it) and reads DX after; DLogits
// may share Logits' buffer (NewActs' gradInLogits).
type HeadActs struct {
	R            int
	train        bool // the backward tensors exist
	X, Logits    *gpu.Tensor
	DLogits, DX  *gpu.Tensor
	pre, h       []*gpu.Tensor // per hidden layer: pre-activation, GELU output
	z, zn, znorm *gpu.Tensor   // bottleneck, its normalisation, the row norms
	wn, vnorm    *gpu.Tensor   // the head's normalised prototype directions v/||v||, ||v|| (DINOHead.wn)
	raw          *gpu.Tensor   // zn wn^T before the g scale
	dWn, dZn     *gpu.Tensor   // dWn: the head's scratch
	dZ           *gpu.Tensor
	dH           []*gpu.Tensor
	scratch      *gpu.Tensor
	bufs         []*gpu.Tensor
}

// normEps is torch.nn.functional.normalize's default.
const normEps = 1e-12

// NewActs allocates the tensors for R rows; with train false only those
// the forward pass needs (a teacher's: no pre-activations, no logits
// before the g scale), and Backward refuses them. With gradInLogits (and
// train), DLogits is Logits' own buffer, R x K floats fewer (the largest
// tensors of a head with 65536 prototypes): the caller's loss backward then
// replaces the logits by their gradient (SoftmaxCrossEntropyBackward in
// place), and Logits holds no logits after it.
func (h *DINOHead) NewActs(R int, train, gradInLogits bool) (*HeadActs, error) {
	c := h.Cfg
	a := &HeadActs{R: R, train: train}
	var err error
	t := func(shape ...int) *gpu.Tensor {
		if err != nil {
			return nil
		}
		var x *gpu.Tensor
		x, err = h.dev.NewTensor("head activation", shape...)
		a.bufs = append(a.bufs, x)
		return x
	}
	// backward allocates what only Backward reads.
	backward := func(shape ...int) *gpu.Tensor {
		if !train {
			return nil
		}
		return t(shape...)
	}
	K, Bn := c.Prototypes, c.Bottleneck
	a.X, a.DX = t(R, c.In), backward(R, c.In)
	for i := 0; i < c.Layers-1; i++ {
		a.pre = append(a.pre, backward(R, c.Hidden))
		a.h = append(a.h, t(R, c.Hidden))
		a.dH = append(a.dH, backward(R, c.Hidden))
	}
	a.z, a.zn, a.znorm = t(R, Bn), t(R, Bn), t(R)
	if h.wn == nil && err == nil {
		h.wn, err = h.dev.NewTensor("dino head prototypes", K, Bn)
		if err == nil {
			h.vnorm, err = h.dev.NewTensor("dino head prototypes", K)
		}
	}
	if train && h.dWn == nil && err == nil {
		h.dWn, err = h.dev.NewTensor("dino head prototypes", K, Bn)
	}
	a.wn, a.vnorm, a.dWn = h.wn, h.vnorm, h.dWn
	a.raw, a.Logits = backward(R, K), t(R, K)
	if gradInLogits && train {
		a.DLogits = a.Logits
	} else {
		a.DLogits = backward(R, K)
	}
	a.dZn, a.dZ = backward(R, Bn), backward(R, Bn)
	a.scratch = t(ScratchLen(h.dev, K))
	if err != nil {
		a.Release()
		return nil, fmt.Errorf("dino head: activations for %d rows: %w", R, err)
	}
	return a, nil
}

// Release frees the tensors.
func (a *HeadActs) Release() {
	for _, t := range a.bufs {
		if t != nil {
			t.Buf.Release()
		}
	}
	a.bufs = nil
}

func (h *DINOHead) linear(i int, f *Flat) (w, b *gpu.Tensor) {
	return f.Get(fmt.Sprintf("mlp.%d.weight", 2*i)), f.Get(fmt.Sprintf("mlp.%d.bias", 2*i))
}

// Forward records Logits = g * normalize(mlp(X)) normalize(v)^T.
func (h *DINOHead) Forward(rec *gpu.Recorder, a *HeadActs) error {
	c := h.Cfg
	x := a.X
	for i := 0; i < c.Layers; i++ {
		w, b := h.linear(i, h.Params)
		if i == c.Layers-1 {
			MatMul(rec, a.z, x, w, MatMulOpts{TransB: true, Bias: b})
			break
		}
		MatMul(rec, a.h[i], x, w, MatMulOpts{TransB: true, Bias: b, Act: GELU, PreAct: a.pre[i]})
		x = a.h[i]
	}
	L2Normalize(rec, a.zn, a.znorm, a.z, normEps)
	L2Normalize(rec, a.wn, a.vnorm, h.Params.Get("last_layer.weight_v"), normEps)
	g, err := h.Params.Get("last_layer.weight_g").Reshape(c.Prototypes)
	if err != nil {
		return rec.Fail(err)
	}
	MatMul(rec, a.Logits, a.zn, a.wn, MatMulOpts{TransB: true, PreAct: a.raw, Scale: g})
	return rec.Err()
}

// Backward records the gradients from a.DLogits: parameter gradients are
// added into grads and a.DX receives dL/dX.
func (h *DINOHead) Backward(rec *gpu.Recorder, a *HeadActs, grads *Flat) error {
	if !a.train {
		return rec.Fail(fmt.Errorf("dino head backward: activations made without backward tensors (NewActs train false)"))
	}
	c := h.Cfg
	p := h.Params.Get
	g, err1 := p("last_layer.weight_g").Reshape(c.Prototypes)
	dg, err2 := grads.Get("last_layer.weight_g").Reshape(c.Prototypes)
	if err := firstErr(err1, err2); err != nil {
		return rec.Fail(err)
	}
	// Logits = g * raw: the g scale is a LayerScale over the prototypes.
	// The gradient of raw overwrites DLogits, whose last reader this is.
	dRaw := a.DLogits
	LayerScaleBackward(rec, dRaw, dg, a.DLogits, a.raw, g, a.scratch, true)
	MatMul(rec, a.dWn, dRaw, a.zn, MatMulOpts{TransA: true})
	L2NormalizeBackward(rec, grads.Get("last_layer.weight_v"), a.dWn, a.wn, a.vnorm, normEps, true)
	MatMul(rec, a.dZn, dRaw, a.wn, MatMulOpts{})
	L2NormalizeBackward(rec, a.dZ, a.dZn, a.zn, a.znorm, normEps, false)
	dy := a.dZ
	for i := c.Layers - 1; i >= 0; i-- {
		w, _ := h.linear(i, h.Params)
		dw, db := h.linear(i, grads)
		x, dx := a.X, a.DX
		if i > 0 {
			x, dx = a.h[i-1], a.dH[i-1]
		}
		var o MatMulOpts
		if i > 0 {
			o.GELUGradAt = a.pre[i-1]
		}
		linearBackward(rec, dx, dw, db, dy, x, w, o)
		dy = dx
	}
	return rec.Err()
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Rows returns the acts restricted to the first R rows (R at most a.R): the
// same buffers, viewed from their start, so a batch whose row count varies
// from step to step (iBOT's masked patches) reuses one allocation.
func (a *HeadActs) Rows(R int) (*HeadActs, error) {
	if R <= 0 || R > a.R {
		return nil, fmt.Errorf("dino head: %d rows of acts made for %d", R, a.R)
	}
	var err error
	v := func(t *gpu.Tensor) *gpu.Tensor {
		if err != nil || t == nil {
			return nil
		}
		shape := append([]int{R}, t.Shape[1:]...)
		var s *gpu.Tensor
		s, err = t.View(0, shape...)
		return s
	}
	b := *a
	b.R, b.bufs = R, nil
	b.X, b.Logits, b.DLogits, b.DX = v(a.X), v(a.Logits), v(a.DLogits), v(a.DX)
	b.pre, b.h, b.dH = nil, nil, nil
	for i := range a.pre {
		b.pre, b.h, b.dH = append(b.pre, v(a.pre[i])), append(b.h, v(a.h[i])), append(b.dH, v(a.dH[i]))
	}
	b.z, b.zn, b.znorm, b.dZn, b.dZ, b.raw = v(a.z), v(a.zn), v(a.znorm), v(a.dZn), v(a.dZ), v(a.raw)
	if err != nil {
		return nil, fmt.Errorf("dino head: %w", err)
	}
	return &b, nil
}
