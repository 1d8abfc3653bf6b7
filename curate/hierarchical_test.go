//go:build !js

package curate

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWaterFill(t *testing.T) {
	require.Equal(t, []int{48, 48, 47, 47, 10}, WaterFill([]int{2000, 500, 100, 50, 10}, 200))
	require.Equal(t, []int{3, 3, 2}, WaterFill([]int{5, 5, 5}, 8), "remainder to the lower index among equals")
	require.Equal(t, []int{1, 0, 4}, WaterFill([]int{1, 0, 4}, 9), "n above the total: everything")
	require.Equal(t, []int{0, 0}, WaterFill([]int{3, 4}, 0))
	require.Empty(t, WaterFill(nil, 5))
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		sizes := make([]int, 1+rng.IntN(12))
		total := 0
		for i := range sizes {
			sizes[i] = rng.IntN(30)
			if rng.IntN(4) == 0 {
				sizes[i] = rng.IntN(3000)
			}
			total += sizes[i]
		}
		n := rng.IntN(total + 10)
		q := WaterFill(sizes, n)
		sum := 0
		for i := range q {
			sum += q[i]
			require.LessOrEqual(t, q[i], sizes[i], "sizes %v n %d quotas %v", sizes, n, q)
			require.GreaterOrEqual(t, q[i], 0)
			if q[i] < sizes[i] { // capped: no quota exceeds it by more than one
				for j := range q {
					require.LessOrEqual(t, q[j], q[i]+1, "sizes %v n %d quotas %v", sizes, n, q)
				}
			}
		}
		require.Equal(t, min(n, total), sum, "sizes %v n %d quotas %v", sizes, n, q)
	}
}

// TestSampleTree checks the top-down split on a hand-made hierarchy: two
// top clusters holding 90 and 10 points, the first split 80 + 10 below.
func TestSampleTree(t *testing.T) {
	var assign []int
	for c, size := range []int{80, 10, 10} {
		for range size {
			assign = append(assign, c)
		}
	}
	h := &Hierarchy{D: 1, Levels: []HKMLevel{{K: 3, Assign: assign}, {K: 2, Assign: []int{0, 0, 1}}}}
	got := h.Sample(30, 5)
	require.Len(t, got, 30)
	require.True(t, slices.IsSorted(got))
	require.Len(t, slices.Compact(slices.Clone(got)), 30, "no point twice")
	count := make([]int, 3)
	for _, i := range got {
		count[assign[i]]++
	}
	// Top: min(size, cap) with cap 20 gives 20 + 10; the 20 split 10 + 10.
	require.Equal(t, []int{10, 10, 10}, count)
	require.Equal(t, got, h.Sample(30, 5))
	require.NotEqual(t, got, h.Sample(30, 6))
	require.Len(t, h.Sample(500, 1), 100, "n above the points: all of them")
}

// unequalBlobs draws clusters of the given sizes around centres 12 apart
// in d dimensions (unit noise): truth[i] is the cluster of point i.
func unequalBlobs(rng *rand.Rand, sizes []int, d int) ([]float32, []int) {
	var x []float32
	var truth []int
	for c, size := range sizes {
		centre := make([]float64, d)
		centre[c] = 12
		for range size {
			for e := range d {
				x = append(x, float32(centre[e]+rng.NormFloat64()))
			}
			truth = append(truth, c)
		}
	}
	return x, truth
}

func TestHierarchicalBalancedSample(t *testing.T) {
	sizes := []int{2000, 500, 100, 50, 10}
	const d, n = 16, 200
	x, truth := unequalBlobs(rand.New(rand.NewPCG(21, 22)), sizes, d)
	ctx := context.Background()

	uniform := make([]int, len(sizes))
	for _, i := range rand.New(rand.NewPCG(1, 1)).Perm(len(truth))[:n] {
		uniform[truth[i]]++
	}
	t.Logf("uniform sample of %d per true cluster: %v", n, uniform)
	require.Greater(t, uniform[0], n*6/10, "uniform sampling takes ~75%% from the biggest")

	inBig := map[int]int{}
	for _, r := range []int{0, 2, 1} {
		o := HKMOpts{Levels: []int{20, 5}, Iters: 10, Seed: 3, Resample: r, ResamplePoints: 10}
		if r == 1 { // three levels, the default resampling size
			o = HKMOpts{Levels: []int{40, 12, 5}, Iters: 10, Seed: 4, Resample: r}
		}
		h, err := HierarchicalKMeans(ctx, dev, x, d, o)
		require.NoError(t, err)
		require.Len(t, h.Levels, len(o.Levels))
		require.Len(t, h.Levels[0].Assign, len(truth))
		require.Len(t, h.Levels[1].Assign, o.Levels[0])
		big := 0
		for c := range o.Levels[0] {
			if h.Levels[0].Centroids[c*d] > 6 { // the centroid lies in the 2000-point cluster
				big++
			}
		}
		inBig[r] = big
		got := h.Sample(n, 9)
		require.Len(t, got, n)
		count := make([]int, len(sizes))
		for _, i := range got {
			count[truth[i]]++
		}
		t.Logf("levels %v, resampling rounds %d: %d level-0 centroids in the 2000-point cluster; balanced sample per true cluster: %v", o.Levels, r, big, count)
		// WaterFill of the true sizes gives 48 48 47 47 10; the k-means
		// recovers the five blobs at the top level, so the split is exact
		// up to which clusters take the two remainders.
		require.Equal(t, 10, count[4], "the 10-point cluster gives all")
		if r == 1 {
			// This seed is one of the few (5 of 72 level/seed/round
			// combinations tried) where the top-level k-means++ lands in a
			// local minimum: the big blob split in two, two small ones
			// merged. The sample is still far from uniform's.
			require.LessOrEqual(t, count[0], n/2, "%v", count)
			require.GreaterOrEqual(t, slices.Min(count[:4]), 10, "%v", count)
		} else {
			for c := range 4 {
				require.InDelta(t, 47.5, count[c], 1, "true cluster %d: %v", c, count)
			}
		}
		h2, err := HierarchicalKMeans(ctx, dev, x, d, o)
		require.NoError(t, err)
		require.Equal(t, h.Levels, h2.Levels, "same seed, same hierarchy")
		require.Equal(t, got, h2.Sample(n, 9))
	}
	// Resampling moves level-0 centroids out of the dense cluster (here
	// 12 -> 9 of 20; the three-level case fits 40).
	require.Less(t, inBig[2], inBig[0])
}

func TestHierarchicalErrors(t *testing.T) {
	ctx := context.Background()
	x := make([]float32, 40)
	_, err := HierarchicalKMeans(ctx, dev, x, 4, HKMOpts{Levels: []int{5, 6}})
	require.ErrorContains(t, err, "level 1 has 6 clusters for 5 items")
	_, err = HierarchicalKMeans(ctx, dev, x, 4, HKMOpts{Levels: []int{11}})
	require.ErrorContains(t, err, "level 0 has 11 clusters for 10 items")
	_, err = HierarchicalKMeans(ctx, dev, x, 4, HKMOpts{})
	require.ErrorContains(t, err, "no levels")
	_, err = HierarchicalKMeans(ctx, dev, x, 3, HKMOpts{Levels: []int{2}})
	require.ErrorContains(t, err, "40 values are not rows of 3")
}
