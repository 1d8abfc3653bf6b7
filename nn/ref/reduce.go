package ref

import "math"

// SumRows returns out[n] = sum_m x[m*N+n].
func SumRows(x []float64, N int) []float64 {
	out := make([]float64, N)
	for i, v := range x {
		out[i%N] += v
	}
	return out
}

// RowReduce returns op ("sum", "mean", "max" or "l2") of each row of D.
func RowReduce(x []float64, D int, op string) []float64 {
	out := make([]float64, len(x)/D)
	for r := range out {
		row := x[r*D : (r+1)*D]
		a := 0.0
		if op == "max" {
			a = math.Inf(-1)
		}
		for _, v := range row {
			switch op {
			case "max":
				a = math.Max(a, v)
			case "l2":
				a += v * v
			default:
				a += v
			}
		}
		switch op {
		case "mean":
			a /= float64(D)
		case "l2":
			a = math.Sqrt(a)
		}
		out[r] = a
	}
	return out
}

// RowReduceBackward returns dx for a sum, mean or l2 row reduction with
// output gradient dy (x is the forward's input, used by l2).
func RowReduceBackward(dy, x []float64, D int, op string) []float64 {
	dx := make([]float64, len(x))
	norm := RowReduce(x, D, "l2")
	for i := range dx {
		r := i / D
		switch op {
		case "sum":
			dx[i] = dy[r]
		case "mean":
			dx[i] = dy[r] / float64(D)
		case "l2":
			if norm[r] > 0 {
				dx[i] = dy[r] * x[i] / norm[r]
			}
		}
	}
	return dx
}
