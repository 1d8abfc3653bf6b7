package nn

import (
	"fmt"
	"sort"
	"strings"
)

// FFNKind names the feed-forward network inside a ViT block.
type FFNKind string

const (
	// FFNMLP is fc1 (D -> H), exact GELU, fc2 (H -> D).
	FFNMLP FFNKind = "mlp"
	// FFNSwiGLU is w12 (D -> 2H) split into x1, x2, then w3(silu(x1) * x2) (ViT-g).
	FFNSwiGLU FFNKind = "swiglu"
)

// ViTConfig describes a DINOv2 vision transformer backbone: everything needed
// to name and shape its parameters and to run it. Field names follow the
// reference; checkpoints store this struct (see docs/checkpoint.md).
type ViTConfig struct {
	PatchSize int     // side of a square patch in pixels (14)
	InChans   int     // input channels (3)
	EmbedDim  int     // D, the token width
	Depth     int     // number of blocks
	Heads     int     // attention heads; head dim = D / Heads (64 in every DINOv2 model)
	MLPHidden int     // H, the hidden width of the FFN
	FFN       FFNKind // "mlp" or "swiglu"
	Registers int     // register tokens R (0 or 4 in released models)
	// PosGrid is the side M of the square patch grid the position embeddings
	// are stored for: 37 for hub weights (518 / 14). Other inputs interpolate.
	PosGrid    int
	LayerScale bool    // blocks scale both residual branches by learned gammas (ls1, ls2)
	QKVBias    bool    // the fused qkv projection has a bias
	LNEps      float64 // LayerNorm epsilon (1e-6)
	// Position-embedding interpolation to another patch grid n (bicubic,
	// align_corners false). The hub's register models use an antialiased
	// kernel and scale n/M (InterpAntialias, InterpOffset 0); models without
	// registers use the plain kernel and scale (n+0.1)/M (InterpOffset 0.1).
	InterpAntialias bool
	InterpOffset    float64
}

// Sanity bounds for Validate: far above any released model, low enough that
// a hostile checkpoint header cannot make ParamShapes or NumParams explode.
const (
	maxPatch    = 64
	maxChans    = 16
	maxDim      = 1 << 16
	maxDepth    = 256
	maxHidden   = 1 << 18
	maxRegister = 256
	maxGrid     = 512
)

// presets are the released DINOv2 backbones (hub names without "dinov2_").
var presets = map[string]ViTConfig{
	"vits14": vit(384, 12, 6, 1536, FFNMLP, 0),
	"vitb14": vit(768, 12, 12, 3072, FFNMLP, 0),
	"vitl14": vit(1024, 24, 16, 4096, FFNMLP, 0),
	// ViT-g: SwiGLU hidden = round_up(int(4D * 2/3), 8) = 4096.
	"vitg14":     vit(1536, 40, 24, 4096, FFNSwiGLU, 0),
	"vits14_reg": vit(384, 12, 6, 1536, FFNMLP, 4),
	"vitb14_reg": vit(768, 12, 12, 3072, FFNMLP, 4),
	"vitl14_reg": vit(1024, 24, 16, 4096, FFNMLP, 4),
	"vitg14_reg": vit(1536, 40, 24, 4096, FFNSwiGLU, 4),
}

func vit(dim, depth, heads, hidden int, ffn FFNKind, registers int) ViTConfig {
	c := ViTConfig{
		PatchSize: 14, InChans: 3, EmbedDim: dim, Depth: depth, Heads: heads,
		MLPHidden: hidden, FFN: ffn, Registers: registers, PosGrid: 37,
		LayerScale: true, QKVBias: true, LNEps: 1e-6,
	}
	c.SetHubInterpolation()
	return c
}

// SetHubInterpolation sets the position-embedding interpolation the hub
// models use: antialiased with offset 0 with registers, plain with offset 0.1
// without. Importers call it, since weight files do not record it.
func (c *ViTConfig) SetHubInterpolation() {
	c.InterpAntialias = c.Registers > 0
	c.InterpOffset = 0.1
	if c.Registers > 0 {
		c.InterpOffset = 0
	}
}

// Preset returns a released configuration by hub name: vits14, vitb14,
// vitl14, vitg14, or one of those with "_reg" (4 registers). A "dinov2_"
// prefix is accepted.
func Preset(name string) (ViTConfig, error) {
	c, ok := presets[strings.TrimPrefix(name, "dinov2_")]
	if !ok {
		return ViTConfig{}, fmt.Errorf("vit config: unknown preset %q (known: %s)", name, strings.Join(PresetNames(), ", "))
	}
	return c, nil
}

// PresetNames lists the preset names, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Validate reports the first inconsistency in c.
func (c ViTConfig) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("vit config: "+format, args...)
	}
	in := func(v, lo, hi int) bool { return v >= lo && v <= hi }
	switch {
	case !in(c.PatchSize, 1, maxPatch):
		return bad("patch size %d must be in [1, %d]", c.PatchSize, maxPatch)
	case !in(c.InChans, 1, maxChans):
		return bad("input channels %d must be in [1, %d]", c.InChans, maxChans)
	case !in(c.EmbedDim, 1, maxDim):
		return bad("embed dim %d must be in [1, %d]", c.EmbedDim, maxDim)
	case !in(c.Depth, 1, maxDepth):
		return bad("depth %d must be in [1, %d]", c.Depth, maxDepth)
	case c.Heads < 1 || c.EmbedDim%c.Heads != 0:
		return bad("%d heads do not divide embed dim %d", c.Heads, c.EmbedDim)
	case !in(c.MLPHidden, 1, maxHidden):
		return bad("MLP hidden dim %d must be in [1, %d]", c.MLPHidden, maxHidden)
	case c.FFN != FFNMLP && c.FFN != FFNSwiGLU:
		return bad("FFN kind %q must be %q or %q", c.FFN, FFNMLP, FFNSwiGLU)
	case !in(c.Registers, 0, maxRegister):
		return bad("%d registers must be in [0, %d]", c.Registers, maxRegister)
	case !in(c.PosGrid, 1, maxGrid):
		return bad("position grid %d must be in [1, %d]", c.PosGrid, maxGrid)
	case !(c.LNEps > 0 && c.LNEps < 1):
		return bad("LayerNorm eps %g must be in (0, 1)", c.LNEps)
	case !(c.InterpOffset >= 0 && c.InterpOffset < 1):
		return bad("interpolation offset %g must be in [0, 1)", c.InterpOffset)
	}
	return nil
}

// HeadDim is the width of one attention head.
func (c ViTConfig) HeadDim() int { return c.EmbedDim / c.Heads }

// Param is the official state-dict name and shape of one parameter.
type Param struct {
	Name  string
	Shape []int
}

// Numel is the number of elements of the parameter.
func (p Param) Numel() int64 {
	n := int64(1)
	for _, s := range p.Shape {
		n *= int64(s)
	}
	return n
}

// blockFirstParam is the first parameter of a block in ParamShapes.
const blockFirstParam = "norm1.weight"

// BlockStart names the first parameter of block l: in the layout, block l
// and everything after it (the later blocks, the final norm) start there.
func BlockStart(l int) string { return fmt.Sprintf("blocks.%d.%s", l, blockFirstParam) }

// ParamShapes lists every parameter of the backbone by its official
// state-dict name, in a fixed order: cls_token, pos_embed, mask_token,
// register_tokens (with registers), patch_embed.proj.{weight,bias}, then per
// block norm1, attn.qkv, attn.proj, ls1, norm2, the FFN (mlp.fc1, mlp.fc2 or
// mlp.w12, mlp.w3), ls2, and last norm. Linear weights are [out, in]. The
// config must be valid.
func (c ViTConfig) ParamShapes() []Param {
	D, H, M, p := c.EmbedDim, c.MLPHidden, c.PosGrid, c.PatchSize
	ps := []Param{
		{"cls_token", []int{1, 1, D}},
		{"pos_embed", []int{1, 1 + M*M, D}},
		{"mask_token", []int{1, D}},
	}
	if c.Registers > 0 {
		ps = append(ps, Param{"register_tokens", []int{1, c.Registers, D}})
	}
	ps = append(ps,
		Param{"patch_embed.proj.weight", []int{D, c.InChans, p, p}},
		Param{"patch_embed.proj.bias", []int{D}})
	for i := 0; i < c.Depth; i++ {
		add := func(name string, shape ...int) {
			ps = append(ps, Param{fmt.Sprintf("blocks.%d.%s", i, name), shape})
		}
		add(blockFirstParam, D) // first: BlockStart
		add("norm1.bias", D)
		add("attn.qkv.weight", 3*D, D)
		if c.QKVBias {
			add("attn.qkv.bias", 3*D)
		}
		add("attn.proj.weight", D, D)
		add("attn.proj.bias", D)
		if c.LayerScale {
			add("ls1.gamma", D)
		}
		add("norm2.weight", D)
		add("norm2.bias", D)
		if c.FFN == FFNSwiGLU {
			add("mlp.w12.weight", 2*H, D)
			add("mlp.w12.bias", 2*H)
			add("mlp.w3.weight", D, H)
			add("mlp.w3.bias", D)
		} else {
			add("mlp.fc1.weight", H, D)
			add("mlp.fc1.bias", H)
			add("mlp.fc2.weight", D, H)
			add("mlp.fc2.bias", D)
		}
		if c.LayerScale {
			add("ls2.gamma", D)
		}
	}
	return append(ps, Param{"norm.weight", []int{D}}, Param{"norm.bias", []int{D}})
}

// NumParams counts the parameters without listing them (mask token
// included), so callers can bound a hostile config cheaply. The config must
// be valid.
func (c ViTConfig) NumParams() int64 {
	D, H, M := int64(c.EmbedDim), int64(c.MLPHidden), int64(c.PosGrid)
	p := int64(c.PatchSize)
	n := D + (1+M*M)*D + D + int64(c.Registers)*D + D*int64(c.InChans)*p*p + D + 2*D
	block := 4*D + 3*D*D + D*D + D // norms, qkv, proj
	if c.QKVBias {
		block += 3 * D
	}
	if c.LayerScale {
		block += 2 * D
	}
	if c.FFN == FFNSwiGLU {
		block += 2*H*D + 2*H + D*H + D
	} else {
		block += H*D + H + D*H + D
	}
	return n + int64(c.Depth)*block
}

// String is a one-line summary for logs.
func (c ViTConfig) String() string {
	var flags []string
	if c.LayerScale {
		flags = append(flags, "layerscale")
	}
	if c.QKVBias {
		flags = append(flags, "qkv-bias")
	}
	if c.InterpAntialias {
		flags = append(flags, "antialiased-pos-interp")
	}
	return fmt.Sprintf("ViT patch %d, dim %d, depth %d, heads %d, %s hidden %d, registers %d, pos grid %dx%d, eps %g, interp offset %g, %s",
		c.PatchSize, c.EmbedDim, c.Depth, c.Heads, c.FFN, c.MLPHidden, c.Registers, c.PosGrid, c.PosGrid,
		c.LNEps, c.InterpOffset, strings.Join(flags, ", "))
}
