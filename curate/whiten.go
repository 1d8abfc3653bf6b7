package curate

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/webdino/webdino/npy"

	"gonum.org/v1/gonum/mat"
)

// DefaultWhitenShrink is the ridge added to every eigenvalue of the
// covariance before whitening, as a fraction of the largest: without it
// the weakest directions, mostly noise, would be scaled up the most.
const DefaultWhitenShrink = 1e-3

// Whitening is a PCA whitening of embeddings, x -> P (x - Mean), after
// which rows are L2-normalised again. Self-supervised embeddings share a
// few strong directions (cosine similarities of unrelated images of one
// domain sit near 0.7 to 0.9 in a small DINO model); whitening gives every
// direction unit variance so that a copy stands out from images that are
// merely alike, as copy-detection descriptors do (SSCD).
type Whitening struct {
	Mean []float32 // [D]
	P    []float32 // [D, D] row-major: eigenvectors scaled by 1/sqrt(eigenvalue + ridge)
	D    int
}

// FitWhitening estimates the whitening from up to sample rows of x, evenly
// spaced (0: all rows), with the ridge shrink times the largest eigenvalue.
func FitWhitening(x Rows, sample int, shrink float64) (*Whitening, error) {
	n, D := x.Len(), x.Dim()
	if sample <= 0 || sample > n {
		sample = n
	}
	if sample < 2 {
		return nil, fmt.Errorf("whitening: %d rows, want at least 2", sample)
	}
	if shrink <= 0 {
		return nil, fmt.Errorf("whitening: shrink %g, want > 0", shrink)
	}
	// Two passes over blocks of rows: the mean, then the centred scatter
	// matrix (one rank-k update per block).
	const block = 1024
	buf := make([]float32, block*D)
	rows := func(yield func([]float32) error) error {
		for s := 0; s < sample; s += block {
			m := min(block, sample-s)
			for r := range m {
				i := int(int64(s+r) * int64(n) / int64(sample))
				if err := x.Read(i, i+1, buf[r*D:(r+1)*D]); err != nil {
					return fmt.Errorf("whitening: row %d: %w", i, err)
				}
			}
			if err := yield(buf[:m*D]); err != nil {
				return err
			}
		}
		return nil
	}
	mean := make([]float64, D)
	err := rows(func(b []float32) error {
		for i, v := range b {
			mean[i%D] += float64(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for j := range mean {
		mean[j] /= float64(sample)
	}
	scatter := mat.NewSymDense(D, nil)
	var part mat.SymDense
	centred := make([]float64, block*D)
	err = rows(func(b []float32) error {
		for i, v := range b {
			centred[i] = float64(v) - mean[i%D]
		}
		part.SymOuterK(1, mat.NewDense(len(b)/D, D, centred[:len(b)]).T())
		scatter.AddSym(scatter, &part)
		return nil
	})
	if err != nil {
		return nil, err
	}
	scatter.ScaleSym(1/float64(sample-1), scatter)
	var eig mat.EigenSym
	if !eig.Factorize(scatter, true) {
		return nil, fmt.Errorf("whitening: the eigendecomposition of the %dx%d covariance did not converge", D, D)
	}
	vals := eig.Values(nil) // ascending
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	ridge := shrink * max(vals[D-1], 0)
	if ridge == 0 {
		return nil, fmt.Errorf("whitening: the %d sampled rows are all equal", sample)
	}
	w := &Whitening{Mean: make([]float32, D), P: make([]float32, D*D), D: D}
	for j := range D {
		w.Mean[j] = float32(mean[j])
	}
	for r := range D {
		c := D - 1 - r // strongest direction first
		s := 1 / math.Sqrt(max(vals[c], 0)+ridge)
		for j := range D {
			w.P[r*D+j] = float32(vecs.At(j, c) * s)
		}
	}
	return w, nil
}

// Apply whitens the rows of x in place and L2-normalises them.
func (w *Whitening) Apply(x []float32) {
	D := w.D
	c := make([]float32, D)
	for i := 0; i+D <= len(x); i += D {
		for j := range D {
			c[j] = x[i+j] - w.Mean[j]
		}
		var ss float64
		for r := range D {
			var s float32
			for j, p := range w.P[r*D : (r+1)*D] {
				s += p * c[j]
			}
			x[i+r] = s
			ss += float64(s) * float64(s)
		}
		inv := float32(1 / math.Sqrt(max(ss, 1e-30)))
		for r := range D {
			x[i+r] *= inv
		}
	}
}

// WriteWhitened whitens the rows of src into .npy shards of at most
// shardRows rows named prefix-NNNNN.npy, on every CPU, and opens them: the
// searches then read each whitened row many times at no further cost.
func WriteWhitened(ctx context.Context, src Rows, w *Whitening, prefix string, shardRows int) (*Shards, error) {
	if src.Dim() != w.D {
		return nil, fmt.Errorf("whitening of dimension %d applied to rows of dimension %d", w.D, src.Dim())
	}
	n, D := src.Len(), w.D
	var paths []string
	buf := make([]float32, min(shardRows, n)*D)
	for s := 0; s < n; s += shardRows {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m := min(shardRows, n-s)
		x := buf[:m*D]
		if err := src.Read(s, s+m, x); err != nil {
			return nil, err
		}
		workers := runtime.GOMAXPROCS(0)
		var wg sync.WaitGroup
		for g := range workers {
			wg.Go(func() { w.Apply(x[g*m/workers*D : (g+1)*m/workers*D]) })
		}
		wg.Wait()
		path := fmt.Sprintf("%s-%05d.npy", prefix, len(paths))
		if err := npy.WriteFloat32File(path, []int{m, D}, x); err != nil {
			return nil, err
		}
		paths = append(paths, path)
	}
	return OpenShards(paths)
}
