//go:build !js

package eval

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
)

// blobs draws n points of D dimensions around C Gaussian centres (spread
// apart by sep standard deviations per dimension) with labels.
func blobs(rng *rand.Rand, centres [][]float64, n int) Features {
	D := len(centres[0])
	f := Features{X: make([]float32, n*D), Labels: make([]int, n), D: D}
	for i := range n {
		c := rng.IntN(len(centres))
		f.Labels[i] = c
		for d := range D {
			f.X[i*D+d] = float32(centres[c][d] + rng.NormFloat64())
		}
	}
	return f
}

func blobSets(seed uint64, D, C, ntr, nte int, sep, offset float64) (Features, Features) {
	rng := rand.New(rand.NewPCG(seed, 7))
	centres := make([][]float64, C)
	for c := range centres {
		centres[c] = make([]float64, D)
		for d := range centres[c] {
			centres[c][d] = offset + sep*rng.NormFloat64()
		}
	}
	return blobs(rng, centres, ntr), blobs(rng, centres, nte)
}

func smallProbe(classes int) ProbeOpts {
	o := DefaultProbe(classes)
	o.LRs = []float64{1e-4, 1e-3, 1e-2, 1e-1}
	o.Epochs = 4
	o.BatchSize = 64
	return o
}

func TestProbeSeparatesBlobs(t *testing.T) {
	// Centres 0.6 sigma apart per dimension, 5.2 sigma in 37 dimensions.
	// Standardisation also copes with an offset of 5 that leaves L2-normalised
	// rows nearly parallel; L2 rows have per-dimension scale 1/sqrt(D), so
	// they need rates about D times larger.
	for _, c := range []struct {
		norm   FeatureNorm
		offset float64
		lrs    []float64
	}{
		{Standardize, 5, []float64{1e-4, 1e-3, 1e-2, 1e-1}},
		{Raw, 0, []float64{1e-4, 1e-3, 1e-2, 1e-1}},
		{L2, 0, []float64{1e-2, 1e-1, 1, 10}},
	} {
		train, test := blobSets(3, 37, 5, 2000, 500, 0.6, c.offset)
		o := smallProbe(5)
		o.Norm, o.LRs = c.norm, c.lrs
		start := time.Now()
		r, err := LinearProbe(context.Background(), dev, train, test, o)
		require.NoError(t, err)
		t.Logf("norm %d: val %.3f test %.3f per LR %v, best LR %g, test %.2f%% in %v",
			c.norm, r.ValAcc, r.TestAcc, r.LRs, r.LRs[r.Best], 100*r.Acc, time.Since(start).Round(time.Millisecond))
		require.Greater(t, r.Acc, 0.95)
		require.Equal(t, r.TestAcc[r.Best], r.Acc)
		// The folded classifier predicts on raw features as the probe did
		// (up to f32 near-ties).
		correct := 0
		for i, p := range r.Classifier.Predict(test.X) {
			if p == test.Labels[i] {
				correct++
			}
		}
		require.InDelta(t, r.Acc, float64(correct)/float64(test.N()), 0.005)
	}
}

func TestProbeSelectsOnTestWithoutHoldOut(t *testing.T) {
	train, test := blobSets(5, 37, 5, 600, 100, 0.3, 0)
	o := smallProbe(5)
	o.ValFraction, o.Epochs = 0, 2
	var log strings.Builder
	o.Progress = data.NewPlainProgress(&log, "probe", o.Steps(train.N()), time.Hour)
	r, err := LinearProbe(context.Background(), dev, train, test, o)
	require.NoError(t, err)
	o.Progress.Finish()
	require.Equal(t, r.TestAcc, r.ValAcc)
	require.Equal(t, 2*(600/64), o.Steps(train.N()))
	require.Contains(t, log.String(), "probe: 18/18 (100.0%)")
}

func TestProbeIsDeterministic(t *testing.T) {
	train, test := blobSets(5, 37, 5, 600, 100, 0.3, 0)
	o := smallProbe(5)
	o.Epochs = 2
	a, err := LinearProbe(context.Background(), dev, train, test, o)
	require.NoError(t, err)
	b, err := LinearProbe(context.Background(), dev, train, test, o)
	require.NoError(t, err)
	require.Equal(t, a, b)
	o.Seed = 2
	c, err := LinearProbe(context.Background(), dev, train, test, o)
	require.NoError(t, err)
	require.NotEqual(t, a.Classifier.W, c.Classifier.W)
}

// refStep is the float64 reference of one SGD step of the stacked
// classifiers w [D, G*C], b [G*C] with momentum buffers mw, mb on batch x
// [n, D], labels y; it returns the per-(sample, classifier) loss.
func refStep(w, b, mw, mb []float64, x []float32, y []int, D, C int, lrs []float64, mom, wd, scale float64) []float64 {
	G, n := len(lrs), len(y)
	GC := G * C
	dw, db := make([]float64, D*GC), make([]float64, GC)
	loss := make([]float64, n*G)
	for i := range n {
		z := append([]float64(nil), b...)
		for d := range D {
			for j := range GC {
				z[j] += float64(x[i*D+d]) * w[d*GC+j]
			}
		}
		for g := range G {
			row := z[g*C : (g+1)*C]
			m := row[0]
			for _, v := range row {
				m = math.Max(m, v)
			}
			var s float64
			for _, v := range row {
				s += math.Exp(v - m)
			}
			lse := m + math.Log(s)
			loss[i*G+g] = lse - row[y[i]]
			for c, v := range row {
				dz := math.Exp(v - lse)
				if c == y[i] {
					dz--
				}
				dz /= float64(n)
				db[g*C+c] += dz
				for d := range D {
					dw[d*GC+g*C+c] += float64(x[i*D+d]) * dz
				}
			}
		}
	}
	update := func(p, buf, grad []float64) {
		for i := range p {
			buf[i] = mom*buf[i] + grad[i] + wd*p[i]
			p[i] -= scale * lrs[(i%GC)/C] * buf[i]
		}
	}
	update(w, mw, dw)
	update(b, mb, db)
	return loss
}

func TestProbeStepMatchesReference(t *testing.T) {
	const D, C, B, n = 37, 5, 23, 19 // a partial batch of 19 in a stage laid out for 23
	lrs := []float64{0.01, 0.1, 0.5}
	G := len(lrs)
	o := ProbeOpts{LRs: lrs, Momentum: 0.9, WeightDecay: 1e-2}
	rng := rand.New(rand.NewPCG(11, 12))
	p, err := newProbe(dev, D, C, G, B)
	require.NoError(t, err)
	defer p.release()
	rnd := func(n int, s float64) ([]float64, []float32) {
		v, f := make([]float64, n), make([]float32, n)
		for i := range v {
			f[i] = float32(s * rng.NormFloat64())
			v[i] = float64(f[i])
		}
		return v, f
	}
	w, w32 := rnd(D*G*C, 0.3)
	b, b32 := rnd(G*C, 0.3)
	require.NoError(t, p.init(o, rng)) // sets the learning rates
	require.NoError(t, dev.Write(p.w, w32))
	require.NoError(t, dev.Write(p.bias, b32))
	mw, mb := make([]float64, D*G*C), make([]float64, G*C)
	rec := dev.Record()
	var loss []float64
	// Two steps on two staged batches, so the momentum carries over.
	for k, scale := range []float64{1, 0.7} {
		_, x := rnd(n*D, 1)
		y := make([]int, n)
		rows := make([]int, n)
		for i := range y {
			y[i], rows[i] = rng.IntN(C), i
		}
		require.NoError(t, p.stage(k, x, y, rows))
		require.NoError(t, p.step(rec, k, n, o, scale))
		loss = refStep(w, b, mw, mb, x, y, D, C, lrs, o.Momentum, o.WeightDecay, scale)
	}
	require.NoError(t, rec.Submit())
	// f32 logits are sums of 37 products of O(1) terms, good to ~1e-6
	// relative; each step moves weights by at most lr * O(1), so 2e-5
	// absolute covers the accumulated rounding of two steps.
	const tol = 2e-5
	for _, c := range []struct {
		name string
		want []float64
		got  *gpu.Tensor
	}{{"loss", loss, p.loss}, {"weights", w, p.w}, {"bias", b, p.bias}, {"weight momentum", mw, p.mw}, {"bias momentum", mb, p.mb}} {
		got, err := dev.Read(c.got)
		require.NoError(t, err)
		for i, v := range c.want {
			require.InDelta(t, v, got[i], tol, "%s %d", c.name, i)
		}
	}
}

func TestProbeRejectsBadInput(t *testing.T) {
	ok := Features{X: make([]float32, 6), Labels: []int{0, 1, 1}, D: 2}
	o := DefaultProbe(2)
	for _, c := range []struct {
		train, test Features
		o           func(*ProbeOpts)
		want        string
	}{
		{Features{D: 2}, ok, nil, "linear probe: train set is empty"},
		{ok, Features{D: 2}, nil, "linear probe: test set is empty"},
		{Features{X: make([]float32, 5), Labels: []int{0, 1, 1}, D: 2}, ok, nil, "linear probe: train set has 5 values for 3 labels of dimension 2"},
		{ok, Features{X: make([]float32, 9), Labels: []int{0, 1, 1}, D: 3}, nil, "linear probe: test features have dimension 3, train 2"},
		{Features{X: make([]float32, 6), Labels: []int{0, 2, 1}, D: 2}, ok, nil, "linear probe: train label 2 at row 1 is outside 0..1"},
		{ok, Features{X: make([]float32, 2), Labels: []int{-1}, D: 2}, nil, "linear probe: test label -1 at row 0 is outside 0..1"},
		{ok, ok, func(o *ProbeOpts) { o.Classes = 1 }, "linear probe: 1 classes, want at least 2"},
		{ok, ok, func(o *ProbeOpts) { o.LRs = nil }, "linear probe: no learning rates"},
		{ok, ok, func(o *ProbeOpts) { o.LRs = []float64{0.1, 0} }, "linear probe: learning rate 0 must be positive"},
		{ok, ok, func(o *ProbeOpts) { o.Epochs = 0 }, "linear probe: 0 epochs of batch 256, want at least 1 of each"},
		{ok, ok, func(o *ProbeOpts) { o.ValFraction = 1 }, "linear probe: validation fraction 1, want 0 <= f < 1"},
		{ok, ok, func(o *ProbeOpts) { o.ValFraction = 0.1 }, "linear probe: holding out 0.1 of 3 training rows leaves 0 to validate and 3 to train"},
		{ok, ok, func(o *ProbeOpts) { o.Norm = 7 }, "linear probe: unknown feature norm 7"},
	} {
		oc := o
		oc.ValFraction = 0.5
		if c.o != nil {
			c.o(&oc)
		}
		_, err := LinearProbe(context.Background(), dev, c.train, c.test, oc)
		require.EqualError(t, err, c.want)
	}
}

func TestProbeOnRawPixels(t *testing.T) {
	// A sanity figure on real data: a linear classifier on raw, standardised
	// Fashion-MNIST pixels (84% with the full training set in the literature).
	train, err := data.LoadFashionMNIST(data.FashionMNISTDir, "train")
	require.NoError(t, err)
	test, err := data.LoadFashionMNIST(data.FashionMNISTDir, "t10k")
	require.NoError(t, err)
	const ntr, nte, d = 60000, 10000, 784
	feats := func(g *data.Gray, n int) Features {
		f := Features{X: make([]float32, n*d), Labels: g.Labels[:n], D: d}
		for i := range f.X {
			f.X[i] = float32(g.Pixels[i]) / 255
		}
		return f
	}
	o := DefaultProbe(10)
	o.LRs = []float64{3e-3, 1e-2, 3e-2, 1e-1}
	o.Epochs = 4
	start := time.Now()
	r, err := LinearProbe(context.Background(), dev, feats(train, ntr), feats(test, nte), o)
	require.NoError(t, err)
	t.Logf("raw-pixel linear probe, %dk train / %dk test, %d epochs: val %.3f test %.3f per LR %v; best LR %g: %.2f%% in %v",
		ntr/1000, nte/1000, o.Epochs, r.ValAcc, r.TestAcc, r.LRs, r.LRs[r.Best], 100*r.Acc, time.Since(start).Round(time.Millisecond))
	require.Greater(t, r.Acc, 0.78)
	require.Less(t, r.Acc, 0.90)
}
