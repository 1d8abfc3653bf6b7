//go:build !js

package nn

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

func TestTopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range []struct{ R, N, k int }{{1, 1, 1}, {1, 5, 3}, {3, 7, 10}, {17, 1000, 20}, {5, 60001, 64}, {2, 129, 1}} {
		// Continuous random scores have no ties, so the order is unique.
		s64, s32 := randn(rng, c.R*c.N, 1)
		values := zeros(t, c.R, c.k)
		indices := zeros(t, c.R, c.k)
		rec := dev.Record()
		require.NoError(t, TopK(rec, values, indices, upload(t, s32, c.R, c.N), c.k, 1000))
		run(t, rec)
		wantV, wantI := ref.TopK(s64, c.N, c.k)
		gotI, err := dev.ReadU32(indices)
		require.NoError(t, err)
		for i := range wantI {
			if wantI[i] < 0 {
				require.Equal(t, uint32(0xffffffff), gotI[i], "case %+v slot %d", c, i)
			} else {
				require.Equal(t, uint32(wantI[i]+1000), gotI[i], "case %+v slot %d", c, i)
			}
		}
		// Values are copied, not computed: exact.
		require.Equal(t, wantV, read(t, values), "case %+v", c)
	}
	require.ErrorContains(t, TopK(dev.Record(), zeros(t, 2, 3), zeros(t, 2, 3), zeros(t, 2, 9), 65, 0), "topk: k = 65, want 1..64")
	require.ErrorContains(t, TopK(dev.Record(), zeros(t, 2, 3), zeros(t, 2, 2), zeros(t, 2, 9), 3, 0), "topk: scores [2x9], k 3: values [2x3] and indices [2x2] must hold 2 x 3")
}

// Rows of their own lengths, in one buffer with gaps, results to places
// of their own: each as TopK of the row alone.
func TestTopKRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	const k = 7
	lengths := []int{1, 7, 300, 5, 70001, 64}
	var table []uint32
	off, out := 3, 0
	for _, n := range lengths {
		table = append(table, uint32(off), uint32(n), uint32(out), 0)
		off += n + 5
		out += k + 2
	}
	s64, s32 := randn(rng, off, 1)
	values, indices := zeros(t, out), zeros(t, out)
	rows, err := dev.NewTensor("rows", len(table))
	require.NoError(t, err)
	defer rows.Buf.Release()
	require.NoError(t, dev.WriteU32(rows, table))
	rec := dev.Record()
	require.NoError(t, TopKRows(rec, values, indices, upload(t, s32, off), rows, k))
	run(t, rec)
	gotV := read(t, values)
	gotI, err := dev.ReadU32(indices)
	require.NoError(t, err)
	for r, n := range lengths {
		at, o := int(table[4*r]), int(table[4*r+2])
		wantV, wantI := ref.TopK(s64[at:at+n], n, k)
		for j := range k {
			if wantI[j] < 0 {
				require.Equal(t, uint32(0xffffffff), gotI[o+j], "row %d slot %d", r, j)
				continue
			}
			require.Equal(t, uint32(wantI[j]), gotI[o+j], "row %d slot %d", r, j)
			require.Equal(t, wantV[j], gotV[o+j], "row %d slot %d", r, j)
		}
	}
	require.ErrorContains(t, TopKRows(dev.Record(), values, indices, values, zeros(t, 3), k), "4 values a row")
	require.ErrorContains(t, TopKRows(dev.Record(), values, indices, values, rows, 0), "k = 0")
}
