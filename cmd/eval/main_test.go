//go:build !js

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/train"
)

// folder writes an ImageFolder of two easily separated classes (dark noise
// with horizontal stripes, bright noise with vertical ones) and one
// unreadable file.
func folder(t *testing.T, n int, seed uint64) string {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 3))
	for c, class := range []string{"dark", "bright"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, class), 0o755))
		for i := 0; i < n; i++ {
			img := image.NewGray(image.Rect(0, 0, 32, 32))
			for p := range img.Pix {
				y, x := p/32, p%32
				stripe := (y/2)%2 == 0
				if c == 1 {
					stripe = (x/2)%2 == 0
				}
				v := rng.IntN(60) + 100*c
				if stripe {
					v += 95
				}
				img.Pix[p] = uint8(v)
			}
			f, err := os.Create(filepath.Join(dir, class, string(rune('a'+i))+".png"))
			require.NoError(t, err)
			require.NoError(t, png.Encode(f, img))
			require.NoError(t, f.Close())
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bright", "zz.png"), []byte("broken"), 0o644))
	return dir
}

// model writes the demo config's initial teacher as a checkpoint, with its
// LayerScale gammas raised from 1e-5 to 1 so that the blocks shape the CLS
// token (at init it is nearly the same for every image).
func model(t *testing.T) string {
	dev, err := gpu.Open()
	require.NoError(t, err)
	defer dev.Close()
	c := train.Demo()
	c.Batch, c.Prototypes = 2, 64
	tr, err := train.NewTrainer(dev, c)
	require.NoError(t, err)
	defer tr.Release()
	bb := tr.Teacher.Backbone
	for _, name := range bb.Params.Layout.Names() {
		if strings.HasSuffix(name, "gamma") {
			ones := make([]float32, bb.Params.Get(name).Len())
			for i := range ones {
				ones[i] = 1
			}
			require.NoError(t, dev.Write(bb.Params.Get(name), ones))
		}
	}
	snap, err := tr.Snapshot()
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "model.msgpack")
	require.NoError(t, ckpt.WriteFile(path, snap))
	return path
}

func TestEvalKNNAndLinear(t *testing.T) {
	m := model(t)
	trainDir, testDir := folder(t, 12, 1), folder(t, 6, 2)
	out := filepath.Join(t.TempDir(), "result.json")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--model", m, "--train", trainDir, "--test", testDir, "--crop", "28", "--json", out}, &stdout, &stderr)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	require.Contains(t, stdout.String(), "24 train, 12 test images, 2 classes, 2 unreadable images skipped")
	var r Result
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &r))
	require.NotNil(t, r.KNNTop1)
	require.NotNil(t, r.LinearTop)
	// Brightness and stripe orientation survive even random features: both
	// classifiers separate the two classes.
	t.Logf("k-NN top-1 %.3f, linear probe %.3f", *r.KNNTop1, *r.LinearTop)
	require.GreaterOrEqual(t, *r.KNNTop1, 0.9)
	require.GreaterOrEqual(t, *r.LinearTop, 0.9)
	require.Equal(t, "CLS", r.Features)
	require.Equal(t, 64, r.Dim)

	// The reference linear evaluation's inputs: two blocks' CLS tokens and
	// the mean patch token.
	stdout.Reset()
	code = run(context.Background(), []string{"--model", m, "--train", trainDir, "--test", testDir, "--crop", "28", "--json", out,
		"--last-blocks", "2", "--avgpool"}, &stdout, &stderr)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	require.Contains(t, stdout.String(), "features: CLS of the last 2 blocks + mean patch token (192 values)")
	b, err = os.ReadFile(out)
	require.NoError(t, err)
	r = Result{}
	require.NoError(t, json.Unmarshal(b, &r))
	require.Equal(t, 192, r.Dim)
	require.GreaterOrEqual(t, *r.KNNTop1, 0.9)
	require.GreaterOrEqual(t, *r.LinearTop, 0.9)

	stderr.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"--model", m, "--train", trainDir, "--test", testDir, "--crop", "28", "--last-blocks", "5"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "--last-blocks 5: the model has 4 blocks")
}

// probeFeatures lays out, per image, the chosen blocks' CLS tokens and the
// mean of the patch tokens, registers excluded.
func TestProbeFeatures(t *testing.T) {
	// 2 images, 1 register, 3 patches, D 2: token t of image b holds
	// (100b + 10t + layer, -(100b + 10t + layer)), the final output as
	// layer 9.
	tokens := func(layer float32) []float32 {
		var x []float32
		for b := range 2 {
			for tok := range 5 {
				v := float32(100*b+10*tok) + layer
				x = append(x, v, -v)
			}
		}
		return x
	}
	o := &nn.Output{B: 2, R: 1, N: 3, D: 2, Normed: tokens(9), Intermediate: [][]float32{tokens(8), tokens(9)}}
	require.Equal(t, []float32{9, -9, 109, -109}, probeFeatures(o, 1, false))
	// Patches are tokens 2..4: mean 30 + layer for image 0.
	require.Equal(t, []float32{8, -8, 9, -9, 39, -39, 108, -108, 109, -109, 139, -139}, probeFeatures(o, 2, true))
	require.Equal(t, []float32{9, -9, 39, -39, 109, -109, 139, -139}, probeFeatures(o, 1, true))
}

func TestEvalErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "usage: eval")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--train", "a", "--test", "b"}, 2, "--model is required"},
		{[]string{"--model", "m"}, 2, "give --train and --test, or --fashion-mnist"},
		{[]string{"--model", "m", "--fashion-mnist", "--no-knn", "--no-linear"}, 2, "leave nothing to do"},
		{[]string{"--model", "m", "--fashion-mnist", "--last-blocks", "0"}, 2, "--last-blocks 0: want at least 1"},
		{[]string{"--model", "weights.pth", "--fashion-mnist", "--train-n", "10", "--test-n", "10"}, 1, "convert official weights first: go run ./cmd/convert weights.pth"},
	} {
		stderr.Reset()
		require.Equal(t, c.code, run(context.Background(), c.args, &stdout, &stderr), c.args)
		require.Contains(t, stderr.String(), c.want)
	}
}
