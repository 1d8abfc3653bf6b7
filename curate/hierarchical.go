package curate

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/webdino/webdino/gpu"
)

// HKMOpts configure HierarchicalKMeans.
type HKMOpts struct {
	// Levels are the clusters of each level, finest first: level 0 groups
	// the points into Levels[0] clusters, level l groups the centroids of
	// level l-1 into Levels[l]. Each must be at most the one before it.
	Levels []int
	Iters  int    // Lloyd iterations of every fit (0: 20)
	Seed   uint64 // k-means++ seeding; level l, round r use Seed+100*l+r
	// Resample is the number of resampling rounds per level (Vo et al.'s
	// r; 0 for plain hierarchical k-means).
	Resample int
	// ResamplePoints is how many items each cluster gives a resampling
	// round, those nearest its centroid (Vo et al.'s s; 0: half the mean
	// cluster size of the level, at least 1).
	ResamplePoints  int
	Sample, MaxRows int // passed to every KMeansFit
}

// HKMLevel is one level of a Hierarchy.
type HKMLevel struct {
	K         int
	Centroids []float32 // [K, D]
	// Assign is the cluster of every item of the level below: of every
	// point at level 0, of every level l-1 cluster at level l.
	Assign []int
}

// Hierarchy is a hierarchical k-means of n points. Sample reads only the
// Assign slices, so Levels[0].Assign may be replaced by the clusters of a
// larger set of points (Predict with Levels[0].Centroids) to sample from
// points the fit did not see.
type Hierarchy struct {
	D      int
	Levels []HKMLevel
}

// HierarchicalKMeans fits the hierarchical k-means of Vo et al. 2024
// ("Automatic data curation for self-supervised learning"), used for
// DINOv2-style balanced sampling: k-means of the points, then k-means of
// those centroids, and so on, each fit by KMeansFit (k-means++ seeding,
// Lloyd on the GPU). After each level's fit, each of o.Resample rounds
// takes from every cluster its o.ResamplePoints items nearest the
// centroid (all of a smaller cluster), fits a fresh k-means (k-means++
// seeding, same K) on that union, and reassigns all the level's items to
// the new centroids. The resampled set holds about as many items of each
// cluster, so dense regions no longer attract most centroids: the
// centroids spread over the support of the data, which is what balanced
// sampling needs.
func HierarchicalKMeans(ctx context.Context, dev *gpu.Device, x []float32, d int, o HKMOpts) (*Hierarchy, error) {
	if d <= 0 || len(x)%d != 0 || len(x) == 0 {
		return nil, fmt.Errorf("hierarchical k-means: %d values are not rows of %d", len(x), d)
	}
	if len(o.Levels) == 0 {
		return nil, fmt.Errorf("hierarchical k-means: no levels")
	}
	items := len(x) / d
	for l, k := range o.Levels {
		if k < 1 || k > items {
			return nil, fmt.Errorf("hierarchical k-means: level %d has %d clusters for %d items", l, k, items)
		}
		items = k
	}
	h := &Hierarchy{D: d}
	for l, k := range o.Levels {
		km, err := KMeansFit(ctx, dev, x, d, KMeansOpts{K: k, Iters: o.Iters, Seed: o.Seed + 100*uint64(l), Sample: o.Sample, MaxRows: o.MaxRows})
		if err != nil {
			return nil, fmt.Errorf("hierarchical k-means level %d: %w", l, err)
		}
		cent, assign := km.Centroids, km.Assign
		for r := 1; r <= o.Resample; r++ {
			s := o.ResamplePoints
			if s <= 0 {
				s = max(1, len(assign)/(2*k))
			}
			y := nearestPerCluster(x, d, cent, assign, s)
			if len(y)/d < k { // too many empty clusters to refit k
				break
			}
			rk, err := KMeansFit(ctx, dev, y, d, KMeansOpts{K: k, Iters: o.Iters, Seed: o.Seed + 100*uint64(l) + uint64(r), Sample: o.Sample, MaxRows: o.MaxRows})
			if err != nil {
				return nil, fmt.Errorf("hierarchical k-means level %d resampling %d: %w", l, r, err)
			}
			cent = rk.Centroids
			if assign, _, err = rk.Predict(ctx, dev, Mat{Data: x, D: d}, o.MaxRows); err != nil {
				return nil, fmt.Errorf("hierarchical k-means level %d resampling %d: %w", l, r, err)
			}
		}
		h.Levels = append(h.Levels, HKMLevel{K: k, Centroids: cent, Assign: assign})
		x = cent
	}
	return h, nil
}

// nearestPerCluster returns the rows of x [n, d] that are among the s
// nearest to their cluster's centroid, cluster by cluster.
func nearestPerCluster(x []float32, d int, cent []float32, assign []int, s int) []float32 {
	type item struct {
		i    int
		dist float64
	}
	members := make([][]item, len(cent)/d)
	for i, c := range assign {
		var dd float64
		for e, v := range x[i*d : (i+1)*d] {
			t := float64(v) - float64(cent[c*d+e])
			dd += t * t
		}
		members[c] = append(members[c], item{i, dd})
	}
	var y []float32
	for _, m := range members {
		slices.SortFunc(m, func(a, b item) int { return cmp.Or(cmp.Compare(a.dist, b.dist), a.i-b.i) })
		for _, it := range m[:min(s, len(m))] {
			y = append(y, x[it.i*d:(it.i+1)*d]...)
		}
	}
	return y
}

// WaterFill splits n among clusters of the given sizes as evenly as they
// allow: every cluster gets min(size, cap), with the largest cap whose
// quotas sum to at most n, and what is left (fewer than the clusters
// above the cap) goes one each to the largest clusters above the cap
// (the lower index first among equal sizes). Quotas sum to min(n, total).
func WaterFill(sizes []int, n int) []int {
	q := make([]int, len(sizes))
	order := make([]int, len(sizes))
	for i := range order {
		order[i] = i
	}
	// Ascending size, the higher index first among equals: the remainder
	// goes to the end of the order.
	slices.SortFunc(order, func(a, b int) int { return cmp.Or(sizes[a]-sizes[b], b-a) })
	left := max(0, n)
	for j, i := range order {
		rest := len(order) - j
		if sizes[i]*rest <= left { // this and every larger cluster fits whole
			q[i] = sizes[i]
			left -= sizes[i]
			continue
		}
		// Every remaining cluster is larger than left/rest: cap them there.
		c, extra := left/rest, left%rest
		for k := len(order) - 1; k >= j; k-- {
			q[order[k]] = c
			if extra > 0 && len(order)-1-k < extra {
				q[order[k]]++
			}
		}
		break
	}
	return q
}

// Sample returns min(n, points) point indices, in increasing order, chosen
// top-down as Vo et al.: WaterFill splits n among the top-level clusters
// by the points each holds, each cluster's quota is split among its
// children the same way, down to the level-0 clusters, whose quotas are
// filled with points chosen uniformly at random. Children are visited in
// a random order, so the one-point remainders of WaterFill fall on random
// clusters among equals. Deterministic for a seed.
func (h *Hierarchy) Sample(n int, seed uint64) []int {
	rng := newRand(seed)
	top := len(h.Levels) - 1
	children := make([][][]int, len(h.Levels))
	points := make([][]int, len(h.Levels))
	for l, lv := range h.Levels {
		children[l] = make([][]int, lv.K)
		points[l] = make([]int, lv.K)
		for i, c := range lv.Assign {
			children[l][c] = append(children[l][c], i)
			if l == 0 {
				points[0][c]++
			} else {
				points[l][c] += points[l-1][i]
			}
		}
	}
	var out []int
	// take picks q points under items, clusters of level l (points when
	// l < 0).
	var take func(l int, items []int, q int)
	take = func(l int, items []int, q int) {
		items = slices.Clone(items)
		rng.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
		if l < 0 {
			out = append(out, items[:min(q, len(items))]...)
			return
		}
		sizes := make([]int, len(items))
		for j, c := range items {
			sizes[j] = points[l][c]
		}
		for j, qj := range WaterFill(sizes, q) {
			if qj > 0 {
				take(l-1, children[l][items[j]], qj)
			}
		}
	}
	all := make([]int, h.Levels[top].K)
	for i := range all {
		all[i] = i
	}
	take(top, all, n)
	slices.Sort(out)
	return out
}
