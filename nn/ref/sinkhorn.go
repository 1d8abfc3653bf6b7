package ref

import "math"

// SinkhornKnopp returns DINOv2's Sinkhorn-Knopp teacher probabilities [B, K]
// for logits t [B, K], literally as the recipe: Q = exp((t - max t) / temp)
// as [K, B], Q /= sum; iters times {Q[k, :] /= its sum, /= K; Q[:, b] /= its
// sum, /= B}; Q *= B; transposed back.
func SinkhornKnopp(t []float64, B, K int, temp float64, iters int) []float64 {
	m := math.Inf(-1)
	for _, v := range t {
		m = math.Max(m, v)
	}
	Q := make([]float64, K*B)
	var sum float64
	for b := 0; b < B; b++ {
		for k := 0; k < K; k++ {
			Q[k*B+b] = math.Exp((t[b*K+k] - m) / temp)
			sum += Q[k*B+b]
		}
	}
	for i := range Q {
		Q[i] /= sum
	}
	for it := 0; it < iters; it++ {
		for k := 0; k < K; k++ {
			var s float64
			for b := 0; b < B; b++ {
				s += Q[k*B+b]
			}
			for b := 0; b < B; b++ {
				Q[k*B+b] /= s * float64(K)
			}
		}
		for b := 0; b < B; b++ {
			var s float64
			for k := 0; k < K; k++ {
				s += Q[k*B+b]
			}
			for k := 0; k < K; k++ {
				Q[k*B+b] /= s * float64(B)
			}
		}
	}
	q := make([]float64, B*K)
	for b := 0; b < B; b++ {
		for k := 0; k < K; k++ {
			q[b*K+k] = Q[k*B+b] * float64(B)
		}
	}
	return q
}
