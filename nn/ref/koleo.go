package ref

import "math"

// KoLeoNN returns, per row of x [B, D], the nearest other row (the first on
// ties; the row itself when B = 1).
func KoLeoNN(x []float64, B, D int) []int {
	nn := make([]int, B)
	for i := range nn {
		nn[i] = i
		best := math.Inf(1)
		for j := 0; j < B; j++ {
			if j == i {
				continue
			}
			if d := dist(x, i, j, D); d < best {
				best, nn[i] = d, j
			}
		}
	}
	return nn
}

func dist(x []float64, i, j, D int) float64 {
	var q float64
	for d := 0; d < D; d++ {
		v := x[i*D+d] - x[j*D+d]
		q += v * v
	}
	return math.Sqrt(q)
}

// KoLeo returns -1/B sum_i log(||x_i - x_nn(i)|| + eps) with nn from KoLeoNN
// (0 for B = 1), and nn.
func KoLeo(x []float64, B, D int, eps float64) (float64, []int) {
	nn := KoLeoNN(x, B, D)
	var s float64
	for i, j := range nn {
		if j != i {
			s += math.Log(dist(x, i, j, D) + eps)
		}
	}
	return -s / float64(B), nn
}

// KoLeoBackward returns dLoss times the gradient of KoLeo with respect to x
// for fixed neighbours nn; a zero distance contributes no gradient.
func KoLeoBackward(x []float64, nn []int, B, D int, eps, dLoss float64) []float64 {
	dx := make([]float64, B*D)
	for i, j := range nn {
		d := dist(x, i, j, D)
		if j == i || d == 0 {
			continue
		}
		c := -dLoss / float64(B) / (d * (d + eps))
		for k := 0; k < D; k++ {
			g := c * (x[i*D+k] - x[j*D+k])
			dx[i*D+k] += g
			dx[j*D+k] -= g
		}
	}
	return dx
}
