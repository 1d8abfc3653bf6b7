//go:build !js

package curate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
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
	dd, err := SelfDedup(context.Background(), dev, Mat{Data: x, D: d}, DedupOpts{K: 64, Threshold: 0.6, MaxRows: 1100})
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

// One search then DedupBlocks at each threshold is SelfDedup at each.
func TestDedupBlocksIsSelfDedup(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const n, d = 600, 32
	x, _ := plantedPool(rng, n, d, 60)
	pool := Mat{Data: x, D: d}
	blocks, err := SelfNeighbours(context.Background(), dev, pool, DedupOpts{K: 16, MaxRows: 250})
	require.NoError(t, err)
	require.Len(t, blocks, 3, "blocks of at most 250 rows")
	for _, th := range []float32{0.3, 0.6, 0.9} {
		want, err := SelfDedup(context.Background(), dev, pool, DedupOpts{K: 16, Threshold: th, MaxRows: 250})
		require.NoError(t, err)
		got := DedupBlocks(n, blocks, th)
		require.Equal(t, want, got, "threshold %g", th)
		require.Greater(t, got.Edges, 0)
	}
	_, err = SelfNeighbours(context.Background(), dev, pool, DedupOpts{})
	require.ErrorContains(t, err, "self-dedup: k = 0, want >= 1")
}

// Through an IVF index the same planted copies are found: each image's
// own list is probed, and copies are near enough to share lists.
// With 8-bit lists too.
func TestSelfDedupPlantedIVF(t *testing.T) {
	for _, int8 := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(5, 6))
		const n, d = 2000, 128
		x, truth := plantedPool(rng, n, d, 200)
		dd, err := SelfDedup(context.Background(), dev, Mat{Data: x, D: d}, DedupOpts{
			K: 64, Threshold: 0.6, MaxRows: 700, Index: &IVFOpts{Lists: 40, Seed: 3, Int8: int8}, NProbe: 4})
		require.NoError(t, err)
		p, r := DropPrecisionRecall(truth, dd.Component)
		t.Logf("planted self-dedup through IVF (40 lists, 4 probed, int8 %v): %d kept (truth %d), precision %.3f recall %.3f",
			int8, dd.Kept(), NewDedupTruth(truth), p, r)
		require.Equal(t, 1.0, p)
		require.GreaterOrEqual(t, r, 0.95)
	}
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
	rel, err := RelativeDedup(context.Background(), dev, Mat{Data: pool, D: d}, Mat{Data: evals, D: d}, DefaultRelativeThreshold, 128)
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

// rescore makes exact every similarity that may exceed the threshold,
// leaves the others, and keeps each query's neighbours sorted.
func TestRescore(t *testing.T) {
	const d = 4
	pool := Mat{Data: []float32{1, 0, 0, 0, 0.8, 0.6, 0, 0, 0, 1, 0, 0, 0.6, 0, 0.8, 0}, D: d}
	query := []float32{1, 0, 0, 0}
	// Approximate scores of rows 1, 3, 2 (exact 0.8, 0.6, 0), off by up to 0.05.
	nb := &eval.Neighbours{K: 3, Index: []int{1, 3, 2}, Similar: []float32{0.78, 0.64, 0.01}}
	bound := func([]float32) float32 { return 0.05 }
	require.NoError(t, rescore(pool, query, d, nb, 0.6, bound, make([]float32, d)))
	// 0.78 and 0.64 may exceed 0.6: now exact (0.8, 0.6); 0.01 cannot.
	require.Equal(t, []int{1, 3, 2}, nb.Index)
	require.InDeltaSlice(t, []float32{0.8, 0.6, 0.01}, nb.Similar, 1e-6)
	// Reordered when exact scores swap two neighbours.
	nb = &eval.Neighbours{K: 3, Index: []int{3, 1, 2}, Similar: []float32{0.66, 0.65, 0.01}}
	require.NoError(t, rescore(pool, query, d, nb, 0.6, bound, make([]float32, d)))
	require.Equal(t, []int{1, 3, 2}, nb.Index)
	require.InDeltaSlice(t, []float32{0.8, 0.6, 0.01}, nb.Similar, 1e-6)
}
