package ref

// Resize returns y [R1, R2, D] with y[i, j, :] = sum_a sum_b wy[i, a] wx[j, b]
// x[a, b, :] for dense 1-D matrices wy [R1, C1] and wx [R2, C2] and x
// [C1, C2, D]: a separable resampling such as bicubic interpolation.
func Resize(x, wy, wx []float64, C1, C2, R1, R2, D int) []float64 {
	y := make([]float64, R1*R2*D)
	for i := 0; i < R1; i++ {
		for j := 0; j < R2; j++ {
			for a := 0; a < C1; a++ {
				for b := 0; b < C2; b++ {
					w := wy[i*C1+a] * wx[j*C2+b]
					for d := 0; d < D; d++ {
						y[(i*R2+j)*D+d] += w * x[(a*C2+b)*D+d]
					}
				}
			}
		}
	}
	return y
}

// ResizeBackward returns dx [C1, C2, D], the gradient of Resize given dy.
func ResizeBackward(dy, wy, wx []float64, C1, C2, R1, R2, D int) []float64 {
	dx := make([]float64, C1*C2*D)
	for i := 0; i < R1; i++ {
		for j := 0; j < R2; j++ {
			for a := 0; a < C1; a++ {
				for b := 0; b < C2; b++ {
					w := wy[i*C1+a] * wx[j*C2+b]
					for d := 0; d < D; d++ {
						dx[(a*C2+b)*D+d] += w * dy[(i*R2+j)*D+d]
					}
				}
			}
		}
	}
	return dx
}
