package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// Model is a student or a teacher: the backbone and the heads.
type Model struct {
	Backbone *nn.ViT
	Head     *nn.DINOHead
	IBOTHead *nn.DINOHead // nil when iBOT shares Head
	dev      *gpu.Device
}

// Module is one separately clipped part of a model and its flat parameters.
type Module struct {
	Name   string // "backbone", "dino_head", "ibot_head" (the reference's names)
	Params *nn.Flat
}

// Modules lists the model's parts in a fixed order.
func (m *Model) Modules() []Module {
	mods := []Module{{"backbone", m.Backbone.Params}, {"dino_head", m.Head.Params}}
	if m.IBOTHead != nil {
		mods = append(mods, Module{"ibot_head", m.IBOTHead.Params})
	}
	return mods
}

// ibot returns the head iBOT uses.
func (m *Model) ibot() *nn.DINOHead {
	if m.IBOTHead != nil {
		return m.IBOTHead
	}
	return m.Head
}

// NewModel allocates a zero model for c.
func NewModel(dev *gpu.Device, c Config) (*Model, error) {
	bb, err := nn.NewViT(dev, c.Model)
	if err != nil {
		return nil, err
	}
	hc := nn.HeadConfig{In: c.Model.EmbedDim, Hidden: c.HeadHidden, Bottleneck: c.Bottleneck, Prototypes: c.Prototypes, Layers: 3}
	m := &Model{Backbone: bb, dev: dev}
	if m.Head, err = nn.NewDINOHead(dev, hc); err != nil {
		m.Release()
		return nil, err
	}
	if c.SeparateIBOTHead {
		if m.IBOTHead, err = nn.NewDINOHead(dev, hc); err != nil {
			m.Release()
			return nil, err
		}
	}
	return m, nil
}

// Release frees the parameters.
func (m *Model) Release() {
	if m.Backbone != nil {
		m.Backbone.Release()
	}
	for _, h := range []*nn.DINOHead{m.Head, m.IBOTHead} {
		if h != nil {
			h.Release()
		}
	}
}

// Init fills the model with DINOv2's initialisation, drawn from seed:
// linear weights truncated normal (std 0.02) with zero biases, the patch
// embedding and the prototype directions PyTorch's default uniform
// (+-1/sqrt(fan_in)), positions truncated normal (0.02), CLS and register
// tokens N(0, 1e-6^2), mask token 0, LayerNorms 1 and 0, LayerScale
// gammas layerScale (the reference: 1e-5), weight-norm g 1.
func (m *Model) Init(seed uint64, layerScale float64) error {
	rng := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))
	for _, mod := range m.Modules() {
		for _, name := range mod.Params.Layout.Names() {
			shape := mod.Params.Layout.Shape(name)
			v := initValues(rng, name, shape, fanIn(mod.Params.Layout, name), layerScale)
			if err := m.dev.Write(mod.Params.Get(name), v); err != nil {
				return fmt.Errorf("init %s.%s: %w", mod.Name, name, err)
			}
		}
	}
	return nil
}

// fanIn is the fan-in of the layer a parameter belongs to: the inputs per
// output of its weight (a bias takes its weight's), 1 for a vector.
func fanIn(l *nn.Layout, name string) int {
	w := l.Shape(name)
	if strings.HasSuffix(name, ".bias") {
		w = l.Shape(strings.TrimSuffix(name, ".bias") + ".weight")
	}
	if len(w) < 2 {
		return 1
	}
	return numel(w) / w[0]
}

func numel(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// initValues draws the initial values of one tensor; fanIn is that of its
// layer's weight.
func initValues(rng *rand.Rand, name string, shape []int, fanIn int, layerScale float64) []float32 {
	v := make([]float32, numel(shape))
	fill := func(f func() float64) {
		for i := range v {
			v[i] = float32(f())
		}
	}
	truncNormal := func(std float64) func() float64 {
		return func() float64 {
			for {
				// torch's trunc_normal_ cuts at +-2 absolute, which is
				// +-100 std here: plain normal draws in practice.
				if x := rng.NormFloat64() * std; math.Abs(x) <= 2 {
					return x
				}
			}
		}
	}
	uniform := func(fanIn int) func() float64 {
		b := 1 / math.Sqrt(float64(fanIn))
		return func() float64 { return (2*rng.Float64() - 1) * b }
	}
	switch {
	case strings.HasSuffix(name, "gamma"):
		fill(func() float64 { return layerScale })
	case strings.Contains(name, "norm") && strings.HasSuffix(name, ".weight"), name == "last_layer.weight_g":
		fill(func() float64 { return 1 })
	case strings.HasPrefix(name, "patch_embed.proj."), name == "last_layer.weight_v":
		fill(uniform(fanIn))
	case strings.HasSuffix(name, ".bias"), name == "mask_token":
	case name == "pos_embed":
		fill(truncNormal(0.02))
	case name == "cls_token", name == "register_tokens":
		fill(func() float64 { return 1e-6 * rng.NormFloat64() })
	default: // linear weights
		fill(truncNormal(0.02))
	}
	return v
}

// group is the optimiser's treatment of one parameter.
type group struct {
	LR, WD float64 // multipliers of the scheduled learning rate and weight decay
	Last   bool    // a prototype layer, frozen at the start
}

// paramGroup follows DINOv2's parameter groups: layer-wise LR decay
// rate^(depth+1-layer) with layer 0 for the embeddings and tokens, i+1 for
// block i and depth+1 for the final norm and the heads; the patch
// embedding's LR times patchMult; no weight decay on biases, norms and
// LayerScale gammas.
func paramGroup(module, name string, depth int, rate, patchMult float64) group {
	layer := depth + 1
	if module == "backbone" {
		switch {
		case strings.HasPrefix(name, "blocks."):
			i, err := strconv.Atoi(strings.SplitN(name, ".", 3)[1])
			if err == nil {
				layer = i + 1
			}
		case name != "norm.weight" && name != "norm.bias":
			layer = 0 // pos_embed, patch_embed, cls/mask/register tokens
		}
	}
	g := group{LR: math.Pow(rate, float64(depth+1-layer)), WD: 1, Last: strings.HasPrefix(name, "last_layer.")}
	if module == "backbone" && strings.HasPrefix(name, "patch_embed.") {
		g.LR *= patchMult
	}
	if strings.HasSuffix(name, ".bias") || strings.Contains(name, "norm") || strings.Contains(name, "gamma") {
		g.WD = 0
	}
	return g
}
