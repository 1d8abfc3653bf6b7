package curate

import (
	"context"
	"fmt"
	"math"

	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
)

// DedupOpts are the self-deduplication settings of the paper.
type DedupOpts struct {
	K         int     // neighbours searched per image (64)
	Threshold float32 // cosine similarity above which two images are copies (0.6)
	MaxRows   int     // search block rows (eval.SearchOpts.MaxRows)
	Progress  func(done, total int64)
	// Index, when set, finds the neighbours through an IVF index built on
	// the pool (streamed; the lists held on the GPU) instead of the exact
	// search, probing NProbe lists per image; Lists 0 means sqrt(pool).
	// With Index.Int8, similarities that may exceed Threshold are
	// recomputed exactly from the pool's rows.
	Index  *IVFOpts
	NProbe int
}

// DefaultDedup is the paper's setting: k = 64, similarity > 0.6.
var DefaultDedup = DedupOpts{K: 64, Threshold: 0.6}

// Dedup is the result of a self-deduplication of n images.
type Dedup struct {
	// Component labels every image with the smallest index in its
	// component of the copy graph; that image is the one kept.
	Component []int
	// Nearest is each image's most similar other image (-1 if none) and
	// NearestSim the similarity: the histogram of the report, and the
	// reason an image was dropped.
	Nearest    []int
	NearestSim []float32
	Edges      int // pairs above the threshold (each counted once per direction found)
}

// Keep reports whether image i survives: it represents its component.
func (d *Dedup) Keep(i int) bool { return d.Component[i] == i }

// Kept counts the survivors.
func (d *Dedup) Kept() int {
	n := 0
	for i := range d.Component {
		if d.Keep(i) {
			n++
		}
	}
	return n
}

// Groups returns the components with more than one member, each sorted
// ascending, ordered by their kept image.
func (d *Dedup) Groups() [][]int {
	at := map[int]int{}
	var gs [][]int
	for i, c := range d.Component {
		g, ok := at[c]
		if !ok {
			g = len(gs)
			at[c] = g
			gs = append(gs, nil)
		}
		gs[g] = append(gs[g], i)
	}
	out := gs[:0]
	for _, g := range gs {
		if len(g) > 1 {
			out = append(out, g)
		}
	}
	return out
}

// SelfDedup links every image of pool to those of its K nearest
// neighbours (itself excluded; K is capped at nn.MaxTopK-1 = 63 since the
// search also returns the image itself) more similar than the threshold and keeps
// one image per connected component: the one with the lowest index. Rows
// should be L2-normalised (cosine similarity).
func SelfDedup(ctx context.Context, dev *gpu.Device, pool Rows, o DedupOpts) (*Dedup, error) {
	l := newLinker(pool.Len(), o.Threshold)
	if err := selfSearch(ctx, dev, pool, o, func(b eval.Block) error { l.add(b); return nil }); err != nil {
		return nil, err
	}
	return l.dedup(), nil
}

// SelfNeighbours is SelfDedup's search alone: the neighbour blocks of every
// pool row (the row itself among them), held in memory, so that DedupBlocks
// can deduplicate a small pool at many thresholds for one search (curate
// calibrate).
func SelfNeighbours(ctx context.Context, dev *gpu.Device, pool Rows, o DedupOpts) ([]eval.Block, error) {
	var blocks []eval.Block
	err := selfSearch(ctx, dev, pool, o, func(b eval.Block) error { blocks = append(blocks, b); return nil })
	return blocks, err
}

// DedupBlocks is SelfDedup of n rows from their SelfNeighbours blocks at
// threshold.
func DedupBlocks(n int, blocks []eval.Block, threshold float32) *Dedup {
	l := newLinker(n, threshold)
	for _, b := range blocks {
		l.add(b)
	}
	return l.dedup()
}

// selfSearch streams the neighbour blocks of self-deduplication to sink:
// the K nearest other rows of every row and the row itself.
func selfSearch(ctx context.Context, dev *gpu.Device, pool Rows, o DedupOpts, sink func(eval.Block) error) error {
	if o.K < 1 {
		return fmt.Errorf("self-dedup: k = %d, want >= 1", o.K)
	}
	// One more neighbour than asked: the image itself is among them.
	k := min(o.K+1, 64, pool.Len())
	if err := streamNeighbours(ctx, dev, pool, k, o, sink); err != nil {
		return fmt.Errorf("self-dedup: %w", err)
	}
	return nil
}

// linker builds a Dedup from neighbour blocks: every row is joined to its
// neighbours above the threshold.
type linker struct {
	d         *Dedup
	uf        *UnionFind
	threshold float32
}

func newLinker(n int, threshold float32) *linker {
	return &linker{d: &Dedup{Nearest: make([]int, n), NearestSim: make([]float32, n)}, uf: NewUnionFind(n), threshold: threshold}
}

func (l *linker) add(b eval.Block) {
	k := b.K
	for r := 0; r*k < len(b.Index); r++ {
		i := b.First + r
		l.d.Nearest[i], l.d.NearestSim[i] = -1, float32(math.Inf(-1))
		for j := r * k; j < (r+1)*k; j++ {
			nb, s := b.Index[j], b.Similar[j]
			if nb < 0 || nb == i {
				continue
			}
			if l.d.Nearest[i] < 0 {
				l.d.Nearest[i], l.d.NearestSim[i] = nb, s
			}
			if s > l.threshold {
				l.uf.Union(i, nb)
				l.d.Edges++
			}
		}
	}
}

func (l *linker) dedup() *Dedup {
	l.d.Component = l.uf.Components()
	return l.d
}

// streamNeighbours streams the k nearest pool rows of every pool row to sink in
// blocks: exactly (Search) or, with o.Index, through an IVF index.
func streamNeighbours(ctx context.Context, dev *gpu.Device, pool Rows, k int, o DedupOpts, sink func(eval.Block) error) error {
	if o.Index == nil {
		return eval.Search(ctx, dev, pool, pool, eval.SearchOpts{K: k, MaxRows: o.MaxRows, Progress: o.Progress}, sink)
	}
	n, d := pool.Len(), pool.Dim()
	io := *o.Index
	if io.Lists == 0 {
		io.Lists = max(1, int(math.Sqrt(float64(n))))
	}
	io.Lists = min(io.Lists, n)
	ix, err := BuildIVF(ctx, dev, pool, io)
	if err != nil {
		return err
	}
	defer ix.Release()
	step := o.MaxRows
	if step <= 0 {
		step = 65536
	}
	q := make([]float32, min(step, n)*d)
	row := make([]float32, d)
	for i := 0; i < n; i += step {
		j := min(i+step, n)
		if err := pool.Read(i, j, q[:(j-i)*d]); err != nil {
			return err
		}
		nb, err := ix.Search(ctx, q[:(j-i)*d], k, max(1, o.NProbe))
		if err != nil {
			return err
		}
		if io.Int8 {
			if err := rescore(pool, q, d, nb, o.Threshold, ix.ScoreBound, row); err != nil {
				return err
			}
		}
		if err := sink(eval.Block{First: i, Neighbours: nb}); err != nil {
			return err
		}
		if o.Progress != nil {
			o.Progress(int64(j)*int64(n), int64(n)*int64(n))
		}
	}
	return nil
}

// rescore makes exact the similarities of 8-bit lists that may exceed the
// threshold (those within bound(query) of it, or above), reading those
// neighbours' rows from pool, and re-sorts each query's neighbours: every
// edge of the copy graph is then decided on exact similarities. Rare
// above a copy threshold, so the reads stay few.
func rescore(pool Rows, query []float32, d int, nb *eval.Neighbours, threshold float32, bound func([]float32) float32, row []float32) error {
	k := nb.K
	for q := 0; q*k < len(nb.Index); q++ {
		qv := query[q*d : (q+1)*d]
		low := threshold - bound(qv)
		changed := false
		for j := q * k; j < (q+1)*k; j++ {
			if nb.Index[j] < 0 || nb.Similar[j] <= low {
				continue
			}
			if err := pool.Read(nb.Index[j], nb.Index[j]+1, row); err != nil {
				return err
			}
			var s float64
			for c, v := range row {
				s += float64(v) * float64(qv[c])
			}
			nb.Similar[j], changed = float32(s), true
		}
		if changed {
			sortNeighbours(nb.Index[q*k:(q+1)*k], nb.Similar[q*k:(q+1)*k])
		}
	}
	return nil
}

// sortNeighbours orders one query's neighbours by similarity, descending
// (insertion sort: k is at most 64 and the list nearly sorted).
func sortNeighbours(idx []int, sim []float32) {
	for a := 1; a < len(idx); a++ {
		for b := a; b > 0 && sim[b] > sim[b-1]; b-- {
			idx[b], idx[b-1] = idx[b-1], idx[b]
			sim[b], sim[b-1] = sim[b-1], sim[b]
		}
	}
}

// Relative is the result of a relative deduplication: for every pool
// image, its most similar evaluation image and that similarity.
type Relative struct {
	Nearest    []int
	NearestSim []float32
	Threshold  float32
}

// Drop reports whether pool image i is too close to an evaluation image.
func (r *Relative) Drop(i int) bool { return r.NearestSim[i] > r.Threshold }

// DefaultRelativeThreshold is the paper's: pool images more similar than
// 0.45 to any evaluation image are removed.
const DefaultRelativeThreshold = 0.45

// RelativeDedup finds each pool image's most similar image among the
// evaluation sets (one exact search, k = 1) so that every pool image above
// threshold can be removed.
func RelativeDedup(ctx context.Context, dev *gpu.Device, pool, evals Rows, threshold float32, maxRows int) (*Relative, error) {
	r := &Relative{Nearest: make([]int, pool.Len()), NearestSim: make([]float32, pool.Len()), Threshold: threshold}
	err := eval.Search(ctx, dev, pool, evals, eval.SearchOpts{K: 1, MaxRows: maxRows}, func(b eval.Block) error {
		copy(r.Nearest[b.First:], b.Index)
		copy(r.NearestSim[b.First:], b.Similar)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("relative dedup: %w", err)
	}
	return r, nil
}

// DropComponents extends drop to whole components: when any member of a
// copy component is dropped, all are (a copy of an evaluation image's
// near-duplicate is as much a leak as the near-duplicate).
func DropComponents(component []int, drop func(i int) bool) []bool {
	bad := map[int]bool{}
	for i, c := range component {
		if drop(i) {
			bad[c] = true
		}
	}
	out := make([]bool, len(component))
	for i, c := range component {
		out[i] = bad[c]
	}
	return out
}
