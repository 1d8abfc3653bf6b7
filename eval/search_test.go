package eval

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

// randUnit returns n random unit vectors of dimension d.
func randUnit(rng *rand.Rand, n, d int) []float32 {
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	Normalize(x, d)
	return x
}

// bruteTop returns, per query, all base similarities in float64, sorted
// descending with their indices.
func bruteTop(q, b []float32, d int) ([][]int, [][]float64) {
	nq, nb := len(q)/d, len(b)/d
	idx, sim := make([][]int, nq), make([][]float64, nq)
	for i := range nq {
		s := make([]float64, nb)
		o := make([]int, nb)
		for j := range nb {
			o[j] = j
			for c := range d {
				s[j] += float64(q[i*d+c]) * float64(b[j*d+c])
			}
		}
		sort.SliceStable(o, func(a, c int) bool { return s[o[a]] > s[o[c]] })
		idx[i] = o
		sim[i] = make([]float64, nb)
		for j, k := range o {
			sim[i][j] = s[k]
		}
	}
	return idx, sim
}

func TestSearchExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct{ nq, nb, d, k, maxRows int }{
		{1300, 517, 36, 10, 1100}, // two query blocks, several sub-blocks (64 rows on a CPU, 1024 on a GPU)
		{201, 517, 36, 10, 200},   // blocks on both sides
		{1, 5, 37, 7, 0},          // k above the base size, scalar matmul path
		{65, 130, 20, 64, 64},
	} {
		q, b := randUnit(rng, c.nq, c.d), randUnit(rng, c.nb, c.d)
		got, err := SearchAll(context.Background(), dev, Mat{Data: q, D: c.d}, Mat{Data: b, D: c.d}, SearchOpts{K: c.k, MaxRows: c.maxRows})
		require.NoError(t, err)
		wi, ws := bruteTop(q, b, c.d)
		for i := range c.nq {
			for j := range c.k {
				g := got.Index[i*c.k+j]
				if j >= c.nb {
					require.Equal(t, -1, g, "%+v query %d slot %d", c, i, j)
					continue
				}
				// float32 dot products of unit vectors: 1e-5 covers the
				// rounding of d <= 37 products.
				require.InDelta(t, ws[i][j], got.Similar[i*c.k+j], 1e-5, "%+v query %d slot %d", c, i, j)
				if j+1 < c.nb && ws[i][j]-ws[i][j+1] > 1e-5 && (j == 0 || ws[i][j-1]-ws[i][j] > 1e-5) {
					require.Equal(t, wi[i][j], g, "%+v query %d slot %d", c, i, j)
				}
			}
		}
	}
	_, err := SearchAll(context.Background(), dev, Mat{make([]float32, 8), 4}, Mat{make([]float32, 9), 3}, SearchOpts{K: 1})
	require.ErrorContains(t, err, "query dim 4, base dim 3")
	_, err = SearchAll(context.Background(), dev, Mat{make([]float32, 8), 4}, Mat{make([]float32, 8), 4}, SearchOpts{K: 65})
	require.ErrorContains(t, err, "k = 65")
}

func TestMergeTopKeepsBestAcrossBlocks(t *testing.T) {
	inf := float32(math.Inf(-1))
	sim, idx := []float32{inf, inf, inf}, []int{-1, -1, -1}
	MergeTop(sim, idx, []float32{0.9, 0.5, 0.1}, []uint32{4, 8, 9})
	MergeTop(sim, idx, []float32{0.7, 0.6, 0.2}, []uint32{100, 101, 102})
	require.Equal(t, []int{4, 100, 101}, idx)
	require.Equal(t, []float32{0.9, 0.7, 0.6}, sim)
	// Equal similarities keep the earlier list's entry first; the padding
	// of a short candidate list (math.MaxUint32) is never taken.
	MergeTop(sim, idx, []float32{0.7, 0}, []uint32{7, math.MaxUint32})
	require.Equal(t, []int{4, 100, 7}, idx)
}
