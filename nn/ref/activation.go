package ref

import "math"

// SiLU is a * sigmoid(a).
func SiLU(a float64) float64 { return a / (1 + math.Exp(-a)) }

// SwiGLU returns y[r, j] = silu(x[r, j]) * x[r, H+j] for rows of 2H inputs.
func SwiGLU(x []float64, H int) []float64 {
	y := make([]float64, len(x)/2)
	for i := range y {
		j := i/H*2*H + i%H
		y[i] = SiLU(x[j]) * x[j+H]
	}
	return y
}

// SwiGLUBackward returns the [.., 2H] gradient of SwiGLU for output gradient dy.
func SwiGLUBackward(dy, x []float64, H int) []float64 {
	dx := make([]float64, len(x))
	for i, d := range dy {
		j := i/H*2*H + i%H
		a := x[j]
		s := 1 / (1 + math.Exp(-a))
		dx[j] = d * x[j+H] * s * (1 + a*(1-s))
		dx[j+H] = d * SiLU(a)
	}
	return dx
}

// LayerScale returns x + gamma * h with gamma per channel of rows of D.
func LayerScale(x, h, gamma []float64) []float64 {
	y := make([]float64, len(x))
	for i := range x {
		y[i] = x[i] + gamma[i%len(gamma)]*h[i]
	}
	return y
}

// LayerScaleBackward returns dh = gamma * dy and dgamma = sum over rows of dy * h.
func LayerScaleBackward(dy, h, gamma []float64) (dh, dgamma []float64) {
	dh = make([]float64, len(dy))
	dgamma = make([]float64, len(gamma))
	for i := range dy {
		c := i % len(gamma)
		dh[i] = gamma[c] * dy[i]
		dgamma[c] += dy[i] * h[i]
	}
	return dh, dgamma
}
