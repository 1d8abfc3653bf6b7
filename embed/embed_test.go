//go:build !js

package embed

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

func TestGroupsBySize(t *testing.T) {
	b := &data.Batch{Images: []*data.RGB{{H: 70, W: 90}, {H: 56, W: 56}, {H: 140, W: 180}, {H: 80, W: 60}}}
	o := Options{AnySize: true, Short: 28}.withDefaults()
	gs, err := o.groups(b, 14)
	require.NoError(t, err)
	// 70x90 and 140x180 share 28x42; groups follow their first image.
	require.Equal(t, []group{{[]int{0, 2}, 28, 42}, {[]int{1}, 28, 28}, {[]int{3}, 42, 28}}, gs)

	gs, err = Options{}.withDefaults().groups(b, 14)
	require.NoError(t, err)
	require.Equal(t, []group{{[]int{0, 1, 2, 3}, 224, 224}}, gs)
}

// images is an in-memory data.Dataset.
type images []*data.RGB

func (s images) Len() int                      { return len(s) }
func (s images) Path(i int) string             { return fmt.Sprintf("image-%d", i) }
func (s images) Label(int) int                 { return -1 }
func (s images) Load(i int) (*data.RGB, error) { return s[i], nil }

// TestMirrorDescriptor checks that with Options.Mirror an image and its
// mirror image get the same descriptor (the property mirrored copies are
// found by), and that without it they do not.
func TestMirrorDescriptor(t *testing.T) {
	dev, err := gpu.Open()
	require.NoError(t, err)
	defer dev.Close()
	// cmd/curate's test model and crop: the shader cache has their kernels.
	cfg := nn.ViTConfig{PatchSize: 14, InChans: 3, EmbedDim: 64, Depth: 2, Heads: 2, MLPHidden: 128,
		FFN: nn.FFNMLP, Registers: 1, PosGrid: 4, LayerScale: true, QKVBias: true, LNEps: 1e-6}
	cfg.SetHubInterpolation()
	m, err := nn.NewViT(dev, cfg)
	require.NoError(t, err)
	defer m.Release()
	rng := rand.New(rand.NewPCG(3, 4))
	w := map[string][]float32{}
	for _, p := range cfg.ParamShapes() {
		w[p.Name] = make([]float32, p.Numel())
		for i := range w[p.Name] {
			w[p.Name][i] = float32(0.2 * rng.NormFloat64())
		}
	}
	require.NoError(t, m.SetWeights(w))

	random := func(h, w int) *data.RGB {
		im := &data.RGB{H: h, W: w, Pix: make([]uint8, h*w*3)}
		for i := range im.Pix {
			im.Pix[i] = uint8(rng.IntN(256))
		}
		return im
	}
	a := random(64, 71)
	am := mirror(nn.Image{H: a.H, W: a.W, C: 3, Pix: a.Pix})
	// The mirror sits at another batch position, after another image.
	ds := images{a, random(64, 64), {H: a.H, W: a.W, Pix: am}}
	descriptors := func(mirrored bool) []float32 {
		var out []float32
		o := Options{Batch: 3, Resize: 64, Crop: 56, Mirror: mirrored}
		require.NoError(t, Run(context.Background(), dev, m, ds, o, func(r *Result) error {
			out = append(out, r.Descriptor()...)
			return nil
		}))
		require.Len(t, out, len(ds)*cfg.EmbedDim)
		return out
	}
	D := cfg.EmbedDim
	gap := func(x []float32) float64 {
		var g float64
		for j := range D {
			g = max(g, math.Abs(float64(x[j]-x[2*D+j])))
		}
		return g
	}
	require.Greater(t, gap(descriptors(false)), 1e-2, "a random model tells an image from its mirror")
	require.Less(t, gap(descriptors(true)), 1e-6)
}
