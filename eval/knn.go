// Package eval measures frozen features: weighted k-NN classification and a
// linear probe, as DINOv2 reports them.
package eval

import (
	"context"
	"fmt"
	"math"

	"github.com/webdino/webdino/gpu"
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
	if d <= 0 {
		return 0, fmt.Errorf("knn: feature dimension %d", d)
	}
	if len(train)/d != len(trainLabels) || len(test)/d != len(testLabels) {
		return 0, fmt.Errorf("knn: %d train rows for %d labels, %d test rows for %d labels", len(train)/d, len(trainLabels), len(test)/d, len(testLabels))
	}
	tr := append([]float32(nil), train...)
	te := append([]float32(nil), test...)
	Normalize(tr, d)
	Normalize(te, d)
	nb, err := SearchAll(ctx, dev, Mat{Data: te, D: d}, Mat{Data: tr, D: d}, SearchOpts{K: o.K})
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
