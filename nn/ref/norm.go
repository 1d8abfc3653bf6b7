package ref

import "math"

// LayerNorm normalises each row of D values of x and applies gamma and beta;
// it also returns each row's mean and rstd = 1/sqrt(var + eps).
func LayerNorm(x, gamma, beta []float64, D int, eps float64) (y, mean, rstd []float64) {
	rows := len(x) / D
	y = make([]float64, len(x))
	mean = make([]float64, rows)
	rstd = make([]float64, rows)
	for r := 0; r < rows; r++ {
		row := x[r*D : (r+1)*D]
		var m, v float64
		for _, a := range row {
			m += a
		}
		m /= float64(D)
		for _, a := range row {
			v += (a - m) * (a - m)
		}
		s := 1 / math.Sqrt(v/float64(D)+eps)
		for c, a := range row {
			y[r*D+c] = (a-m)*s*gamma[c] + beta[c]
		}
		mean[r], rstd[r] = m, s
	}
	return y, mean, rstd
}

// LayerNormBackward returns dx, dgamma and dbeta for output gradient dy.
func LayerNormBackward(dy, x, gamma, mean, rstd []float64, D int) (dx, dgamma, dbeta []float64) {
	dx = make([]float64, len(x))
	dgamma = make([]float64, D)
	dbeta = make([]float64, D)
	for r := 0; r < len(x)/D; r++ {
		var sg, sgx float64
		for c := 0; c < D; c++ {
			i := r*D + c
			xh := (x[i] - mean[r]) * rstd[r]
			g := dy[i] * gamma[c]
			sg += g
			sgx += g * xh
			dgamma[c] += dy[i] * xh
			dbeta[c] += dy[i]
		}
		sg /= float64(D)
		sgx /= float64(D)
		for c := 0; c < D; c++ {
			i := r*D + c
			xh := (x[i] - mean[r]) * rstd[r]
			dx[i] = rstd[r] * (dy[i]*gamma[c] - sg - xh*sgx)
		}
	}
	return dx, dgamma, dbeta
}

// Softmax returns softmax(x / T) over each row of D.
func Softmax(x []float64, D int, T float64) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/D; r++ {
		row := x[r*D : (r+1)*D]
		m := math.Inf(-1)
		for _, a := range row {
			m = math.Max(m, a/T)
		}
		var s float64
		for c, a := range row {
			y[r*D+c] = math.Exp(a/T - m)
			s += y[r*D+c]
		}
		for c := range row {
			y[r*D+c] /= s
		}
	}
	return y
}

// SoftmaxBackward returns dx = y * (dy - sum(dy * y)) / T per row.
func SoftmaxBackward(dy, y []float64, D int, T float64) []float64 {
	dx := make([]float64, len(y))
	for r := 0; r < len(y)/D; r++ {
		var d float64
		for c := r * D; c < (r+1)*D; c++ {
			d += dy[c] * y[c]
		}
		for c := r * D; c < (r+1)*D; c++ {
			dx[c] = y[c] * (dy[c] - d) / T
		}
	}
	return dx
}

// L2Normalize returns y = x / max(||x||, eps) per row and the norms ||x||.
func L2Normalize(x []float64, D int, eps float64) (y, norm []float64) {
	norm = RowReduce(x, D, "l2")
	y = make([]float64, len(x))
	for i, a := range x {
		y[i] = a / math.Max(norm[i/D], eps)
	}
	return y, norm
}

// L2NormalizeBackward returns dx for output gradient dy from the forward's y
// and norm.
func L2NormalizeBackward(dy, y, norm []float64, D int, eps float64) []float64 {
	dx := make([]float64, len(y))
	for r := range norm {
		var d float64
		if norm[r] > eps {
			for c := r * D; c < (r+1)*D; c++ {
				d += dy[c] * y[c]
			}
		}
		for c := r * D; c < (r+1)*D; c++ {
			dx[c] = (dy[c] - y[c]*d) / math.Max(norm[r], eps)
		}
	}
	return dx
}
