package ref

// GatherRows returns y[m, :] = x[idx[m], :] for rows of D (zeros for an
// index past the rows of x).
func GatherRows(x []float64, idx []int, D int) []float64 {
	y := make([]float64, len(idx)*D)
	for m, r := range idx {
		if r < len(x)/D {
			copy(y[m*D:(m+1)*D], x[r*D:(r+1)*D])
		}
	}
	return y
}

// ScatterRowsAdd returns dx [R, D] with dy[m, :] added to row idx[m], the
// gradient of GatherRows (indices past R are skipped).
func ScatterRowsAdd(dy []float64, idx []int, R, D int) []float64 {
	dx := make([]float64, R*D)
	for m, r := range idx {
		if r < R {
			for d := 0; d < D; d++ {
				dx[r*D+d] += dy[m*D+d]
			}
		}
	}
	return dx
}
