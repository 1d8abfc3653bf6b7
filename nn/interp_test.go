//go:build !js

package nn

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

// TestInterpWeightsMatchPyTorch resizes the grids of nn/testdata/interp.json
// (written by scripts/reference/interp.py with torch in float64) with the Go
// weight tables and compares with PyTorch's outputs.
func TestInterpWeightsMatchPyTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/interp.json")
	require.NoError(t, err)
	var fx struct {
		Cases []struct {
			Mh, Mw, H, W, D      int
			In, Scale, Antialias []float64
		}
	}
	require.NoError(t, json.Unmarshal(raw, &fx))
	require.NotEmpty(t, fx.Cases)
	for _, c := range fx.Cases {
		for mode, want := range map[InterpMode][]float64{BicubicOffset: c.Scale, BicubicAntialias: c.Antialias} {
			got := ref.Resize(c.In, InterpWeights(c.Mh, c.H, mode), InterpWeights(c.Mw, c.W, mode), c.Mh, c.Mw, c.H, c.W, c.D)
			// Both sides compute in float64: only summation order differs.
			requireClose(t, want, got, 1e-12, 1e-12, fmt.Sprintf("%v %dx%d->%dx%d", mode, c.Mh, c.Mw, c.H, c.W))
		}
	}
}

func TestInterpWeightsRowsSumToOne(t *testing.T) {
	// Both modes reproduce constants: a wrong tap or clamp shows up here for
	// every size pair, not just the fixture's.
	for _, mode := range []InterpMode{BicubicOffset, BicubicAntialias} {
		for in := 1; in <= 40; in += 3 {
			for out := 1; out <= 40; out += 4 {
				w := InterpWeights(in, out, mode)
				for i := 0; i < out; i++ {
					s := 0.0
					for j := 0; j < in; j++ {
						s += w[i*in+j]
					}
					require.InDelta(t, 1, s, 1e-12, "%v %d->%d row %d", mode, in, out, i)
				}
			}
		}
	}
}

func TestInterp(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	cases := []struct{ Mh, Mw, H, W, D int }{
		{5, 5, 7, 9, 3}, {37, 37, 16, 22, 5}, {37, 37, 4, 4, 7}, {1, 1, 3, 2, 1}, {6, 9, 13, 3, 65},
	}
	for _, c := range cases {
		for _, mode := range []InterpMode{BicubicOffset, BicubicAntialias} {
			name := fmt.Sprintf("%v_%dx%d_to_%dx%d_d%d", mode, c.Mh, c.Mw, c.H, c.W, c.D)
			t.Run(name, func(t *testing.T) {
				pi, err := NewPosInterp(dev, c.Mh, c.Mw, c.H, c.W, mode)
				require.NoError(t, err)
				defer pi.Release()
				x64, x32 := randn(rng, c.Mh*c.Mw*c.D, 1)
				g64, g32 := randn(rng, c.H*c.W*c.D, 1)
				d064, d032 := randn(rng, c.Mh*c.Mw*c.D, 1)
				out, dIn := zeros(t, 1, c.H*c.W, c.D), upload(t, d032, c.Mh, c.Mw, c.D)
				rec := dev.Record()
				require.NoError(t, Interp(rec, out, upload(t, x32, 1, c.Mh*c.Mw, c.D), pi))
				require.NoError(t, InterpBackward(rec, dIn, upload(t, g32, c.H, c.W, c.D), pi, true))
				run(t, rec)
				wy, wx := InterpWeights(c.Mh, c.H, mode), InterpWeights(c.Mw, c.W, mode)
				// Weights are rounded to f32 (rel. 6e-8) and at most 37x37
				// terms of size <= 4 are summed in f32: errors stay below 1e-5.
				requireClose(t, ref.Resize(x64, wy, wx, c.Mh, c.Mw, c.H, c.W, c.D), read(t, out), 1e-5, 1e-5, "forward")
				want := ref.ResizeBackward(g64, wy, wx, c.Mh, c.Mw, c.H, c.W, c.D)
				for i := range want {
					want[i] += d064[i]
				}
				requireClose(t, want, read(t, dIn), 1e-5, 1e-5, "backward")
			})
		}
	}
}

func TestInterpReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	const Mh, Mw, H, W, D = 4, 5, 7, 3, 2
	wy, wx := InterpWeights(Mh, H, BicubicAntialias), InterpWeights(Mw, W, BicubicAntialias)
	x, _ := randn(rng, Mh*Mw*D, 1)
	g, _ := randn(rng, H*W*D, 1)
	checkGradient(t, func(x []float64) float64 { return dot(g, ref.Resize(x, wy, wx, Mh, Mw, H, W, D)) },
		x, ref.ResizeBackward(g, wy, wx, Mh, Mw, H, W, D), "resize")
}

func TestInterpBadShapes(t *testing.T) {
	_, err := NewPosInterp(dev, 37, 37, 0, 4, BicubicOffset)
	require.ErrorContains(t, err, "pos_interp: grid 37x37 -> 0x4 in mode bicubic (scale (n+0.1)/M): sizes must be positive")
	pi, err := NewPosInterp(dev, 3, 4, 5, 6, BicubicOffset)
	require.NoError(t, err)
	defer pi.Release()
	rec := dev.Record()
	err = Interp(rec, zeros(t, 5, 6, 2), zeros(t, 3, 5, 2), pi)
	require.ErrorContains(t, err, "interp: in [3x5x2] -> out [5x6x2] for a 3x4 -> 5x6 grid: want [3x4x2] -> [5x6x2]")
	require.Error(t, rec.Submit())
	err = InterpBackward(dev.Record(), zeros(t, 3, 4, 3), zeros(t, 5, 6, 2), pi, false)
	require.ErrorContains(t, err, "interp_backward: dOut [5x6x2] -> dIn [3x4x3] for a 5x6 -> 3x4 grid: want [5x6x2] -> [3x4x2]")
	require.ErrorContains(t, Interp(dev.Record(), zeros(t, 5, 6, 2), zeros(t, 3, 4, 2), nil), "interp: PosInterp is nil")
}
