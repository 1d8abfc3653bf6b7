//go:build !js

package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn/ref"
)

// arena puts vectors into one buffer at 64-float (256-byte) aligned offsets,
// as a training arena does, and returns a view of each.
func arena(t *testing.T, data ...[]float32) []*gpu.Tensor {
	t.Helper()
	offs, n := make([]int, len(data)), 0
	for i, d := range data {
		offs[i] = n
		n += (len(d) + 63) / 64 * 64
	}
	all := make([]float32, n)
	for i, d := range data {
		copy(all[offs[i]:], d)
	}
	base := upload(t, all, n)
	views := make([]*gpu.Tensor, len(data))
	for i, d := range data {
		v, err := base.View(offs[i], len(d))
		require.NoError(t, err)
		views[i] = v
	}
	return views
}

func TestAdamW(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	// Two tensors of one parameter arena with their own LR and decay (the
	// second like a bias: no decay).
	lens := []int{1001, 77}
	lr := []float32{3e-3, 1e-2}
	wd := []float32{0.04, 0}
	const steps = 6
	p64, p32 := make([][]float64, 2), make([][]float32, 2)
	m64, v64 := make([][]float64, 2), make([][]float64, 2)
	for i, n := range lens {
		p64[i], p32[i] = randn(rng, n, 1)
		m64[i], v64[i] = make([]float64, n), make([]float64, n)
	}
	params := arena(t, p32...)
	grads := arena(t, make([]float32, lens[0]), make([]float32, lens[1]))
	ms := arena(t, make([]float32, lens[0]), make([]float32, lens[1]))
	vs := arena(t, make([]float32, lens[0]), make([]float32, lens[1]))
	for step := 1; step <= steps; step++ {
		rec := dev.Record()
		for i, n := range lens {
			g64, g32 := randn(rng, n, 0.1*float64(step))
			require.NoError(t, dev.Write(grads[i], g32))
			require.NoError(t, AdamW(rec, params[i], grads[i], ms[i], vs[i], AdamWOpts{LR: lr[i], WeightDecay: wd[i], Step: step}))
			ref.AdamW(p64[i], g64, m64[i], v64[i], float64(lr[i]), float64(wd[i]), 0.9, 0.999, 1e-8, step)
		}
		run(t, rec)
	}
	for i := range lens {
		// Each step moves p by at most ~lr with f32 relative error ~1e-7
		// per operation; six steps stay far below 1e-6. Moments: a few f32
		// roundings of O(1) quantities.
		requireClose(t, p64[i], read(t, params[i]), 1e-6, 1e-6, "param")
		requireClose(t, m64[i], read(t, ms[i]), 1e-7, 1e-6, "m")
		requireClose(t, v64[i], read(t, vs[i]), 1e-9, 1e-6, "v")
	}
}

func TestEMA(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	const n, m = 70001, 0.996
	t64, t32 := randn(rng, n, 1)
	s64, s32 := randn(rng, n, 1)
	teacher := upload(t, t32, n)
	rec := dev.Record()
	require.NoError(t, EMA(rec, teacher, upload(t, s32, n), m))
	run(t, rec)
	// Two f32 products and a sum of O(1) numbers; m is rounded to f32 (6e-8).
	requireClose(t, ref.EMA(t64, s64, m), read(t, teacher), 1e-6, 1e-6, "ema")
}

func TestGradNormAndClip(t *testing.T) {
	rng := rand.New(rand.NewPCG(45, 46))
	lens := []int{1, 4097, 70001, 33}
	g64, g32 := make([][]float64, len(lens)), make([][]float32, len(lens))
	for i, n := range lens {
		g64[i], g32[i] = randn(rng, n, 0.05)
	}
	for _, maxNorm := range []float32{3, 1000} {
		views := arena(t, g32...)
		norm, partials := zeros(t, 1), zeros(t, NormPartials(views...))
		rec := dev.Record()
		require.NoError(t, GradNorm(rec, norm, partials, views...))
		require.NoError(t, ClipGradNorm(rec, norm, maxNorm, views...))
		run(t, rec)
		want := ref.Norm(g64...)
		// f32 sums of 74k squares in chunks of 4096: relative error ~1e-6.
		requireClose(t, []float64{want}, read(t, norm), 0, 1e-5, "norm")
		s := ref.ClipScale(want, float64(maxNorm))
		for i, v := range views {
			w := make([]float64, len(g64[i]))
			for j := range w {
				w[j] = g64[i][j] * s
			}
			// The scale comes from the f32 norm: relative error 1e-5.
			requireClose(t, w, read(t, v), 1e-9, 1e-5, "clipped")
		}
	}
}

func TestCheckFinite(t *testing.T) {
	rng := rand.New(rand.NewPCG(47, 48))
	_, a := randn(rng, 5000, 1)
	_, b := randn(rng, 33, 1)
	views := arena(t, a, b)
	flag := zeros(t, 1)
	check := func(want float64, what string) {
		t.Helper()
		rec := dev.Record()
		require.NoError(t, CheckFinite(rec, flag, views...))
		run(t, rec)
		require.Equal(t, []float64{want}, read(t, flag), what)
	}
	check(0, "finite")
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		b[32] = bad
		require.NoError(t, dev.Write(views[1], b))
		check(1, "non-finite last element")
		b[32] = 0
		require.NoError(t, dev.Write(views[1], b))
		check(0, "reset")
	}
	a[4097] = float32(math.NaN())
	require.NoError(t, dev.Write(views[0], a))
	check(1, "NaN in the second chunk")
	require.NoError(t, CheckFinite(dev.Record(), flag, views[1]))
}

func TestOptimBadShapes(t *testing.T) {
	rec := dev.Record()
	err := AdamW(rec, zeros(t, 5), zeros(t, 5), zeros(t, 4), zeros(t, 5), AdamWOpts{LR: 1e-3, Step: 1})
	require.ErrorContains(t, err, "adamw: param [5], grad [5], m [4], v [5]: lengths differ")
	require.Error(t, rec.Submit())
	err = AdamW(dev.Record(), zeros(t, 5), zeros(t, 5), zeros(t, 5), zeros(t, 5), AdamWOpts{LR: 1e-3})
	require.ErrorContains(t, err, "adamw: step 0: steps count from 1")
	err = EMA(dev.Record(), zeros(t, 5), zeros(t, 6), 0.99)
	require.ErrorContains(t, err, "ema: teacher [5], student [6]: lengths differ")
	err = GradNorm(dev.Record(), zeros(t, 1), zeros(t, 1), zeros(t, 5000))
	require.ErrorContains(t, err, "grad_norm: partials [1] for 1 views: want at least 512 elements")
	err = GradNorm(dev.Record(), zeros(t, 2), zeros(t, 2), zeros(t, 5000))
	require.ErrorContains(t, err, "grad_norm: norm [2]: want 1 element")
	err = ClipGradNorm(dev.Record(), zeros(t, 1), 0, zeros(t, 5))
	require.ErrorContains(t, err, "clip_grad_norm: max norm 0 must be positive")
	err = CheckFinite(dev.Record(), zeros(t, 1), nil)
	require.ErrorContains(t, err, "check_finite: a view is nil")
	g := zeros(t, 128)
	n, err := g.View(64, 1)
	require.NoError(t, err)
	v, err := g.View(0, 64)
	require.NoError(t, err)
	err = ClipGradNorm(dev.Record(), n, 3, v)
	require.ErrorContains(t, err, "clip_scale: bindings 1 and 2 share a buffer and one is written")
}
