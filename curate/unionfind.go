// Package curate builds a training set from an uncurated image pool as the
// DINOv2 paper does for LVD-142M: embeddings compared by cosine similarity,
// self-deduplication (copy detection by k nearest neighbours and connected
// components), relative deduplication against evaluation sets, and
// retrieval of pool images near curated ones, sample by sample or cluster
// by cluster (k-means on the GPU). The exact neighbour search streams both
// sides in shards so memory stays bounded; an IVF index trades exactness
// for speed.
package curate

// UnionFind is a disjoint-set forest over 0..n-1 with path halving and
// union by size: near-constant time per operation, so a pool of millions
// of images and tens of millions of duplicate edges stays cheap.
type UnionFind struct {
	parent []int32
	size   []int32
}

// NewUnionFind makes n singleton sets.
func NewUnionFind(n int) *UnionFind {
	u := &UnionFind{parent: make([]int32, n), size: make([]int32, n)}
	for i := range u.parent {
		u.parent[i] = int32(i)
		u.size[i] = 1
	}
	return u
}

// Len is the number of elements.
func (u *UnionFind) Len() int { return len(u.parent) }

// Find returns the root of i's set.
func (u *UnionFind) Find(i int) int {
	p := u.parent
	for int(p[i]) != i {
		p[i] = p[p[i]]
		i = int(p[i])
	}
	return i
}

// Union merges the sets of a and b and reports whether they were apart.
func (u *UnionFind) Union(a, b int) bool {
	ra, rb := u.Find(a), u.Find(b)
	if ra == rb {
		return false
	}
	if u.size[ra] < u.size[rb] {
		ra, rb = rb, ra
	}
	u.parent[rb] = int32(ra)
	u.size[ra] += u.size[rb]
	return true
}

// Size is the number of elements in i's set.
func (u *UnionFind) Size(i int) int { return int(u.size[u.Find(i)]) }

// Components labels every element with its component's smallest member,
// which is also the member a deduplication keeps: the pool's order is its
// priority, so listing the preferred sources first keeps their copies.
func (u *UnionFind) Components() []int {
	n := len(u.parent)
	low := make([]int, n)
	for i := range low {
		low[i] = -1
	}
	comp := make([]int, n)
	for i := 0; i < n; i++ { // ascending: the first member seen is the smallest
		r := u.Find(i)
		if low[r] < 0 {
			low[r] = i
		}
		comp[i] = low[r]
	}
	return comp
}
