//go:build !js

package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn/ref"
)

// The GPU's erf is good to 1.5e-7 absolute and exp to a few ulps, so
// elementwise results of O(1) inputs agree to ~1e-6.
const eltAtol, eltRtol = 1e-6, 1e-5

func TestActivateGELU(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, n := range []int{1, 3, 70001} {
		for _, inPlace := range []bool{false, true} {
			t.Run(fmt.Sprintf("n%d_inplace%v", n, inPlace), func(t *testing.T) {
				h64, h32 := randn(rng, n, 3)
				dy64, dy32 := randn(rng, n, 1)
				h, dy := upload(t, h32, n), upload(t, dy32, n)
				y, dx := zeros(t, n), zeros(t, n)
				if inPlace {
					y, dx = upload(t, h32, n), dy
				}
				rec := dev.Record()
				require.NoError(t, Activate(rec, y, map[bool]*gpu.Tensor{false: h, true: y}[inPlace], GELU))
				require.NoError(t, ActivateBackward(rec, dx, dy, h, GELU))
				run(t, rec)
				requireClose(t, ref.Map(h64, ref.GELU), read(t, y), eltAtol, eltRtol, "gelu")
				want := make([]float64, n)
				for i := range want {
					want[i] = dy64[i] * ref.GELUGrad(h64[i])
				}
				requireClose(t, want, read(t, dx), eltAtol, eltRtol, "gelu backward")
			})
		}
	}
}

func TestSwiGLU(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	for _, s := range [][]int{{1, 1}, {5, 385}, {3, 7, 13}} {
		t.Run(fmt.Sprint(s), func(t *testing.T) {
			H := s[len(s)-1]
			xs := append(append([]int(nil), s[:len(s)-1]...), 2*H)
			n := 1
			for _, v := range s {
				n *= v
			}
			x64, x32 := randn(rng, 2*n, 3)
			dy64, dy32 := randn(rng, n, 1)
			x, y, dx := upload(t, x32, xs...), zeros(t, s...), zeros(t, xs...)
			rec := dev.Record()
			require.NoError(t, SwiGLU(rec, y, x))
			require.NoError(t, SwiGLUBackward(rec, dx, upload(t, dy32, s...), x))
			run(t, rec)
			requireClose(t, ref.SwiGLU(x64, H), read(t, y), eltAtol, eltRtol, "swiglu")
			requireClose(t, ref.SwiGLUBackward(dy64, x64, H), read(t, dx), eltAtol, eltRtol, "swiglu backward")
		})
	}
}

func TestSwiGLUReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	const H = 5
	x, _ := randn(rng, 3*2*H, 2)
	w, _ := randn(rng, 3*H, 1)
	checkGradient(t, func(v []float64) float64 { return dot(w, ref.SwiGLU(v, H)) }, x, ref.SwiGLUBackward(w, x, H), "swiglu")
}

func TestScaleAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	for _, n := range []int{1, 1537, 70001} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			x64, x32 := randn(rng, n, 1)
			h64, h32 := randn(rng, n, 1)
			x, h, y := upload(t, x32, n), upload(t, h32, n), zeros(t, n)
			rec := dev.Record()
			require.NoError(t, Add(rec, y, x, h))    // y = x + h
			require.NoError(t, Add(rec, y, y, h))    // y = x + 2h
			require.NoError(t, Scale(rec, y, y, -3)) // y = -3x - 6h
			require.NoError(t, Scale(rec, x, y, 0.5))
			run(t, rec)
			want := make([]float64, n)
			for i := range want {
				want[i] = -1.5*x64[i] - 3*h64[i]
			}
			// A few f32 roundings of O(1) values.
			requireClose(t, want, read(t, x), 1e-6, 1e-6, "scale/add")
		})
	}
}

func TestScaleRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(39, 40))
	const R, D = 13, 7
	x64, x32 := randn(rng, R*D, 1)
	s := make([]float32, R)
	for r := range s {
		s[r] = float32(r%3) * 1.25 // 0 drops a row, as stochastic depth does
	}
	x, st, y := upload(t, x32, R, D), upload(t, s, R), zeros(t, R, D)
	rec := dev.Record()
	require.NoError(t, ScaleRows(rec, y, x, st))
	require.NoError(t, ScaleRows(rec, x, x, st)) // in place
	run(t, rec)
	want := make([]float64, R*D)
	for i := range want {
		want[i] = float64(s[i/D]) * x64[i]
	}
	requireClose(t, want, read(t, y), 1e-7, 1e-7, "scale_rows")
	requireClose(t, want, read(t, x), 1e-7, 1e-7, "scale_rows in place")
	rec = dev.Record()
	require.EqualError(t, ScaleRows(rec, y, x, zeros(t, R+1)), "scale_rows: x [13x7], s [14]: want one factor per row of 7")
}

func TestScaleLargeGrid(t *testing.T) {
	// 65535*256 + 3 elements need a 2-D grid of workgroups.
	const n = 65535*256 + 3
	x32 := make([]float32, n)
	for i := range x32 {
		x32[i] = float32(i % 977)
	}
	x := upload(t, x32, n)
	rec := dev.Record()
	require.NoError(t, Scale(rec, x, x, 2))
	run(t, rec)
	got, err := dev.Read(x)
	require.NoError(t, err)
	for i, v := range got {
		if v != 2*x32[i] {
			t.Fatalf("element %d = %v, want %v", i, v, 2*x32[i])
		}
	}
}

func TestLayerScale(t *testing.T) {
	testLayerScale(t)
	forPartials(t, testLayerScale)
}

func testLayerScale(t *testing.T) {
	rng := rand.New(rand.NewPCG(39, 40))
	for i, s := range [][2]int{{1, 1}, {1, 3}, {5, 385}, {300, 7}, {130, 384}} {
		rows, D := s[0], s[1]
		accumulate, inPlace := i%2 == 0, i%3 == 0
		t.Run(fmt.Sprintf("%dx%d_acc%v_inplace%v", rows, D, accumulate, inPlace), func(t *testing.T) {
			x64, x32 := randn(rng, rows*D, 1)
			h64, h32 := randn(rng, rows*D, 1)
			g64, g32 := randn(rng, D, 1)
			dy64, dy32 := randn(rng, rows*D, 1)
			dg64, dg32 := randn(rng, D, 1)
			x, h, gamma := upload(t, x32, rows, D), upload(t, h32, rows, D), upload(t, g32, D)
			y := x
			if !inPlace {
				y = zeros(t, rows, D)
			}
			dy := upload(t, dy32, rows, D)
			dh, dgamma := dy, upload(t, dg32, D) // in place: dh over dy
			if !inPlace {
				dh = zeros(t, rows, D)
			}
			rec := dev.Record()
			require.NoError(t, LayerScale(rec, y, x, h, gamma))
			require.NoError(t, LayerScaleBackward(rec, dh, dgamma, dy, h, gamma, zeros(t, ScratchLen(dev, D)), accumulate))
			run(t, rec)
			wdh, wdg := ref.LayerScaleBackward(dy64, h64, g64)
			if accumulate {
				wdg = plus(wdg, dg64)
			}
			// One f32 rounding per element; dgamma sums up to 300 O(1) products.
			requireClose(t, ref.LayerScale(x64, h64, g64), read(t, y), 1e-6, 1e-6, "y")
			requireClose(t, wdh, read(t, dh), 1e-6, 1e-6, "dh")
			requireClose(t, wdg, read(t, dgamma), 1e-4, 1e-5, "dgamma")
		})
	}
}

func TestLayerScaleReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	const rows, D = 4, 5
	x, _ := randn(rng, rows*D, 1)
	h, _ := randn(rng, rows*D, 1)
	g, _ := randn(rng, D, 1)
	w, _ := randn(rng, rows*D, 1)
	dh, dg := ref.LayerScaleBackward(w, h, g)
	checkGradient(t, func(v []float64) float64 { return dot(w, ref.LayerScale(v, h, g)) }, x, w, "layerscale dx")
	checkGradient(t, func(v []float64) float64 { return dot(w, ref.LayerScale(x, v, g)) }, h, dh, "layerscale dh")
	checkGradient(t, func(v []float64) float64 { return dot(w, ref.LayerScale(x, h, v)) }, g, dg, "layerscale dgamma")
}

func TestActivationBadInputs(t *testing.T) {
	x := zeros(t, 3, 5)
	rec := dev.Record()
	require.ErrorContains(t, Activate(rec, zeros(t, 14), x, GELU), "activate: y [14], x [3x5]: sizes differ")
	require.Error(t, rec.Submit())
	require.ErrorContains(t, Activate(dev.Record(), x, x, NoAct), `activate: unsupported activation ""`)
	require.ErrorContains(t, ActivateBackward(dev.Record(), x, x, nil, GELU), "activate_backward: tensor h is nil")
	require.ErrorContains(t, SwiGLU(dev.Record(), zeros(t, 3, 3), x), "swiglu: x [3x5], y [3x3]: x must be [..., 2H] for y [..., H]")
	require.ErrorContains(t, SwiGLUBackward(dev.Record(), zeros(t, 3, 5), zeros(t, 3, 3), zeros(t, 3, 6)), "swiglu_backward: x [3x6], dx [3x5]: sizes differ")
	require.ErrorContains(t, Add(dev.Record(), x, x, zeros(t, 5)), "add: y [3x5], h [5]: sizes differ")
	require.ErrorContains(t, Scale(dev.Record(), x, nil, 1), "scale: tensor x is nil")
	require.ErrorContains(t, LayerScale(dev.Record(), x, x, x, zeros(t, 3)), "layerscale: h [3x5], gamma [3]: gamma must have 5 elements")
	err := LayerScaleBackward(dev.Record(), x, zeros(t, 5), x, x, zeros(t, 5), zeros(t, 5), false)
	require.ErrorContains(t, err, fmt.Sprintf("layerscale_backward: scratch [5]: want at least %d elements for D = 5", ScratchLen(dev, 5)))
	err = LayerScaleBackward(dev.Record(), x, zeros(t, 4), x, x, zeros(t, 5), zeros(t, ScratchLen(dev, 5)), false)
	require.ErrorContains(t, err, "layerscale_backward: x [3x5], dgamma [4]: dgamma must have 5 elements (one per channel)")
}
