package ref

import "math"

// logSumExp returns log sum_k exp(z_k), shifted by the maximum for safety.
func logSumExp(z []float64) float64 {
	m := math.Inf(-1)
	for _, v := range z {
		m = math.Max(m, v)
	}
	var s float64
	for _, v := range z {
		s += math.Exp(v - m)
	}
	return m + math.Log(s)
}

// SoftmaxCrossEntropy returns loss[r] = -sum_k t[r,k] log softmax(s[r]/tau)_k
// for R rows of K.
func SoftmaxCrossEntropy(s, t []float64, R, K int, tau float64) []float64 {
	loss := make([]float64, R)
	z := make([]float64, K)
	for r := 0; r < R; r++ {
		for k := range z {
			z[k] = s[r*K+k] / tau
		}
		l := logSumExp(z)
		for k := range z {
			loss[r] -= t[r*K+k] * (z[k] - l)
		}
	}
	return loss
}

// SoftmaxCrossEntropyBackward returns the gradient of sum_r w[r] loss[r]
// with respect to s.
func SoftmaxCrossEntropyBackward(s, t, w []float64, R, K int, tau float64) []float64 {
	ds := make([]float64, R*K)
	z := make([]float64, K)
	for r := 0; r < R; r++ {
		var ts float64
		for k := range z {
			z[k] = s[r*K+k] / tau
			ts += t[r*K+k]
		}
		l := logSumExp(z)
		for k := range z {
			ds[r*K+k] = w[r] * (math.Exp(z[k]-l)*ts - t[r*K+k]) / tau
		}
	}
	return ds
}

// TeacherSoftmax returns softmax((t[r] - c) / temp) per row (c nil: no center).
func TeacherSoftmax(t, c []float64, R, K int, temp float64) []float64 {
	p := make([]float64, R*K)
	z := make([]float64, K)
	for r := 0; r < R; r++ {
		for k := range z {
			z[k] = t[r*K+k]
			if c != nil {
				z[k] -= c[k]
			}
			z[k] /= temp
		}
		l := logSumExp(z)
		for k := range z {
			p[r*K+k] = math.Exp(z[k] - l)
		}
	}
	return p
}

// CenterUpdate returns m c + (1 - m) mean over the R rows of t.
func CenterUpdate(c, t []float64, R, K int, m float64) []float64 {
	out := make([]float64, K)
	mean := SumRows(t, K)
	for k := range out {
		out[k] = m*c[k] + (1-m)*mean[k]/float64(R)
	}
	return out
}
