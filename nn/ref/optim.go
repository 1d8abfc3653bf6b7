package ref

import "math"

// AdamW applies step t (from 1) of torch.optim.AdamW to p in place, updating
// the moments m and v.
func AdamW(p, g, m, v []float64, lr, wd, b1, b2, eps float64, t int) {
	bc1 := 1 - math.Pow(b1, float64(t))
	bc2 := 1 - math.Pow(b2, float64(t))
	for i := range p {
		p[i] *= 1 - lr*wd
		m[i] = b1*m[i] + (1-b1)*g[i]
		v[i] = b2*v[i] + (1-b2)*g[i]*g[i]
		p[i] -= lr / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + eps)
	}
}

// EMA returns m teacher + (1 - m) student.
func EMA(teacher, student []float64, m float64) []float64 {
	out := make([]float64, len(teacher))
	for i := range out {
		out[i] = m*teacher[i] + (1-m)*student[i]
	}
	return out
}

// Norm returns the L2 norm of all the vectors together.
func Norm(xs ...[]float64) float64 {
	var s float64
	for _, x := range xs {
		for _, v := range x {
			s += v * v
		}
	}
	return math.Sqrt(s)
}

// ClipScale is the factor torch.nn.utils.clip_grad_norm_ multiplies
// gradients of the given total norm by.
func ClipScale(norm, maxNorm float64) float64 { return math.Min(1, maxNorm/(norm+1e-6)) }
