// Package eval measures frozen features: weighted k-NN classification and a
// linear probe, as DINOv2 reports them.
package eval

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// KNNOpts are DINOv2's k-NN settings: cosine similarity on L2-normalised
// features, the k nearest training samples vote with weight exp(sim / T).
type KNNOpts struct {
	K       int     // 20
	T       float64 // 0.07
	Classes int
}

// DefaultKNN is the paper's setting.
func DefaultKNN(classes int) KNNOpts { return KNNOpts{K: 20, T: 0.07, Classes: classes} }

// Neighbours holds, per query, the indices and cosine similarities of its
// nearest training samples, most similar first.
type Neighbours struct {
	K       int
	Index   []int     // [queries*K]
	Similar []float32 // [queries*K]
}

// Normalize L2-normalises each row of x [n, d] in place (zero rows stay zero).
func Normalize(x []float32, d int) {
	for i := 0; i+d <= len(x); i += d {
		var s float64
		for _, v := range x[i : i+d] {
			s += float64(v) * float64(v)
		}
		if s == 0 {
			continue
		}
		inv := float32(1 / math.Sqrt(s))
		for j := i; j < i+d; j++ {
			x[j] *= inv
		}
	}
}

// Search finds the k most similar rows of base [nb, d] for each row of query
// [nq, d] by inner product on the GPU: tiled similarity matmuls and top-k,
// with both sides split into shards so no binding exceeds the device limit;
// shard results merge on the CPU. Normalise both sides first for cosine.
func Search(ctx context.Context, dev *gpu.Device, query, base []float32, d, k int) (*Neighbours, error) {
	return search(ctx, dev, query, base, d, k, 65536)
}

// search is Search with a cap on the base rows of one shard.
func search(ctx context.Context, dev *gpu.Device, query, base []float32, d, k, maxBaseRows int) (*Neighbours, error) {
	if d <= 0 || len(query)%d != 0 || len(base)%d != 0 || len(query) == 0 || len(base) == 0 {
		return nil, fmt.Errorf("knn search: %d query and %d base values are not non-empty multiples of the dimension %d", len(query), len(base), d)
	}
	if k < 1 || k > nn.MaxTopK {
		return nil, fmt.Errorf("knn search: k = %d, want 1..%d", k, nn.MaxTopK)
	}
	nq, nb := len(query)/d, len(base)/d
	limit := int(dev.Limits().MaxStorageBinding / 4)
	baseRows := min(nb, limit/d, maxBaseRows)
	qRows := max(1, min(nq, limit/baseRows, limit/d, 1024))
	out := &Neighbours{K: k, Index: make([]int, nq*k), Similar: make([]float32, nq*k)}
	for i := range out.Similar {
		out.Similar[i] = float32(math.Inf(-1))
		out.Index[i] = -1
	}
	for b0 := 0; b0 < nb; b0 += baseRows {
		b1 := min(nb, b0+baseRows)
		bt, err := dev.Upload("knn base", base[b0*d:b1*d], b1-b0, d)
		if err != nil {
			return nil, fmt.Errorf("knn search: %w", err)
		}
		err = searchShard(ctx, dev, query, bt, d, k, qRows, b0, out)
		bt.Buf.Release()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func searchShard(ctx context.Context, dev *gpu.Device, query []float32, bt *gpu.Tensor, d, k, qRows, b0 int, out *Neighbours) error {
	nq, nb := len(query)/d, bt.Dim(0)
	kk := min(k, nb)
	sims, err := dev.NewTensor("knn similarities", qRows, nb)
	if err != nil {
		return fmt.Errorf("knn search: %w", err)
	}
	defer sims.Buf.Release()
	vals, err := dev.NewTensor("knn top values", qRows, kk)
	if err != nil {
		return fmt.Errorf("knn search: %w", err)
	}
	defer vals.Buf.Release()
	idxs, err := dev.NewTensor("knn top indices", qRows, kk)
	if err != nil {
		return fmt.Errorf("knn search: %w", err)
	}
	defer idxs.Buf.Release()
	qt, err := dev.NewTensor("knn queries", qRows, d)
	if err != nil {
		return fmt.Errorf("knn search: %w", err)
	}
	defer qt.Buf.Release()
	rec := dev.Record()
	for q0 := 0; q0 < nq; q0 += qRows {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(qRows, nq-q0)
		q, s, v, ix := qt, sims, vals, idxs
		if n < qRows {
			q, _ = qt.View(0, n, d)
			s, _ = sims.View(0, n, nb)
			v, _ = vals.View(0, n, kk)
			ix, _ = idxs.View(0, n, kk)
		}
		if err := dev.Write(q, query[q0*d:(q0+n)*d]); err != nil {
			return err
		}
		nn.MatMul(rec, s, q, bt, nn.MatMulOpts{TransB: true})
		nn.TopK(rec, v, ix, s, kk, b0)
		if err := rec.Submit(); err != nil {
			return fmt.Errorf("knn search: %w", err)
		}
		gv, gi, err := dev.ReadTopK(v, ix)
		if err != nil {
			return err
		}
		for r := 0; r < n; r++ {
			merge(out, q0+r, gv[r*kk:(r+1)*kk], gi[r*kk:(r+1)*kk])
		}
	}
	return nil
}

// merge folds a shard's sorted candidates into query r's running top k.
func merge(out *Neighbours, r int, vals []float32, idxs []uint32) {
	k := out.K
	sim := append([]float32(nil), out.Similar[r*k:(r+1)*k]...)
	idx := append([]int(nil), out.Index[r*k:(r+1)*k]...)
	for j := range vals {
		sim = append(sim, vals[j])
		idx = append(idx, int(idxs[j]))
	}
	order := make([]int, len(sim))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return sim[order[a]] > sim[order[b]] })
	for j := 0; j < k; j++ {
		out.Similar[r*k+j] = sim[order[j]]
		out.Index[r*k+j] = idx[order[j]]
	}
}

// Classify votes: each neighbour adds exp(sim/T) to its class; the class
// with the largest sum wins (ties: lowest class index).
func (o KNNOpts) Classify(nb *Neighbours, trainLabels []int) []int {
	nq := len(nb.Index) / nb.K
	preds := make([]int, nq)
	scores := make([]float64, o.Classes)
	for q := 0; q < nq; q++ {
		clear(scores)
		for j := 0; j < min(o.K, nb.K); j++ {
			i := nb.Index[q*nb.K+j]
			if i < 0 {
				continue
			}
			scores[trainLabels[i]] += math.Exp(float64(nb.Similar[q*nb.K+j]) / o.T)
		}
		best := 0
		for c, s := range scores {
			if s > scores[best] {
				best = c
			}
		}
		preds[q] = best
	}
	return preds
}

// KNNAccuracy normalises both feature sets, searches and votes, and returns
// the top-1 accuracy on the test labels.
func KNNAccuracy(ctx context.Context, dev *gpu.Device, train []float32, trainLabels []int, test []float32, testLabels []int, d int, o KNNOpts) (float64, error) {
	if len(train)/d != len(trainLabels) || len(test)/d != len(testLabels) {
		return 0, fmt.Errorf("knn: %d train rows for %d labels, %d test rows for %d labels", len(train)/d, len(trainLabels), len(test)/d, len(testLabels))
	}
	tr := append([]float32(nil), train...)
	te := append([]float32(nil), test...)
	Normalize(tr, d)
	Normalize(te, d)
	nb, err := Search(ctx, dev, te, tr, d, o.K)
	if err != nil {
		return 0, err
	}
	preds := o.Classify(nb, trainLabels)
	correct := 0
	for i, p := range preds {
		if p == testLabels[i] {
			correct++
		}
	}
	return float64(correct) / float64(len(preds)), nil
}
