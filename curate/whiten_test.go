//go:build !js

package curate

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// correlated draws n rows of D = 6 with a mean and principal directions
// of standard deviations 10 down to 0.3 along random orthogonal axes
// (float32 whitening of far wider ranges loses digits in the weakest).
func correlated(n int) []float32 {
	const D = 6
	rng := rand.New(rand.NewPCG(5, 6))
	var mix [D][D]float64 // rows: orthonormal axes (Gram-Schmidt), scaled
	for i := range D {
		for j := range D {
			mix[i][j] = rng.NormFloat64()
		}
		for k := range i {
			var dot float64
			for j := range D {
				dot += mix[i][j] * mix[k][j]
			}
			for j := range D {
				mix[i][j] -= dot * mix[k][j]
			}
		}
		var norm float64
		for j := range D {
			norm += mix[i][j] * mix[i][j]
		}
		for j := range D {
			mix[i][j] /= math.Sqrt(norm)
		}
	}
	for i := range D {
		for j := range D {
			mix[i][j] *= 10 / math.Pow(2, float64(i))
		}
	}
	x := make([]float32, n*D)
	for r := range n {
		var z [D]float64
		for i := range z {
			z[i] = rng.NormFloat64()
		}
		for j := range D {
			v := 2 + float64(j)
			for i := range D {
				v += z[i] * mix[i][j]
			}
			x[r*D+j] = float32(v)
		}
	}
	return x
}

// covariance64 is the float64 sample mean and covariance of rows.
func covariance64(x []float32, D int) ([]float64, [][]float64) {
	n := len(x) / D
	mean := make([]float64, D)
	for i, v := range x {
		mean[i%D] += float64(v) / float64(n)
	}
	cov := make([][]float64, D)
	for a := range D {
		cov[a] = make([]float64, D)
		for b := range D {
			for r := range n {
				cov[a][b] += (float64(x[r*D+a]) - mean[a]) * (float64(x[r*D+b]) - mean[b])
			}
			cov[a][b] /= float64(n - 1)
		}
	}
	return mean, cov
}

// TestWhitening checks that the fitted map turns the covariance into the
// identity (up to the ridge), that a sample takes evenly spaced rows, and
// that Apply and WriteWhitened agree with a float64 reference.
func TestWhitening(t *testing.T) {
	const D, n = 6, 3000
	x := correlated(n)
	mean, cov := covariance64(x, D)
	w, err := FitWhitening(Mat{Data: x, D: D}, 0, 1e-9)
	require.NoError(t, err)
	for j := range D {
		require.InDelta(t, mean[j], w.Mean[j], 1e-4)
	}
	// P cov P^T = I.
	for a := range D {
		for b := range D {
			var s float64
			for i := range D {
				for j := range D {
					s += float64(w.P[a*D+i]) * cov[i][j] * float64(w.P[b*D+j])
				}
			}
			want := 0.0
			if a == b {
				want = 1
			}
			require.InDelta(t, want, s, 1e-4, "(%d, %d)", a, b)
		}
	}

	// A ridge of 1 times the largest eigenvalue halves that direction's
	// variance: the first row of P is the strongest direction.
	shrunk, err := FitWhitening(Mat{Data: x, D: D}, 0, 1)
	require.NoError(t, err)
	var top float64
	for i := range D {
		for j := range D {
			top += float64(shrunk.P[i]) * cov[i][j] * float64(shrunk.P[j])
		}
	}
	require.InDelta(t, 0.5, top, 1e-4)

	// Every third row.
	sampled, err := FitWhitening(Mat{Data: x, D: D}, n/3, 1e-3)
	require.NoError(t, err)
	var every3 []float32
	for r := 0; r < n; r += 3 {
		every3 = append(every3, x[r*D:(r+1)*D]...)
	}
	m3, _ := covariance64(every3, D)
	for j := range D {
		require.InDelta(t, m3[j], sampled.Mean[j], 1e-4)
	}

	// Apply against float64, then the shards (700 rows each) against Apply.
	got := append([]float32(nil), x...)
	w.Apply(got)
	for r := 0; r < n; r += 97 {
		y := make([]float64, D)
		var ss float64
		for a := range D {
			for j := range D {
				y[a] += float64(w.P[a*D+j]) * (float64(x[r*D+j]) - float64(w.Mean[j]))
			}
			ss += y[a] * y[a]
		}
		for a := range D {
			require.InDelta(t, y[a]/math.Sqrt(ss), got[r*D+a], 1e-5, "row %d", r)
		}
	}
	sh, err := WriteWhitened(context.Background(), Mat{Data: x, D: D}, w, filepath.Join(t.TempDir(), "w"), 700)
	require.NoError(t, err)
	defer sh.Close()
	require.Len(t, sh.Paths(), 5)
	all := make([]float32, n*D)
	require.NoError(t, sh.Read(0, n, all))
	require.Equal(t, got, all)

	_, err = FitWhitening(Mat{Data: x, D: D}, 0, 0)
	require.ErrorContains(t, err, "shrink 0")
	_, err = FitWhitening(Mat{Data: x[:D], D: D}, 0, 1e-3)
	require.ErrorContains(t, err, "1 rows, want at least 2")
	_, err = WriteWhitened(context.Background(), Mat{Data: x, D: 3}, w, filepath.Join(t.TempDir(), "w"), 700)
	require.ErrorContains(t, err, "whitening of dimension 6 applied to rows of dimension 3")
}
