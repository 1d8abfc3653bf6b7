package ckpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/webdino/webdino/nn"
)

// ImportInfo says how an import read its file.
type ImportInfo struct {
	Format  string   // "pth" or "safetensors"
	Prefix  string   // the prefix stripped from the backbone's names ("" for hub files)
	Ignored []string // tensors outside the backbone (heads, the student), by name in the file
}

// ErrWebdino is Import's answer for a file that is already a webdino
// checkpoint.
var ErrWebdino = errors.New("import: this is already a webdino checkpoint (read it with ckpt.ReadFile)")

// Import reads official DINOv2 weights, telling the formats apart by their
// first bytes: a zip (PyTorch .pth) or a safetensors header.
func Import(r io.ReaderAt, size int64) (*Checkpoint, *ImportInfo, error) {
	var head [9]byte
	n, _ := r.ReadAt(head[:], 0)
	switch {
	case n >= 4 && bytes.Equal(head[:4], []byte("PK\x03\x04")):
		return ImportPth(r, size)
	case n == 9 && head[8] == '{' && int64(binary.LittleEndian.Uint64(head[:8])) <= size-8:
		return ImportSafetensors(r, size)
	case n >= 1 && head[0] >= 0x80 && head[0] <= 0x8f:
		return nil, nil, ErrWebdino
	}
	return nil, nil, fmt.Errorf("import: unknown format (starts with % x): want a PyTorch .pth (zip) or a .safetensors file", head[:n])
}

// headDim is the attention head width of every DINOv2 model; weight files
// do not record the head count, so it is inferred as D / 64.
const headDim = 64

// fromStateDict infers the config from official-named tensors, checks every
// tensor against it and returns the checkpoint.
func fromStateDict(sd map[string]Tensor) (*Checkpoint, error) {
	cfg, err := InferConfig(sd)
	if err != nil {
		return nil, err
	}
	if err := checkAgainst(sd, cfg.ParamShapes()); err != nil {
		return nil, err
	}
	return &Checkpoint{Config: cfg, Weights: sd, Meta: map[string]string{}}, nil
}

// InferConfig derives a ViTConfig from the shapes of an official state dict:
// D from cls_token, patch size and channels from the patch conv, the
// position grid from pos_embed, depth from the block count, heads as D/64,
// the FFN kind and width from mlp.fc1 or mlp.w12, registers, LayerScale and
// qkv bias from whether their tensors exist. LayerNorm eps is 1e-6 and the
// position interpolation follows the hub (see nn.ViTConfig).
func InferConfig(sd map[string]Tensor) (nn.ViTConfig, error) {
	c := nn.ViTConfig{LNEps: 1e-6}
	shape := func(name string, rank int) ([]int, error) {
		t, ok := sd[name]
		if !ok {
			return nil, fmt.Errorf("no %s tensor: not a DINOv2 ViT (has %s)", name, someNames(sd))
		}
		if len(t.Shape) != rank {
			return nil, fmt.Errorf("tensor %q has shape %v, want rank %d", name, t.Shape, rank)
		}
		return t.Shape, nil
	}
	s, err := shape("cls_token", 3)
	if err != nil {
		return c, err
	}
	c.EmbedDim = s[2]
	if c.EmbedDim%headDim != 0 {
		return c, fmt.Errorf("embed dim %d is not a multiple of %d: cannot infer the heads", c.EmbedDim, headDim)
	}
	c.Heads = c.EmbedDim / headDim
	if s, err = shape("patch_embed.proj.weight", 4); err != nil {
		return c, err
	}
	if s[2] != s[3] {
		return c, fmt.Errorf("patch_embed.proj.weight has shape %v: patches must be square", s)
	}
	c.InChans, c.PatchSize = s[1], s[2]
	if s, err = shape("pos_embed", 3); err != nil {
		return c, err
	}
	if s[1] >= 2 {
		c.PosGrid = int(math.Round(math.Sqrt(float64(s[1] - 1))))
	}
	if c.PosGrid*c.PosGrid != s[1]-1 || s[1] < 2 {
		return c, fmt.Errorf("pos_embed has shape %v: %d patch positions are not a square grid", s, s[1]-1)
	}
	if t, ok := sd["register_tokens"]; ok {
		if len(t.Shape) != 3 {
			return c, fmt.Errorf("register_tokens has shape %v, want [1 R D]", t.Shape)
		}
		c.Registers = t.Shape[1]
	}
	for {
		if _, ok := sd[fmt.Sprintf("blocks.%d.norm1.weight", c.Depth)]; !ok {
			break
		}
		c.Depth++
	}
	if c.Depth == 0 {
		return c, fmt.Errorf("no blocks.0.norm1.weight: not a DINOv2 ViT (has %s)", someNames(sd))
	}
	if t, ok := sd["blocks.0.mlp.w12.weight"]; ok && len(t.Shape) == 2 {
		c.FFN, c.MLPHidden = nn.FFNSwiGLU, t.Shape[0]/2
	} else if t, ok := sd["blocks.0.mlp.fc1.weight"]; ok && len(t.Shape) == 2 {
		c.FFN, c.MLPHidden = nn.FFNMLP, t.Shape[0]
	} else {
		return c, fmt.Errorf("blocks.0 has neither mlp.fc1.weight nor mlp.w12.weight [out in]: unknown FFN")
	}
	_, c.LayerScale = sd["blocks.0.ls1.gamma"]
	_, c.QKVBias = sd["blocks.0.attn.qkv.bias"]
	c.SetHubInterpolation()
	return c, c.Validate()
}
