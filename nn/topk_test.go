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
