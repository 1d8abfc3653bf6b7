package ref

import "sort"

// TopK returns the k largest values of each row of scores [R, N] and their
// indices, largest first; ties keep the lower index first.
func TopK(scores []float64, N, k int) (values []float64, indices []int) {
	R := len(scores) / N
	for r := 0; r < R; r++ {
		row := scores[r*N : (r+1)*N]
		idx := make([]int, N)
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return row[idx[a]] > row[idx[b]] })
		for j := 0; j < k; j++ {
			if j < N {
				values = append(values, row[idx[j]])
				indices = append(indices, idx[j])
			} else {
				values = append(values, float64(float32(-3.4e38)))
				indices = append(indices, -1)
			}
		}
	}
	return values, indices
}
