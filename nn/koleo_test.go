//go:build !js

package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

// unitRows returns B random L2-normalised rows of D, rounded to f32 (the
// float64 copy holds the rounded values), with row dup[1] a copy of dup[0]
// when dup is given.
func unitRows(rng *rand.Rand, B, D int, dup ...int) ([]float64, []float32) {
	x64, _ := randn(rng, B*D, 1)
	x32 := make([]float32, B*D)
	for i := 0; i < B; i++ {
		row := x64[i*D : (i+1)*D]
		var n float64
		for _, v := range row {
			n += v * v
		}
		for d := range row {
			x32[i*D+d] = float32(row[d] / math.Sqrt(n))
		}
	}
	if len(dup) == 2 {
		copy(x32[dup[1]*D:(dup[1]+1)*D], x32[dup[0]*D:(dup[0]+1)*D])
	}
	for i, v := range x32 {
		x64[i] = float64(v)
	}
	return x64, x32
}

func TestKoLeo(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	const eps = 1e-8
	cases := []struct {
		B, D int
		dup  []int
	}{{1, 5, nil}, {2, 3, nil}, {37, 13, nil}, {70, 64, nil}, {9, 7, []int{2, 6}}, {300, 384, nil}}
	for _, c := range cases {
		B, D := c.B, c.D
		t.Run(fmt.Sprintf("%dx%d_dup%v", B, D, c.dup), func(t *testing.T) {
			x64, x32 := unitRows(rng, B, D, c.dup...)
			g64, g32 := randn(rng, 1, 1)
			a64, a32 := randn(rng, B*D, 0.1)
			x, g := upload(t, x32, B, D), upload(t, g32, 1)
			loss, nnIdx, dx, dxAcc := zeros(t, 1), zeros(t, B), zeros(t, B, D), upload(t, a32, B, D)
			rec := dev.Record()
			require.NoError(t, KoLeo(rec, loss, nnIdx, x, eps))
			require.NoError(t, KoLeoBackward(rec, dx, g, nnIdx, x, eps, false))
			require.NoError(t, KoLeoBackward(rec, dxAcc, g, nnIdx, x, eps, true))
			run(t, rec)
			want, nn := ref.KoLeo(x64, B, D, eps)
			got, err := dev.ReadU32(nnIdx)
			require.NoError(t, err)
			for i := range nn {
				require.Equal(t, nn[i], int(got[i]), "nn[%d]", i)
			}
			// f32 differences of unit vectors and sums of D squares: distances
			// to ~1e-7 relative, so log terms to ~1e-7 absolute (the duplicate
			// pair's log(eps) = -18.4 is exact).
			requireClose(t, []float64{want}, read(t, loss), 1e-6, 1e-6, "loss")
			wdx := ref.KoLeoBackward(x64, nn, B, D, eps, g64[0])
			// Each coefficient |g|/(B d^2) carries the distance's ~1e-7
			// relative error, twice; sums over a few terms.
			scale := 0.0
			for _, v := range wdx {
				scale = math.Max(scale, math.Abs(v))
			}
			requireClose(t, wdx, read(t, dx), 1e-6*scale, 1e-5, "dx")
			for i := range wdx {
				wdx[i] += a64[i]
			}
			requireClose(t, wdx, read(t, dxAcc), 1e-6*scale, 1e-5, "dx accumulated")
			if B == 1 {
				require.Equal(t, []float64{0}, read(t, loss))
				require.Equal(t, make([]float64, D), read(t, dx))
			}
		})
	}
}

// A batch of 1024 (the most one device holds) of ViT-S features: the
// forward is B^2 D = 4e8 multiply-adds.
func TestKoLeoTiming(t *testing.T) {
	rng := rand.New(rand.NewPCG(63, 64))
	const B, D = 1024, 384
	_, x32 := unitRows(rng, B, D)
	x, g := upload(t, x32, B, D), upload(t, []float32{1}, 1)
	loss, nnIdx, dx := zeros(t, 1), zeros(t, B), zeros(t, B, D)
	rec := dev.Record()
	require.NoError(t, KoLeo(rec, loss, nnIdx, x, 1e-8))
	require.NoError(t, KoLeoBackward(rec, dx, g, nnIdx, x, 1e-8, false))
	run(t, rec) // compiles and warms up
	var fwd, bwd time.Duration
	require.NoError(t, KoLeo(rec, loss, nnIdx, x, 1e-8))
	fwd, err := rec.Run()
	require.NoError(t, err)
	require.NoError(t, KoLeoBackward(rec, dx, g, nnIdx, x, 1e-8, false))
	bwd, err = rec.Run()
	require.NoError(t, err)
	t.Logf("KoLeo %dx%d on %s: forward %v, backward %v", B, D, dev.Info().Type, fwd, bwd)
	require.False(t, math.IsNaN(read(t, loss)[0]))
}

func TestKoLeoReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(65, 66))
	const B, D, eps = 6, 5, 1e-8
	x, _ := unitRows(rng, B, D)
	_, nn := ref.KoLeo(x, B, D, eps)
	f := func(x []float64) float64 { l, _ := ref.KoLeo(x, B, D, eps); return 0.7 * l }
	checkGradient(t, f, x, ref.KoLeoBackward(x, nn, B, D, eps, 0.7), "koleo")
}

func TestKoLeoBadShapes(t *testing.T) {
	err := KoLeo(dev.Record(), zeros(t, 1), zeros(t, 4), zeros(t, 5, 3), 1e-8)
	require.ErrorContains(t, err, "koleo: x [5x3], nnIdx [4]: want 5 indices, one per row")
	err = KoLeo(dev.Record(), zeros(t, 2), zeros(t, 5), zeros(t, 5, 3), 1e-8)
	require.ErrorContains(t, err, "koleo: loss [2]: want a single element")
	err = KoLeo(dev.Record(), zeros(t, 1), zeros(t, 5), zeros(t, 5, 3), 0)
	require.ErrorContains(t, err, "koleo: eps 0 must be positive")
	err = KoLeoBackward(dev.Record(), zeros(t, 5, 4), zeros(t, 1), zeros(t, 5), zeros(t, 5, 3), 1e-8, false)
	require.ErrorContains(t, err, "koleo_backward: x [5x3], dx [5x4], dLoss [1]: dx must match x and dLoss hold one element")
	err = KoLeoBackward(dev.Record(), zeros(t, 5, 3), nil, zeros(t, 5), zeros(t, 5, 3), 1e-8, false)
	require.ErrorContains(t, err, "koleo_backward: tensor dLoss is nil")
}
