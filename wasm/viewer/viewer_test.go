//go:build !js

package viewer

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/embed"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

const (
	demoModel = "../../assets/models/demo-vits14-d2-reg4-random.msgpack"
	photo     = "../../assets/photos/chelsea.jpg"
)

func open(t *testing.T) *gpu.Device {
	dev, err := gpu.Open()
	require.NoError(t, err)
	t.Cleanup(dev.Close)
	return dev
}

func readFile(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func TestLoadModelErrors(t *testing.T) {
	dev := open(t)
	_, err := LoadModel(dev, "cat.jpg", readFile(t, photo))
	require.ErrorContains(t, err, "cat.jpg is not a webdino checkpoint (.msgpack")
	require.ErrorContains(t, err, "nor official DINOv2 weights")
	b := readFile(t, demoModel)
	_, err = LoadModel(dev, "half.msgpack", b[:len(b)/2])
	require.ErrorContains(t, err, "half.msgpack: ckpt:")
	_, err = LoadModel(dev, "empty", nil)
	require.ErrorContains(t, err, "empty is not a webdino checkpoint")
}

func TestCheckModel(t *testing.T) {
	// The demo checkpoint passes on this device, from its first 64 KiB.
	dev := open(t)
	b := readFile(t, demoModel)
	require.NoError(t, CheckModel(dev, "demo.msgpack", b[:64<<10], int64(len(b))))
	// ViT-g/14 (1.1 G parameters): 4.5 GB of float32 weights cannot load in
	// a page, whatever the device; said from the header alone.
	g, err := nn.Preset("vitg14")
	require.NoError(t, err)
	var head bytes.Buffer
	require.NoError(t, ckpt.WriteHeader(&head, g, 4))
	err = CheckModel(dev, "giant.msgpack", head.Bytes(), int64(4*g.NumParams()))
	require.ErrorContains(t, err, "giant.msgpack (ViT patch 14, dim 1536, depth 40")
	require.ErrorContains(t, err, "needs about 8.5 GiB of WebAssembly memory to load")
	require.ErrorContains(t, err, "run it natively (cmd/embed)")
	// A layer wider than a storage binding of a browser's default 128 MiB:
	// 200000 x 256 floats in one tensor.
	wide := nn.ViTConfig{PatchSize: 14, InChans: 3, EmbedDim: 256, Depth: 1, Heads: 4, MLPHidden: 200000,
		FFN: nn.FFNMLP, PosGrid: 16, LNEps: 1e-6}
	head.Reset()
	require.NoError(t, ckpt.WriteHeader(&head, wide, 4))
	browser := gpu.Limits{MaxBufferSize: 256 << 20, MaxStorageBinding: 128 << 20}
	err = checkModel(browser, "wide.msgpack", head.Bytes(), int64(4*wide.NumParams()))
	require.ErrorContains(t, err, "wide.msgpack (ViT patch 14, dim 256, depth 1")
	require.ErrorContains(t, err, "does not fit this device (buffers up to 256 MB, bindings up to 128 MB)")
	require.ErrorContains(t, err, `"blocks.0.mlp.fc1.weight" (51200000 elements, 195 MiB) is larger than one buffer`)
	// Other files are judged by size: a 2 GB .pth would take 4 GB.
	err = CheckModel(dev, "big.pth", []byte("PK\x03\x04"), 2e9)
	require.ErrorContains(t, err, "big.pth (2.0 GB) needs about 3.7 GiB of WebAssembly memory")
	require.NoError(t, CheckModel(dev, "small.pth", []byte("PK\x03\x04"), 100e6))
}

// TestLoadModelImportsOfficialWeights: the page also takes hub .pth files;
// the demo checkpoint was converted from this one, so the configs agree.
func TestLoadModelImportsOfficialWeights(t *testing.T) {
	dev := open(t)
	m, err := LoadModel(dev, "demo", readFile(t, demoModel))
	require.NoError(t, err)
	defer m.Release()
	require.Equal(t, "webdino checkpoint", m.Source)
	p, err := LoadModel(dev, "hub.pth", readFile(t, "../../nn/testdata/vit/vits14_d2_reg4.pth"))
	require.NoError(t, err)
	defer p.Release()
	require.Equal(t, "imported pth", p.Source)
	require.Equal(t, m.ViT.Cfg, p.ViT.Cfg)
}

// TestRunMatchesEmbed: the viewer's preprocessing and forward are those of
// `embed --any-size`, on the same device bit for bit.
func TestRunMatchesEmbed(t *testing.T) {
	dev := open(t)
	m, err := LoadModel(dev, "demo", readFile(t, demoModel))
	require.NoError(t, err)
	defer m.Release()
	img, err := DecodeImage("chelsea.jpg", readFile(t, photo))
	require.NoError(t, err)
	r, err := Run(dev, m, img, 126) // 320x212 -> 126x196: 9x14 patches
	require.NoError(t, err)
	require.Equal(t, [4]int{126, 196, 9, 14}, [4]int{r.H, r.W, r.GH, r.GW})
	require.Equal(t, [2]int{196, 126}, [2]int{r.Input.Rect.Dx(), r.Input.Rect.Dy()})
	require.Len(t, r.Attn, r.Heads+1)
	require.Len(t, r.PCA.RGB, 3*r.GH*r.GW)
	require.Len(t, r.Steps, 5)

	abs, err := filepath.Abs(photo)
	require.NoError(t, err)
	var ref *embed.Result
	err = embed.Run(context.Background(), dev, m.ViT, &data.Files{Paths: []string{abs}},
		embed.Options{AnySize: true, Short: 126, Attn0: true, Workers: 1}, func(res *embed.Result) error {
			ref = res
			return nil
		})
	require.NoError(t, err)
	require.Equal(t, ref.Out.PatchTokens(), r.Patches)
	require.Equal(t, ref.Out.Attn0, r.Attn0)

	s, err := r.Similarity(20)
	require.NoError(t, err)
	require.InDelta(t, 1, s[20], 1e-6)
	s2, err := r.Similarity(57)
	require.NoError(t, err)
	require.InDelta(t, s[57], s2[20], 1e-6) // cosine similarity is symmetric
	for _, v := range s {
		require.False(t, math.IsNaN(float64(v)) || v > 1+1e-6 || v < -1-1e-6)
	}
	_, err = r.Similarity(r.GH * r.GW)
	require.ErrorContains(t, err, "outside the grid")
	_, err = Run(dev, m, img, 100)
	require.ErrorContains(t, err, "multiple of patch")
}
