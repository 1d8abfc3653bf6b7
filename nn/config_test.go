//go:build !js

package nn

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPresetsAreValidAndCountParams(t *testing.T) {
	// Parameter counts of the released hub backbones (pos grid 37, mask token
	// included), as reported for the timm/hub ports of DINOv2.
	cases := []struct {
		name   string
		params int64
		first  string
		blocks int
	}{
		{"vits14", 22_056_576, "cls_token", 12},
		{"vitb14", 86_580_480, "cls_token", 12},
		{"vitl14", 304_368_640, "cls_token", 24},
		{"vitg14", 1_136_480_768, "cls_token", 40},
		{"dinov2_vits14_reg", 22_058_112, "cls_token", 12},
		{"vitg14_reg", 1_136_486_912, "cls_token", 40},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Preset(c.name)
			require.NoError(t, err)
			require.NoError(t, cfg.Validate())
			require.Equal(t, c.params, cfg.NumParams())
			var sum int64
			seen := map[string]bool{}
			for _, p := range cfg.ParamShapes() {
				require.False(t, seen[p.Name], p.Name)
				seen[p.Name] = true
				sum += p.Numel()
			}
			require.Equal(t, c.params, sum, "ParamShapes and NumParams disagree")
			require.True(t, seen[fmt.Sprintf("blocks.%d.ls2.gamma", c.blocks-1)])
			require.False(t, seen[fmt.Sprintf("blocks.%d.norm1.weight", c.blocks)])
			require.Equal(t, 64, cfg.HeadDim())
		})
	}
}

func TestParamShapesOrderAndSwiGLU(t *testing.T) {
	cfg, err := Preset("vitg14_reg")
	require.NoError(t, err)
	ps := cfg.ParamShapes()
	names := []string{}
	for _, p := range ps[:8] {
		names = append(names, p.Name)
	}
	require.Equal(t, []string{"cls_token", "pos_embed", "mask_token", "register_tokens",
		"patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.0.norm1.weight", "blocks.0.norm1.bias"}, names)
	shapes := map[string][]int{}
	for _, p := range ps {
		shapes[p.Name] = p.Shape
	}
	require.Equal(t, []int{1, 1370, 1536}, shapes["pos_embed"])
	require.Equal(t, []int{1, 4, 1536}, shapes["register_tokens"])
	require.Equal(t, []int{1536, 3, 14, 14}, shapes["patch_embed.proj.weight"])
	require.Equal(t, []int{8192, 1536}, shapes["blocks.3.mlp.w12.weight"])
	require.Equal(t, []int{1536, 4096}, shapes["blocks.3.mlp.w3.weight"])
	require.Nil(t, shapes["blocks.3.mlp.fc1.weight"])
	require.Equal(t, "norm.bias", ps[len(ps)-1].Name)
	require.True(t, cfg.InterpAntialias)
	require.Zero(t, cfg.InterpOffset)

	s, err := Preset("vits14")
	require.NoError(t, err)
	require.False(t, s.InterpAntialias)
	require.Equal(t, 0.1, s.InterpOffset)
	s.LayerScale, s.QKVBias = false, false
	for _, p := range s.ParamShapes() {
		require.NotContains(t, p.Name, "ls1")
		require.NotContains(t, p.Name, "qkv.bias")
	}
	var sum int64
	for _, p := range s.ParamShapes() {
		sum += p.Numel()
	}
	require.Equal(t, s.NumParams(), sum)
}

func TestConfigValidateErrors(t *testing.T) {
	good, err := Preset("vits14")
	require.NoError(t, err)
	cases := []struct {
		edit func(c *ViTConfig)
		want string
	}{
		{func(c *ViTConfig) { c.PatchSize = 0 }, "vit config: patch size 0 must be in [1, 64]"},
		{func(c *ViTConfig) { c.InChans = 0 }, "input channels 0"},
		{func(c *ViTConfig) { c.EmbedDim = 1 << 20 }, "embed dim 1048576 must be in [1, 65536]"},
		{func(c *ViTConfig) { c.Depth = 1000 }, "depth 1000 must be in [1, 256]"},
		{func(c *ViTConfig) { c.Heads = 5 }, "5 heads do not divide embed dim 384"},
		{func(c *ViTConfig) { c.Heads = 0 }, "0 heads do not divide"},
		{func(c *ViTConfig) { c.MLPHidden = -1 }, "MLP hidden dim -1"},
		{func(c *ViTConfig) { c.FFN = "moe" }, `FFN kind "moe" must be "mlp" or "swiglu"`},
		{func(c *ViTConfig) { c.Registers = -1 }, "-1 registers"},
		{func(c *ViTConfig) { c.PosGrid = 0 }, "position grid 0"},
		{func(c *ViTConfig) { c.LNEps = 0 }, "LayerNorm eps 0 must be in (0, 1)"},
		{func(c *ViTConfig) { c.InterpOffset = -0.5 }, "interpolation offset -0.5"},
	}
	for _, c := range cases {
		cfg := good
		c.edit(&cfg)
		require.ErrorContains(t, cfg.Validate(), c.want)
	}
	_, err = Preset("vith14")
	require.ErrorContains(t, err, `vit config: unknown preset "vith14" (known: vitb14, vitb14_reg,`)
	require.Contains(t, good.String(), "dim 384, depth 12, heads 6, mlp hidden 1536, registers 0, pos grid 37x37")
}
