package curate

import (
	"context"
	"fmt"
	"slices"

	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
)

// Hit is one retrieved pool image: why it was chosen.
type Hit struct {
	Pool    int     // pool row
	Curated int     // the curated image that retrieved it (-1 for cluster retrieval)
	Sim     float32 // its similarity to that image (sample retrieval)
	Cluster int     // its k-means cluster (cluster retrieval; -1 otherwise)
}

// SampleRetrieve returns, for every curated image, its k nearest pool
// images (the paper's k = 4, 32 for the core set), restricted to the pool
// rows allow accepts (nil: all; the search asks for more neighbours so
// that dropped rows rarely leave a curated image short). A pool image
// retrieved by several curated images is listed once, for its most
// similar one. Hits are sorted by pool row.
func SampleRetrieve(ctx context.Context, dev *gpu.Device, curated, pool Rows, k int, allow func(int) bool, maxRows int) ([]Hit, error) {
	if k < 1 {
		return nil, fmt.Errorf("sample retrieval: k = %d", k)
	}
	ask := k
	if allow != nil {
		ask = min(64, 2*k)
	}
	ask = min(ask, pool.Len())
	best := map[int]Hit{}
	err := eval.Search(ctx, dev, curated, pool, eval.SearchOpts{K: ask, MaxRows: maxRows}, func(b eval.Block) error {
		for r := 0; r*ask < len(b.Index); r++ {
			got := 0
			for j := r * ask; j < (r+1)*ask && got < k; j++ {
				p := b.Index[j]
				if p < 0 || (allow != nil && !allow(p)) {
					continue
				}
				got++
				if h, ok := best[p]; !ok || b.Similar[j] > h.Sim {
					best[p] = Hit{Pool: p, Curated: b.First + r, Sim: b.Similar[j], Cluster: -1}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sample retrieval: %w", err)
	}
	hits := make([]Hit, 0, len(best))
	for _, h := range best {
		hits = append(hits, h)
	}
	slices.SortFunc(hits, func(a, b Hit) int { return a.Pool - b.Pool })
	return hits, nil
}

// ClusterRetrieve is the paper's retrieval for small curated sets: pool
// and curated images are assigned to the same k-means clusters, and each
// cluster holding more than minCurated curated images gives up to
// perCluster of its pool images (those allow accepts), chosen uniformly at
// random with seed (all of them when the cluster is small enough). Hits
// are sorted by pool row.
func ClusterRetrieve(poolCluster, curatedCluster []int, minCurated, perCluster int, allow func(int) bool, seed uint64) []Hit {
	count := map[int]int{}
	for _, c := range curatedCluster {
		count[c]++
	}
	members := map[int][]int{}
	for i, c := range poolCluster {
		if count[c] > minCurated && (allow == nil || allow(i)) {
			members[c] = append(members[c], i)
		}
	}
	clusters := make([]int, 0, len(members))
	for c := range members {
		clusters = append(clusters, c)
	}
	slices.Sort(clusters)
	rng := newRand(seed)
	var hits []Hit
	for _, c := range clusters {
		m := members[c]
		if len(m) > perCluster {
			rng.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
			m = m[:perCluster]
		}
		for _, p := range m {
			hits = append(hits, Hit{Pool: p, Curated: -1, Cluster: c})
		}
	}
	slices.SortFunc(hits, func(a, b Hit) int { return a.Pool - b.Pool })
	return hits
}
