//go:build !js

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/npy"
)

// tinyModel writes a random 2-block ViT with one register whose stored
// position grid (4x4) matches a 56-pixel crop. D = 64: the interpolated
// position grid is bound at pos_embed + D floats, which must be 256-byte
// aligned.
func tinyModel(t *testing.T, dir string) (string, *ckpt.Checkpoint) {
	cfg := nn.ViTConfig{PatchSize: 14, InChans: 3, EmbedDim: 64, Depth: 2, Heads: 2, MLPHidden: 128,
		FFN: nn.FFNMLP, Registers: 1, PosGrid: 4, LayerScale: true, QKVBias: true, LNEps: 1e-6}
	cfg.SetHubInterpolation()
	rng := rand.New(rand.NewPCG(7, 8))
	c := &ckpt.Checkpoint{Config: cfg, Weights: map[string]ckpt.Tensor{}, Meta: map[string]string{}}
	for _, p := range cfg.ParamShapes() {
		ts := ckpt.Tensor{Shape: p.Shape, Data: make([]float32, p.Numel())}
		for i := range ts.Data {
			ts.Data[i] = float32(0.2 * rng.NormFloat64())
		}
		c.Weights[p.Name] = ts
	}
	path := filepath.Join(dir, "tiny.msgpack")
	require.NoError(t, ckpt.WriteFile(path, c))
	return path, c
}

func writeImage(t *testing.T, path string, h, w int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			// Smooth gradients plus noise: something for the resize to do.
			img.SetRGBA(x, y, color.RGBA{uint8(255 * x / w), uint8(255 * y / h), uint8(rng.IntN(256)), 255})
		}
	}
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, png.Encode(f, img))
	require.NoError(t, f.Close())
}

// imageTree makes ROOT/a/{1,2}.png, ROOT/b/3.png and ROOT/b/bad.png
// (not an image) and returns the good paths in ImageFolder order.
func imageTree(t *testing.T, root string) []string {
	for _, d := range []string{"a", "b"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	good := []string{filepath.Join(root, "a", "1.png"), filepath.Join(root, "a", "2.png"), filepath.Join(root, "b", "3.png")}
	sizes := [][2]int{{70, 90}, {80, 60}, {56, 56}}
	for i, p := range good {
		writeImage(t, p, sizes[i][0], sizes[i][1], uint64(i))
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "b", "bad.png"), []byte("definitely not a png"), 0o644))
	return good
}

// direct embeds one image without the command: decode, the same GPU
// preprocessing, a forward pass of batch 1.
func direct(t *testing.T, dev *gpu.Device, m *nn.ViT, path string, anySize bool) []float32 {
	rgb, err := data.LoadImage(path, data.DecodeOptions{})
	require.NoError(t, err)
	batch, err := nn.UploadImages(dev, []nn.Image{{H: rgb.H, W: rgb.W, C: 3, Pix: rgb.Pix}})
	require.NoError(t, err)
	defer batch.Release()
	h, w := 56, 56
	var plan *nn.CropPlan
	if anySize {
		h, w, err = nn.PatchAlignedSize(rgb.H, rgb.W, 28, 14)
		require.NoError(t, err)
		plan, err = nn.NewResizePlan(dev, batch, h, w)
	} else {
		plan, err = nn.NewCenterCropPlan(dev, batch, 64, 56)
	}
	require.NoError(t, err)
	defer plan.Release()
	x, err := dev.NewTensor("x", 1, 3, h, w)
	require.NoError(t, err)
	defer x.Buf.Release()
	rec := dev.Record()
	nn.Resample(rec, x, batch, plan, nn.ImageNetNorm)
	require.NoError(t, rec.Submit())
	out, err := m.Forward(x, nn.ForwardOpts{})
	require.NoError(t, err)
	return out.ClsToken()
}

func readManifest(t *testing.T, path string) []manifestRow {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var rows []manifestRow
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r manifestRow
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
		rows = append(rows, r)
	}
	return rows
}

func TestEmbedEndToEnd(t *testing.T) {
	os.MkdirAll("/tmp/webdino-runtime", 0o700)
	t.Setenv("XDG_RUNTIME_DIR", "/tmp/webdino-runtime")
	dir := t.TempDir()
	modelPath, c := tinyModel(t, dir)
	root := filepath.Join(dir, "images")
	good := imageTree(t, root)

	// ImageFolder, centre crop 56 of 64, batches of 2, every output.
	out, pcaDir, attnDir := filepath.Join(dir, "out"), filepath.Join(dir, "pca"), filepath.Join(dir, "attn")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--model", modelPath, "--out", out, "--resize", "64", "--crop", "56",
		"--batch", "2", "--patch", "--layers", "2", "--pca", pcaDir, "--attn", attnDir, "--image-folder", root}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Contains(t, stdout.String(), "embedded 3 images")
	require.Contains(t, stdout.String(), "rejected 1 files (not an image 1)")
	require.Contains(t, stderr.String(), "rejected "+filepath.Join(root, "b", "bad.png")+": not an image")

	cls, shape, err := npy.ReadFloat32File(filepath.Join(out, "cls.npy"))
	require.NoError(t, err)
	require.Equal(t, []int{3, 64}, shape)
	_, pshape, err := npy.ReadFloat32File(filepath.Join(out, "patch.npy"))
	require.NoError(t, err)
	require.Equal(t, []int{3, 16, 64}, pshape)
	// The last of the last two blocks, through the final norm, is x_norm.
	layers, lshape, err := npy.ReadFloat32File(filepath.Join(out, "layers.npy"))
	require.NoError(t, err)
	require.Equal(t, []int{3, 2, 64}, lshape)
	for b := 0; b < 3; b++ {
		require.Equal(t, cls[b*64:(b+1)*64], layers[(2*b+1)*64:(2*b+2)*64], "image %d", b)
	}
	rows := readManifest(t, filepath.Join(out, "manifest.jsonl"))
	require.Len(t, rows, 3)
	for i, r := range rows {
		require.Equal(t, good[i], r.Path)
		require.Equal(t, []int{0, 0, 1}[i], *r.Label)
		require.Equal(t, []string{"a", "a", "b"}[i], r.Class)
		require.Equal(t, [2]int{4, 4}, r.Grid)
		require.Equal(t, i, *r.PatchRow)
	}
	rej, err := os.ReadFile(filepath.Join(out, "rejects.jsonl"))
	require.NoError(t, err)
	require.Contains(t, string(rej), `"problem":"not an image"`)
	for i, r := range rows {
		name := []string{"000000_1.png", "000001_2.png", "000002_3.png"}[i]
		for _, d := range []string{pcaDir, attnDir} {
			f, err := os.Open(filepath.Join(d, name))
			require.NoError(t, err, r.Path)
			cfg, err := png.DecodeConfig(f)
			f.Close()
			require.NoError(t, err)
			if d == pcaDir {
				require.Equal(t, [2]int{2*56 + 4, 56}, [2]int{cfg.Width, cfg.Height}) // input | figure
			} else {
				require.Equal(t, [2]int{4*56 + 3*4, 56}, [2]int{cfg.Width, cfg.Height}) // input, mean, 2 heads
			}
		}
	}

	// Any size: three aspect ratios give three grids, each its own pass.
	out2 := filepath.Join(dir, "out2")
	stdout.Reset()
	stderr.Reset()
	code = run(context.Background(), []string{"--model", modelPath, "--out", out2, "--any-size", "--short", "28",
		"--patch", root}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	cls2, _, err := npy.ReadFloat32File(filepath.Join(out2, "cls.npy"))
	require.NoError(t, err)
	rows2 := readManifest(t, filepath.Join(out2, "manifest.jsonl"))
	require.Len(t, rows2, 3)
	require.Nil(t, rows2[0].Label)
	grids := [][2]int{{2, 3}, {3, 2}, {2, 2}} // 70x90, 80x60, 56x56 at short side 28
	for i, r := range rows2 {
		require.Equal(t, grids[i], r.Grid)
		_, s, err := npy.ReadFloat32File(filepath.Join(out2, r.PatchFile))
		require.NoError(t, err)
		require.Equal(t, []int{1, grids[i][0] * grids[i][1], 64}, s)
	}

	// The command's CLS features equal a direct forward pass per image.
	// Batching changes nothing in per-row arithmetic, but allow float32
	// rounding of unit-scale normalised features.
	const tol = 1e-5
	dev, err := gpu.Open()
	require.NoError(t, err)
	defer dev.Close()
	m, err := nn.NewViT(dev, c.Config)
	require.NoError(t, err)
	defer m.Release()
	w := map[string][]float32{}
	for k, v := range c.Weights {
		w[k] = v.Data
	}
	require.NoError(t, m.SetWeights(w))
	for i, p := range good {
		for _, anySize := range []bool{false, true} {
			want := direct(t, dev, m, p, anySize)
			got := cls[i*64 : (i+1)*64]
			if anySize {
				got = cls2[i*64 : (i+1)*64]
			}
			for j := range want {
				require.False(t, math.IsNaN(float64(got[j])))
				require.InDelta(t, want[j], got[j], tol, "%s any-size %v feature %d", p, anySize, j)
			}
		}
	}
}

func TestEmbedErrors(t *testing.T) {
	dir := t.TempDir()
	pth := filepath.Join(dir, "dinov2_vits14.pth")
	require.NoError(t, os.WriteFile(pth, []byte("PK\x03\x04 a zip archive"), 0o644))
	img := filepath.Join(dir, "x.png")
	writeImage(t, img, 20, 20, 1)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "usage: embed --model MODEL.msgpack --out DIR [flags] INPUT..."},
		{[]string{"--out", dir, img}, 2, "embed: --model is required (see --help)"},
		{[]string{"--model", pth, "--out", dir}, 2, "no INPUT images or folders"},
		{[]string{"--model", pth, "--out", dir, "--pca-sign", "left", img}, 2, `--pca-sign "left": want centre or minority`},
		{[]string{"--model", pth, "--out", dir, img}, 1, "--model " + pth + " is not a webdino checkpoint"},
		{[]string{"--model", pth, "--out", dir, img}, 1, "go run ./cmd/convert " + pth + " model.msgpack"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		require.Equal(t, c.code, run(context.Background(), c.args, &stdout, &stderr), c.args)
		require.Contains(t, stderr.String(), c.want, c.args)
	}

	// A cancelled run stops cleanly and leaves valid (empty) outputs.
	modelPath, _ := tinyModel(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(dir, "out")
	var stdout, stderr bytes.Buffer
	require.Equal(t, 130, run(ctx, []string{"--model", modelPath, "--out", out, img}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "interrupted")
	_, shape, err := npy.ReadFloat32File(filepath.Join(out, "cls.npy"))
	require.NoError(t, err)
	require.Equal(t, []int{0, 64}, shape)
}
