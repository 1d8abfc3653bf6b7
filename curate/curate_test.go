//go:build !js

package curate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/eval"
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

// naiveComponents labels components by repeated relaxation: every edge
// pulls both ends to the smaller label until nothing changes.
func naiveComponents(n int, edges [][2]int) []int {
	c := make([]int, n)
	for i := range c {
		c[i] = i
	}
	for changed := true; changed; {
		changed = false
		for _, e := range edges {
			m := min(c[e[0]], c[e[1]])
			if c[e[0]] != m || c[e[1]] != m {
				c[e[0]], c[e[1]] = m, m
				changed = true
			}
		}
	}
	return c
}

func TestUnionFind(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 17, 500} {
		for _, m := range []int{0, n / 3, n, 3 * n} {
			var edges [][2]int
			for range m {
				edges = append(edges, [2]int{rng.IntN(n), rng.IntN(n)})
			}
			u := NewUnionFind(n)
			for _, e := range edges {
				u.Union(e[0], e[1])
			}
			want := naiveComponents(n, edges)
			require.Equal(t, want, u.Components(), "n %d, %d edges", n, m)
			sizes := map[int]int{}
			for _, c := range want {
				sizes[c]++
			}
			for i := range n {
				require.Equal(t, sizes[want[i]], u.Size(i))
			}
		}
	}
}

func randUnit(rng *rand.Rand, n, d int) []float32 {
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	eval.Normalize(x, d)
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
		got, err := SearchAll(context.Background(), dev, Mat{q, c.d}, Mat{b, c.d}, SearchOpts{K: c.k, MaxRows: c.maxRows})
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

// plantedPool returns n unit vectors in which groups of copies are planted:
// for each group an original and 1-3 members that are exact copies or the
// original plus noise (cosine about 0.75-0.95). truth[i] is the original
// of i's group (i itself for originals and singletons).
func plantedPool(rng *rand.Rand, n, d, groups int) ([]float32, []int) {
	x := randUnit(rng, n, d)
	truth := make([]int, n)
	for i := range truth {
		truth[i] = i
	}
	perm := rng.Perm(n)
	at := 0
	for g := 0; g < groups && at+4 <= n; g++ {
		members := 1 + rng.IntN(3)
		orig := perm[at]
		at++
		for range members {
			m := perm[at]
			at++
			noise := [4]float64{0, 0.35, 0.5, 0.7}[rng.IntN(4)] / math.Sqrt(float64(d))
			for c := range d {
				x[m*d+c] = x[orig*d+c] + float32(noise*rng.NormFloat64())
			}
			eval.Normalize(x[m*d:(m+1)*d], d)
			truth[m] = orig
		}
	}
	// The kept image is the component's lowest index.
	low := map[int]int{}
	for i, o := range truth {
		if v, ok := low[o]; !ok || i < v {
			low[o] = i
		}
	}
	for i, o := range truth {
		truth[i] = low[o]
	}
	return x, truth
}

func TestSelfDedupPlanted(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, d = 2000, 128
	x, truth := plantedPool(rng, n, d, 200)
	dd, err := SelfDedup(context.Background(), dev, Mat{x, d}, DedupOpts{K: 64, Threshold: 0.6, MaxRows: 1100})
	require.NoError(t, err)
	p, r := DropPrecisionRecall(truth, dd.Component)
	t.Logf("planted self-dedup: %d images, %d kept (truth %d), precision %.3f recall %.3f, %d edges",
		n, dd.Kept(), NewDedupTruth(truth), p, r, dd.Edges)
	require.Equal(t, 1.0, p)
	require.Equal(t, 1.0, r)
	require.Equal(t, truth, dd.Component)
	for _, g := range dd.Groups() {
		require.True(t, dd.Keep(g[0]))
		for _, i := range g[1:] {
			require.False(t, dd.Keep(i))
			require.Greater(t, dd.NearestSim[i], float32(0.6))
		}
	}
}

// Through an IVF index the same planted copies are found: each image's
// own list is probed, and copies are near enough to share lists.
func TestSelfDedupPlantedIVF(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, d = 2000, 128
	x, truth := plantedPool(rng, n, d, 200)
	dd, err := SelfDedup(context.Background(), dev, Mat{x, d}, DedupOpts{
		K: 64, Threshold: 0.6, MaxRows: 700, Index: &IVFOpts{Lists: 40, Seed: 3}, NProbe: 4})
	require.NoError(t, err)
	p, r := DropPrecisionRecall(truth, dd.Component)
	t.Logf("planted self-dedup through IVF (40 lists, 4 probed): %d kept (truth %d), precision %.3f recall %.3f",
		dd.Kept(), NewDedupTruth(truth), p, r)
	require.Equal(t, 1.0, p)
	require.GreaterOrEqual(t, r, 0.95)
}

// NewDedupTruth counts the images a perfect dedup keeps.
func NewDedupTruth(truth []int) int {
	n := 0
	for i, c := range truth {
		if c == i {
			n++
		}
	}
	return n
}

func TestRelativeDedup(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const d = 256 // random unit vectors: cosine std 1/16, far below 0.45
	pool := randUnit(rng, 700, d)
	evals := randUnit(rng, 90, d)
	// Plant: pool 10..19 are noisy copies of eval images 0..9 (cosine
	// about 0.7); pool 20 is an exact copy of pool 10.
	for i := range 10 {
		for c := range d {
			pool[(10+i)*d+c] = evals[i*d+c] + float32(0.8/math.Sqrt(d)*rng.NormFloat64())
		}
		eval.Normalize(pool[(10+i)*d:(11+i)*d], d)
	}
	copy(pool[20*d:21*d], pool[10*d:11*d])
	rel, err := RelativeDedup(context.Background(), dev, Mat{pool, d}, Mat{evals, d}, DefaultRelativeThreshold, 128)
	require.NoError(t, err)
	var dropped []int
	for i := range 700 {
		if rel.Drop(i) {
			dropped = append(dropped, i)
		}
	}
	require.Equal(t, []int{10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, dropped)
	require.Equal(t, 0, rel.Nearest[10])
	require.Equal(t, 0, rel.Nearest[20])
	comp := make([]int, 700)
	for i := range comp {
		comp[i] = i
	}
	comp[21] = 11 // 21 is a copy of 11 that the eval search missed
	drop := DropComponents(comp, rel.Drop)
	require.True(t, drop[21])
	require.False(t, drop[22])
}
