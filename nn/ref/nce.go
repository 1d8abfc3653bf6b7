package ref

import "math"

// InfoNCE returns the mean over the 2B rows of x [2B, D] of
// -log(exp(c(i, p)/tau) / sum_{j != i} exp(c(i, j)/tau)), c the cosine and
// p = (i + B) mod 2B row i's other view.
func InfoNCE(x []float64, B, D int, tau float64) float64 {
	y := unit(x, 2*B, D)
	var s float64
	for i := 0; i < 2*B; i++ {
		lse := math.Inf(-1)
		for j := 0; j < 2*B; j++ {
			if j != i {
				lse = logAddExp(lse, dotRows(y, i, j, D)/tau)
			}
		}
		s += lse - dotRows(y, i, (i+B)%(2*B), D)/tau
	}
	return s / float64(2*B)
}

// InfoNCEBackward returns dLoss times the gradient of InfoNCE with respect
// to x.
func InfoNCEBackward(x []float64, B, D int, tau, dLoss float64) []float64 {
	R := 2 * B
	y := unit(x, R, D)
	// dL/dc(i, j) over both orders of each pair, then through the cosines.
	dc := make([]float64, R*R)
	for i := 0; i < R; i++ {
		lse := math.Inf(-1)
		for j := 0; j < R; j++ {
			if j != i {
				lse = logAddExp(lse, dotRows(y, i, j, D)/tau)
			}
		}
		for j := 0; j < R; j++ {
			if j == i {
				continue
			}
			g := math.Exp(dotRows(y, i, j, D)/tau - lse)
			if j == (i+B)%R {
				g--
			}
			g *= dLoss / float64(R) / tau
			dc[i*R+j] += g
			dc[j*R+i] += g
		}
	}
	dx := make([]float64, R*D)
	for i := 0; i < R; i++ {
		n := 0.0
		for d := 0; d < D; d++ {
			n += x[i*D+d] * x[i*D+d]
		}
		n = math.Sqrt(n)
		dy := make([]float64, D)
		for j := 0; j < R; j++ {
			for d := 0; d < D; d++ {
				dy[d] += dc[i*R+j] * y[j*D+d]
			}
		}
		// d normalize: (dy - y (y . dy)) / ||x||
		yd := 0.0
		for d := 0; d < D; d++ {
			yd += y[i*D+d] * dy[d]
		}
		for d := 0; d < D; d++ {
			dx[i*D+d] = (dy[d] - y[i*D+d]*yd) / n
		}
	}
	return dx
}

func unit(x []float64, R, D int) []float64 {
	y := make([]float64, len(x))
	for i := 0; i < R; i++ {
		n := 0.0
		for d := 0; d < D; d++ {
			n += x[i*D+d] * x[i*D+d]
		}
		n = math.Sqrt(n)
		for d := 0; d < D; d++ {
			y[i*D+d] = x[i*D+d] / n
		}
	}
	return y
}

func dotRows(y []float64, i, j, D int) float64 {
	var s float64
	for d := 0; d < D; d++ {
		s += y[i*D+d] * y[j*D+d]
	}
	return s
}

func logAddExp(a, b float64) float64 {
	if math.IsInf(a, -1) {
		return b
	}
	m := math.Max(a, b)
	return m + math.Log(math.Exp(a-m)+math.Exp(b-m))
}
