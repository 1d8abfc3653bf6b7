package ref

// SumRows returns out[n] = sum_m x[m*N+n].
func SumRows(x []float64, N int) []float64 {
	out := make([]float64, N)
	for i, v := range x {
		out[i%N] += v
	}
	return out
}
