//go:build !js

package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

// plus returns a + b elementwise (the reference of an accumulating op).
func plus(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}

// rowShapes are the (rows, D) cases of the row ops: length-1 rows, batch 1,
// row lengths off every workgroup size, more rows than the 64 partial-sum chunks and than
// maxRowGroups (so workgroups take several rows), and a 3-D tensor case below.
var rowShapes = [][2]int{{1, 1}, {1, 3}, {5, 385}, {3, 1537}, {300, 7}, {130, 384}}

// rowLayouts are the (workgroup, lanes per row) layouts the row-kernel tests
// run under besides the device's own choice: the GPU ones and lavapipe's long-row one,
// so that lavapipe checks them all.
var rowLayouts = []*[2]int{nil, {256, 32}, {256, 256}, {8, 8}}

// forLayouts runs f once per row layout.
func forLayouts(t *testing.T, f func(t *testing.T)) {
	for _, l := range rowLayouts {
		name := "device"
		if l != nil {
			name = fmt.Sprintf("wg%d_lanes%d", l[0], l[1])
		}
		t.Run(name, func(t *testing.T) {
			rowLayoutOverride = l
			defer func() { rowLayoutOverride = nil }()
			f(t)
		})
	}
}

func TestLayerNorm(t *testing.T) {
	forLayouts(t, testLayerNorm)
	forPartials(t, testLayerNorm)
}

// forPartials runs f with the parameter gradients summed in 128 and in 1024
// row chunks (a GPU's counts), besides the device's count.
func forPartials(t *testing.T, f func(t *testing.T)) {
	for _, p := range []int{128, 1024} {
		t.Run(fmt.Sprint("partials", p), func(t *testing.T) {
			partialsOverride = p
			defer func() { partialsOverride = 0 }()
			f(t)
		})
	}
}

func testLayerNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const eps = 1e-6
	for i, s := range rowShapes {
		rows, D := s[0], s[1]
		accumulate := i%2 == 1
		t.Run(fmt.Sprintf("%dx%d_acc%v", rows, D, accumulate), func(t *testing.T) {
			// An offset mean checks the two-pass variance.
			x64, x32 := randn(rng, rows*D, 1)
			for j := range x32 {
				x32[j] += 3
				x64[j] = float64(x32[j])
			}
			g64, g32 := randn(rng, D, 1)
			b64, b32 := randn(rng, D, 1)
			dy64, dy32 := randn(rng, rows*D, 1)
			dx64, dx32 := randn(rng, rows*D, 1)
			dg64, dg32 := randn(rng, D, 1)
			db64, db32 := randn(rng, D, 1)
			x, gamma := upload(t, x32, 1, rows, D), upload(t, g32, D)
			y, mean, rstd := zeros(t, 1, rows, D), zeros(t, rows), zeros(t, rows)
			dx, dgamma, dbeta := upload(t, dx32, rows, D), upload(t, dg32, D), upload(t, db32, D)
			rec := dev.Record()
			require.NoError(t, LayerNorm(rec, y, mean, rstd, x, gamma, upload(t, b32, D), eps))
			require.NoError(t, LayerNormBackward(rec, dx, dgamma, dbeta, upload(t, dy32, rows, D), x, gamma, mean, rstd,
				LayerNormBackwardOpts{Scratch: zeros(t, ScratchLen(dev, D)), AccumulateDX: accumulate, AccumulateParams: accumulate}))
			run(t, rec)
			wy, wm, wr := ref.LayerNorm(x64, g64, b64, D, eps)
			wdx, wdg, wdb := ref.LayerNormBackward(dy64, x64, g64, wm, wr, D)
			if accumulate {
				wdx, wdg, wdb = plus(wdx, dx64), plus(wdg, dg64), plus(wdb, db64)
			}
			// f32 sums of D terms of size ~3 and ~1: relative errors ~1e-6;
			// rstd reaches 1e3 for D = 1 (zero variance), where it is 1/sqrt(eps)
			// up to f32 rounding.
			requireClose(t, wm, read(t, mean), 1e-5, 1e-5, "mean")
			requireClose(t, wr, read(t, rstd), 1e-5, 1e-5, "rstd")
			requireClose(t, wy, read(t, y), 2e-5, 1e-5, "y")
			requireClose(t, wdx, read(t, dx), 5e-5, 1e-4, "dx")
			// Sums over up to 130 rows of O(1) products: error ~ sqrt(130) * 1e-6.
			requireClose(t, wdg, read(t, dgamma), 1e-4, 1e-5, "dgamma")
			requireClose(t, wdb, read(t, dbeta), 1e-4, 1e-5, "dbeta")
		})
	}
}

func TestLayerNormBackwardSharesScratch(t *testing.T) {
	// Two backward calls in one recording reuse one scratch and accumulate:
	// WebGPU's ordering of dispatches must keep their partials apart.
	rng := rand.New(rand.NewPCG(13, 14))
	const rows, D = 70, 97
	x64, x32 := randn(rng, rows*D, 2)
	g64, g32 := randn(rng, D, 1)
	dy64, dy32 := randn(rng, rows*D, 1)
	x, gamma, dy := upload(t, x32, rows, D), upload(t, g32, D), upload(t, dy32, rows, D)
	y, mean, rstd := zeros(t, rows, D), zeros(t, rows), zeros(t, rows)
	dx, dgamma, dbeta := zeros(t, rows, D), zeros(t, D), zeros(t, D)
	o := LayerNormBackwardOpts{Scratch: zeros(t, ScratchLen(dev, D)), AccumulateDX: true, AccumulateParams: true}
	rec := dev.Record()
	require.NoError(t, LayerNorm(rec, y, mean, rstd, x, gamma, zeros(t, D), 1e-6))
	require.NoError(t, LayerNormBackward(rec, dx, dgamma, dbeta, dy, x, gamma, mean, rstd, o))
	require.NoError(t, LayerNormBackward(rec, dx, dgamma, dbeta, dy, x, gamma, mean, rstd, o))
	run(t, rec)
	_, wm, wr := ref.LayerNorm(x64, g64, make([]float64, D), D, 1e-6)
	wdx, wdg, wdb := ref.LayerNormBackward(dy64, x64, g64, wm, wr, D)
	// As in TestLayerNorm.
	requireClose(t, plus(wdx, wdx), read(t, dx), 5e-5, 1e-4, "dx")
	requireClose(t, plus(wdg, wdg), read(t, dgamma), 1e-4, 1e-5, "dgamma")
	requireClose(t, plus(wdb, wdb), read(t, dbeta), 1e-4, 1e-5, "dbeta")
}

func TestLayerNormReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	const rows, D, eps = 3, 7, 1e-6
	x, _ := randn(rng, rows*D, 1)
	g, _ := randn(rng, D, 1)
	b, _ := randn(rng, D, 1)
	w, _ := randn(rng, rows*D, 1)
	_, m, r := ref.LayerNorm(x, g, b, D, eps)
	dx, dg, db := ref.LayerNormBackward(w, x, g, m, r, D)
	loss := func(x, g, b []float64) float64 { y, _, _ := ref.LayerNorm(x, g, b, D, eps); return dot(w, y) }
	checkGradient(t, func(v []float64) float64 { return loss(v, g, b) }, x, dx, "layernorm dx")
	checkGradient(t, func(v []float64) float64 { return loss(x, v, b) }, g, dg, "layernorm dgamma")
	checkGradient(t, func(v []float64) float64 { return loss(x, g, v) }, b, db, "layernorm dbeta")
}

func TestSoftmax(t *testing.T) { forLayouts(t, testSoftmax) }

func testSoftmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	shapes := append(rowShapes, [2]int{2, 65537}, [2]int{7, 257}, [2]int{1, 65536})
	for i, s := range shapes {
		rows, D := s[0], s[1]
		T := []float32{1, 0.1, 0.04}[i%3]
		std := 1.0
		if i == 2 {
			std = 100 // exp(x) alone would overflow: the max must come off first
		}
		t.Run(fmt.Sprintf("%dx%d_T%g", rows, D, T), func(t *testing.T) {
			x64, x32 := randn(rng, rows*D, std)
			dy64, dy32 := randn(rng, rows*D, 1)
			y, dx := zeros(t, rows, D), zeros(t, rows, D)
			rec := dev.Record()
			require.NoError(t, Softmax(rec, y, upload(t, x32, rows, D), T))
			require.NoError(t, SoftmaxBackward(rec, dx, upload(t, dy32, rows, D), y, T))
			run(t, rec)
			wy := ref.Softmax(x64, D, float64(T))
			// The kernel exponentiates (x - max) / T, exact near the max; a
			// term far from it carries f32 rounding of ~|x - max| / T * 6e-8
			// in its exponent, and at std 100, T 0.04 only terms within ~400
			// of the max (in x / T) are above the tolerance's floor, so y is
			// good to ~3e-5 relative.
			requireClose(t, wy, read(t, y), 1e-7, 5e-5, "y")
			// The backward uses the GPU's y, so compare with the reference fed the
			// same y: dy - sum(dy * y) carries ~3e-7 of f32 rounding, times y / T.
			gy := read(t, y)
			requireClose(t, ref.SoftmaxBackward(dy64, gy, D, float64(T)), read(t, dx), 1e-6/float64(T), 1e-4, "dx")
		})
	}
}

func TestSoftmaxReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	const rows, D, T = 3, 9, 0.3
	x, _ := randn(rng, rows*D, 1)
	w, _ := randn(rng, rows*D, 1)
	dx := ref.SoftmaxBackward(w, ref.Softmax(x, D, T), D, T)
	checkGradient(t, func(v []float64) float64 { return dot(w, ref.Softmax(v, D, T)) }, x, dx, "softmax")
}

func TestL2Normalize(t *testing.T) { forLayouts(t, testL2Normalize) }

func testL2Normalize(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const eps = 1e-6
	for i, s := range append(rowShapes, [2]int{2, 65537}) {
		rows, D := s[0], s[1]
		accumulate := i%2 == 0
		t.Run(fmt.Sprintf("%dx%d_acc%v", rows, D, accumulate), func(t *testing.T) {
			x64, x32 := randn(rng, rows*D, 1)
			if rows > 2 {
				// One row inside the eps clamp, one exactly zero.
				for c := 0; c < D; c++ {
					x32[c], x32[D+c] = float32(x64[c]*1e-9), 0
					x64[c], x64[D+c] = float64(x32[c]), 0
				}
			}
			dy64, dy32 := randn(rng, rows*D, 1)
			dx64, dx32 := randn(rng, rows*D, 1)
			y, norm, dx := zeros(t, rows, D), zeros(t, rows), upload(t, dx32, rows, D)
			rec := dev.Record()
			require.NoError(t, L2Normalize(rec, y, norm, upload(t, x32, rows, D), eps))
			require.NoError(t, L2NormalizeBackward(rec, dx, upload(t, dy32, rows, D), y, norm, eps, accumulate))
			run(t, rec)
			wy, wn := ref.L2Normalize(x64, D, eps)
			wdx := ref.L2NormalizeBackward(dy64, wy, wn, D, eps)
			if accumulate {
				wdx = plus(wdx, dx64)
			}
			// f32 sums of D squares: relative error ~1e-6 even at D = 65537.
			requireClose(t, wn, read(t, norm), 1e-12, 1e-5, "norm")
			requireClose(t, wy, read(t, y), 1e-6, 1e-5, "y")
			// Inside the clamp dx = dy / eps reaches ~1e6, hence the relative tolerance.
			requireClose(t, wdx, read(t, dx), 1e-5, 1e-4, "dx")
		})
	}
}

func TestL2NormalizeReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	const rows, D = 3, 6
	x, _ := randn(rng, rows*D, 1)
	for c := 0; c < D; c++ {
		x[c] *= 1e-3 // the first row inside the clamp, eps = 0.01
	}
	w, _ := randn(rng, rows*D, 1)
	for _, eps := range []float64{1e-12, 0.01} {
		y, n := ref.L2Normalize(x, D, eps)
		dx := ref.L2NormalizeBackward(w, y, n, D, eps)
		checkGradient(t, func(v []float64) float64 { y, _ := ref.L2Normalize(v, D, eps); return dot(w, y) }, x, dx, "l2_normalize")
	}
}

func TestNormBadInputs(t *testing.T) {
	x, g := zeros(t, 3, 5), zeros(t, 5)
	rec := dev.Record()
	err := LayerNorm(rec, zeros(t, 3, 5), zeros(t, 3), zeros(t, 3), x, zeros(t, 4), g, 1e-6)
	require.ErrorContains(t, err, "layernorm: x [3x5], gamma [4]: gamma must have 5 elements (one per channel)")
	require.Error(t, rec.Submit())
	err = LayerNorm(dev.Record(), zeros(t, 3, 5), zeros(t, 2), zeros(t, 3), x, g, g, 1e-6)
	require.ErrorContains(t, err, "layernorm: x [3x5], mean [2]: mean must have 3 elements (one per row)")
	err = LayerNorm(dev.Record(), zeros(t, 3, 5), nil, zeros(t, 3), x, g, g, 1e-6)
	require.ErrorContains(t, err, "layernorm: tensor mean is nil")
	err = LayerNormBackward(dev.Record(), x, g, g, zeros(t, 3, 5), x, g, zeros(t, 3), zeros(t, 3), LayerNormBackwardOpts{Scratch: zeros(t, 64)})
	require.ErrorContains(t, err, fmt.Sprintf("layernorm_backward: scratch [64]: want at least %d elements for D = 5", ScratchLen(dev, 5)))
	err = LayerNormBackward(dev.Record(), x, g, g, zeros(t, 3, 4), x, g, zeros(t, 3), zeros(t, 3), LayerNormBackwardOpts{})
	require.ErrorContains(t, err, "layernorm_backward: tensor scratch is nil")
	err = Softmax(dev.Record(), zeros(t, 5, 3), x, 1)
	require.ErrorContains(t, err, "softmax: x [3x5], y [5x3]: y must match x")
	err = Softmax(dev.Record(), x, x, 0)
	require.ErrorContains(t, err, "softmax: temperature 0: must be positive")
	err = SoftmaxBackward(dev.Record(), x, zeros(t, 15), x, 1)
	require.ErrorContains(t, err, "softmax_backward: y [3x5], dy [15], dx [3x5]: dy and dx must match y")
	err = L2Normalize(dev.Record(), x, zeros(t, 5), x, 1e-6)
	require.ErrorContains(t, err, "l2_normalize: x [3x5], norm [5]: norm must have 3 elements (one per row)")
	err = L2NormalizeBackward(dev.Record(), x, x, zeros(t, 3, 4), zeros(t, 3), 1e-6, false)
	require.ErrorContains(t, err, "l2_normalize_backward: y [3x4], dy [3x5], dx [3x5]: dy and dx must match y")
}

func TestGPUPartials(t *testing.T) {
	for D, want := range map[int]int{1: 1024, 64: 1024, 384: 640, 768: 320, 2048: 128, 65536: 64} {
		got := gpuPartials(D)
		require.Equal(t, want, got, "D = %d", D)
		require.Zero(t, got*D*4%256, "D = %d: the second block must start 256-byte aligned", D)
	}
}
