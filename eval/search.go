package eval

import (
	"context"
	"fmt"
	"math"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// Rows is a float32 matrix [Len, Dim] read in row ranges, so that the
// searches can stream sides larger than memory from disk.
type Rows interface {
	Len() int
	Dim() int
	// Read copies rows [i, j) into dst, which holds (j-i)*Dim values.
	Read(i, j int, dst []float32) error
}

// Mat is a Rows held in memory.
type Mat struct {
	Data []float32
	D    int
}

func (m Mat) Len() int { return len(m.Data) / m.D }
func (m Mat) Dim() int { return m.D }
func (m Mat) Read(i, j int, dst []float32) error {
	if i < 0 || j > m.Len() || i > j {
		return fmt.Errorf("rows [%d, %d) of %d", i, j, m.Len())
	}
	copy(dst, m.Data[i*m.D:j*m.D])
	return nil
}

// SearchOpts configure an exact neighbour search.
type SearchOpts struct {
	K int // neighbours per query, 1..nn.MaxTopK
	// MaxRows bounds the rows of each side held at once (on the GPU and
	// in CPU memory): queries and base stream through in blocks of at
	// most MaxRows rows. 0 means 65536.
	MaxRows int
	// Progress, if set, is called after each block pair with the query
	// x base rows compared so far and in all.
	Progress func(done, total int64)
}

// Block is one block of queries with its finished neighbours: query
// First+r has neighbours Index[r*K:(r+1)*K] (base rows, -1 when the base
// has fewer than K rows), most similar first.
type Block struct {
	First int
	*Neighbours
}

// Search finds the K most similar base rows (inner product: normalise both
// sides for cosine) of every query row, exactly: similarity matmuls and
// top-k on the GPU per pair of blocks, the blocks' sorted lists merged on
// the CPU. Each finished query block goes to sink in order, so a caller
// can turn neighbours into edges without holding them all.
func Search(ctx context.Context, dev *gpu.Device, query, base Rows, o SearchOpts, sink func(Block) error) error {
	d := query.Dim()
	nq, nb := query.Len(), base.Len()
	switch {
	case d <= 0 || base.Dim() != d:
		return fmt.Errorf("curate search: query dim %d, base dim %d", d, base.Dim())
	case nq == 0 || nb == 0:
		return fmt.Errorf("curate search: %d queries, %d base rows: need both", nq, nb)
	case o.K < 1 || o.K > nn.MaxTopK:
		return fmt.Errorf("curate search: k = %d, want 1..%d", o.K, nn.MaxTopK)
	}
	if o.MaxRows <= 0 {
		o.MaxRows = 65536
	}
	limit := int(dev.Limits().MaxStorageBinding / 4)
	// sub is the query rows of one similarity matmul: a multiple of 64 so
	// every sub-block's views start 256-byte aligned. A GPU takes up to
	// 1024, so that top-k has a workgroup per row for each of many cores;
	// a CPU device 64: its similarities then stay a few MB, which top-k
	// reads back soon after the matmul wrote them, and a search touches
	// less fresh memory (lavapipe, 1000 queries against 50000 x 384:
	// 2.76-2.81 s against 3.24-3.45 s with 640 rows).
	bRows := max(1, min(nb, o.MaxRows, limit/d))
	maxSub := 1024
	if dev.Info().IsCPU() {
		maxSub = 64
	}
	sub := min(maxSub, limit/bRows) / 64 * 64
	if sub < 64 {
		sub = 64
		bRows = limit / sub
	}
	qRows := max(1, min(nq, o.MaxRows, limit/d, limit/o.K))
	k := o.K
	s := &searcher{dev: dev, d: d, k: k, sub: sub}
	if err := s.alloc(qRows, bRows); err != nil {
		return err
	}
	defer s.release()
	qbuf := make([]float32, qRows*d)
	bbuf := make([]float32, bRows*d)
	var done int64
	total := int64(nq) * int64(nb)
	for q0 := 0; q0 < nq; q0 += qRows {
		q1 := min(nq, q0+qRows)
		if err := query.Read(q0, q1, qbuf[:(q1-q0)*d]); err != nil {
			return fmt.Errorf("curate search: queries: %w", err)
		}
		if err := dev.Write(s.q, padded(qbuf, (q1-q0)*d, s.q.Len())); err != nil {
			return err
		}
		out := &Neighbours{K: k, Index: make([]int, (q1-q0)*k), Similar: make([]float32, (q1-q0)*k)}
		for i := range out.Index {
			out.Index[i], out.Similar[i] = -1, float32(math.Inf(-1))
		}
		for b0 := 0; b0 < nb; b0 += bRows {
			if err := ctx.Err(); err != nil {
				return err
			}
			b1 := min(nb, b0+bRows)
			if err := base.Read(b0, b1, bbuf[:(b1-b0)*d]); err != nil {
				return fmt.Errorf("curate search: base: %w", err)
			}
			if err := s.block(out, q1-q0, bbuf[:(b1-b0)*d], b0); err != nil {
				return err
			}
			done += int64(q1-q0) * int64(b1-b0)
			if o.Progress != nil {
				o.Progress(done, total)
			}
		}
		if err := sink(Block{First: q0, Neighbours: out}); err != nil {
			return err
		}
	}
	return nil
}

// padded returns x[:n] extended with zeros to length m (a partial block
// still fills the fixed-size query tensor).
func padded(x []float32, n, m int) []float32 {
	if n == m {
		return x[:n]
	}
	p := make([]float32, m)
	copy(p, x[:n])
	return p
}

// searcher holds the GPU tensors of one search.
type searcher struct {
	dev               *gpu.Device
	d, k, sub         int
	q, b, sims, v, ix *gpu.Tensor
	bRows             int
}

func (s *searcher) alloc(qRows, bRows int) error {
	var err error
	new := func(label string, shape ...int) *gpu.Tensor {
		if err != nil {
			return nil
		}
		var t *gpu.Tensor
		t, err = s.dev.NewTensor(label, shape...)
		return t
	}
	s.bRows = bRows
	s.q = new("search queries", qRows, s.d)
	s.b = new("search base", bRows, s.d)
	s.sims = new("search similarities", s.sub*bRows)
	s.v = new("search top values", qRows, s.k)
	s.ix = new("search top indices", qRows, s.k)
	if err != nil {
		s.release()
		return fmt.Errorf("curate search: %w", err)
	}
	return nil
}

func (s *searcher) release() {
	for _, t := range []*gpu.Tensor{s.q, s.b, s.sims, s.v, s.ix} {
		if t != nil {
			t.Buf.Release()
		}
	}
}

// block compares the n queries on the GPU with base rows x (the base's
// rows from b0) and merges the result into out.
func (s *searcher) block(out *Neighbours, n int, x []float32, b0 int) error {
	d, k := s.d, s.k
	nb := len(x) / d
	bt, _ := s.b.View(0, nb, d)
	if err := s.dev.Write(bt, x); err != nil {
		return err
	}
	kk := min(k, nb)
	rec := s.dev.Record()
	for r0 := 0; r0 < n; r0 += s.sub {
		m := min(s.sub, n-r0)
		q, _ := s.q.View(r0*d, m, d)
		sims, _ := s.sims.View(0, m, nb)
		v, _ := s.v.View(r0*k, m, kk)
		ix, _ := s.ix.View(r0*k, m, kk)
		nn.MatMul(rec, sims, q, bt, nn.MatMulOpts{TransB: true})
		nn.TopK(rec, v, ix, sims, kk, b0)
	}
	if err := rec.Submit(); err != nil {
		return fmt.Errorf("curate search: %w", err)
	}
	// Sub-blocks are k apart but hold kk each; read the used span.
	span := ((n-1)/s.sub*s.sub)*k + min(s.sub, n-(n-1)/s.sub*s.sub)*kk
	vt, _ := s.v.View(0, span)
	it, _ := s.ix.View(0, span)
	vals, idxs, err := s.dev.ReadTopK(vt, it)
	if err != nil {
		return err
	}
	for r := 0; r < n; r++ {
		at := r/s.sub*s.sub*k + r%s.sub*kk
		MergeTop(out.Similar[r*k:(r+1)*k], out.Index[r*k:(r+1)*k], vals[at:at+kk], idxs[at:at+kk])
	}
	return nil
}

// MergeTop merges the sorted candidates (vals, idxs) of one query, as
// nn.TopK returns them (math.MaxUint32 past the last), into its sorted list
// (sim, idx) (index -1 where empty), keeping the len(sim) best; on equal
// similarity the earlier list (lower base rows) wins.
func MergeTop(sim []float32, idx []int, vals []float32, idxs []uint32) {
	k := len(sim)
	var ms [nn.MaxTopK]float32
	var mi [nn.MaxTopK]int
	a, b := 0, 0
	for j := 0; j < k; j++ {
		if b < len(vals) && idxs[b] != math.MaxUint32 && (a >= k || idx[a] < 0 || vals[b] > sim[a]) {
			ms[j], mi[j] = vals[b], int(idxs[b])
			b++
		} else {
			ms[j], mi[j] = sim[a], idx[a]
			a++
		}
	}
	copy(sim, ms[:k])
	copy(idx, mi[:k])
}

// SearchAll is Search collecting every block into one Neighbours.
func SearchAll(ctx context.Context, dev *gpu.Device, query, base Rows, o SearchOpts) (*Neighbours, error) {
	nq := query.Len()
	all := &Neighbours{K: o.K, Index: make([]int, nq*o.K), Similar: make([]float32, nq*o.K)}
	err := Search(ctx, dev, query, base, o, func(b Block) error {
		copy(all.Index[b.First*o.K:], b.Index)
		copy(all.Similar[b.First*o.K:], b.Similar)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return all, nil
}
