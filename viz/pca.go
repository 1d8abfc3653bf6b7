// Package viz draws pictures of features: the PCA colouring of patch
// features of the DINOv2 paper's Figure 1 and per-head attention maps. It is
// pure Go (no GPU, no files) so that the browser viewer can reuse it.
package viz

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// PCA is a principal component basis of a set of rows.
type PCA struct {
	Mean []float64 // [d]
	// Components are unit vectors [k][d] by decreasing variance. Each is
	// signed so that its entry of largest magnitude is positive, which makes
	// the basis deterministic (eigenvectors are defined up to sign).
	Components [][]float64
	// Variance holds the eigenvalues of the covariance (1/n normalisation),
	// the variance of the rows along each component.
	Variance []float64
}

// FitPCA fits the first k principal components of the rows of x [n, d].
// When n < d it diagonalises the n x n Gram matrix instead of the d x d
// covariance (same non-zero spectrum, far cheaper for one image's 256
// patches of a 1024-wide model). Components beyond the rank of the centred
// data are zero vectors with zero variance.
func FitPCA(x []float32, n, d, k int) (*PCA, error) {
	if n <= 0 || d <= 0 || len(x) != n*d {
		return nil, fmt.Errorf("pca: %d values for %d rows of %d", len(x), n, d)
	}
	if k <= 0 || k > d {
		return nil, fmt.Errorf("pca: %d components of %d-dimensional rows", k, d)
	}
	p := &PCA{Mean: make([]float64, d)}
	for i := 0; i < n; i++ {
		for j, v := range x[i*d : (i+1)*d] {
			p.Mean[j] += float64(v)
		}
	}
	for j := range p.Mean {
		p.Mean[j] /= float64(n)
	}
	xc := mat.NewDense(n, d, nil)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			xc.Set(i, j, float64(x[i*d+j])-p.Mean[j])
		}
	}
	gram := n < d
	var m mat.Matrix = xc.T() // covariance = xc^T xc / n
	if gram {
		m = xc // Gram = xc xc^T / n
	}
	r, _ := m.Dims()
	sym := mat.NewSymDense(r, nil)
	sym.SymOuterK(1/float64(n), m)
	var es mat.EigenSym
	if !es.Factorize(sym, true) {
		return nil, fmt.Errorf("pca: eigen decomposition of a %dx%d matrix did not converge", r, r)
	}
	vals := es.Values(nil) // ascending
	var vecs mat.Dense
	es.VectorsTo(&vecs)
	// Eigenvalues below this fraction of the largest are rounding noise.
	floor := 1e-12 * math.Max(vals[r-1], 0)
	for c := 0; c < k; c++ {
		comp := make([]float64, d)
		lambda := 0.0
		if i := r - 1 - c; i >= 0 && vals[i] > floor {
			lambda = vals[i]
			if gram {
				// v = xc^T u / sqrt(n lambda) is the unit covariance eigenvector.
				s := 1 / math.Sqrt(float64(n)*lambda)
				for row := 0; row < n; row++ {
					u := vecs.At(row, i) * s
					for j := 0; j < d; j++ {
						comp[j] += u * xc.At(row, j)
					}
				}
			} else {
				for j := 0; j < d; j++ {
					comp[j] = vecs.At(j, i)
				}
			}
			fixSign(comp)
		}
		p.Components = append(p.Components, comp)
		p.Variance = append(p.Variance, lambda)
	}
	return p, nil
}

// fixSign flips v so that its entry of largest magnitude is positive.
func fixSign(v []float64) {
	big := 0.0
	for _, e := range v {
		if math.Abs(e) > math.Abs(big) {
			big = e
		}
	}
	if big < 0 {
		for i := range v {
			v[i] = -v[i]
		}
	}
}

// Project returns the coordinates [n, k] of the rows of x [n, d] along the
// components, after subtracting the mean.
func (p *PCA) Project(x []float32) []float64 {
	d, k := len(p.Mean), len(p.Components)
	n := len(x) / d
	out := make([]float64, n*k)
	row := make([]float64, d)
	for i := 0; i < n; i++ {
		for j := range row {
			row[j] = float64(x[i*d+j]) - p.Mean[j]
		}
		for c, comp := range p.Components {
			s := 0.0
			for j, v := range row {
				s += v * comp[j]
			}
			out[i*k+c] = s
		}
	}
	return out
}
