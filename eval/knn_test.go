//go:build !js

package eval

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
)

var dev *gpu.Device

func TestMain(m *testing.M) {
	d, err := gpu.Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dev = d
	code := m.Run()
	d.Close()
	os.Exit(code)
}

func TestSearchMatchesBruteForceAcrossShards(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const d, nq, nb, k = 19, 37, 3001, 7
	q := make([]float32, nq*d)
	b := make([]float32, nb*d)
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	for i := range b {
		b[i] = float32(rng.NormFloat64())
	}
	got, err := SearchAll(context.Background(), dev, Mat{Data: q, D: d}, Mat{Data: b, D: d}, SearchOpts{K: k, MaxRows: 1000}) // four base blocks
	require.NoError(t, err)
	wantIdx, wantSim := bruteTop(q, b, d)
	for i := range nq * k {
		// f32 dot products of 19 terms are good to ~1e-5; random data has
		// no near-ties at that level, so the order matches exactly.
		require.InDelta(t, wantSim[i/k][i%k], got.Similar[i], 1e-4, "slot %d", i)
		require.Equal(t, wantIdx[i/k][i%k], got.Index[i], "slot %d", i)
	}
}

func TestClassifyWeightsVotes(t *testing.T) {
	// Two neighbours of class 1 at similarity 0.5 lose to one of class 0 at
	// 0.9: exp(0.9/0.07) > 2 exp(0.5/0.07).
	nb := &Neighbours{K: 3, Index: []int{0, 1, 2}, Similar: []float32{0.9, 0.5, 0.5}}
	require.Equal(t, []int{0}, DefaultKNN(2).Classify(nb, []int{0, 1, 1}))
	// With a hot temperature the majority wins.
	require.Equal(t, []int{1}, KNNOpts{K: 3, T: 100, Classes: 2}.Classify(nb, []int{0, 1, 1}))
}

func TestKNNOnRawPixels(t *testing.T) {
	// A sanity figure on real data: raw Fashion-MNIST pixels, 6k train
	// images vs 1k test images (the full 60k/10k split gives 84.6%).
	train, err := data.LoadFashionMNIST(data.FashionMNISTDir, "train")
	require.NoError(t, err)
	test, err := data.LoadFashionMNIST(data.FashionMNISTDir, "t10k")
	require.NoError(t, err)
	const ntr, nte, d = 6000, 1000, 784
	pix := func(g *data.Gray, n int) []float32 {
		out := make([]float32, n*d)
		for i := range out {
			out[i] = float32(g.Pixels[i]) / 255
		}
		return out
	}
	acc, err := KNNAccuracy(context.Background(), dev, pix(train, ntr), train.Labels[:ntr], pix(test, nte), test.Labels[:nte], d, DefaultKNN(10))
	require.NoError(t, err)
	t.Logf("raw-pixel kNN accuracy, 6k train / 1k test: %.2f%%", 100*acc)
	require.Greater(t, acc, 0.78)
	require.Less(t, acc, 0.90)
}
