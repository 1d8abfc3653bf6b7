//go:build !js

package nn

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

func TestSumRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, s := range [][2]int{{1, 1}, {1, 77}, {300, 5}, {257, 130}} {
		M, N := s[0], s[1]
		x64, x32 := randn(rng, M*N, 1)
		o64, o32 := randn(rng, N, 1)
		out := upload(t, o32, N)
		rec := dev.Record()
		require.NoError(t, SumRows(rec, out, upload(t, x32, M, N), true))
		run(t, rec)
		want := ref.SumRows(x64, N)
		for i := range want {
			want[i] += o64[i]
		}
		// f32 sums of M unit normals: error about sqrt(M) * 6e-8 * M^0.5 << 1e-4.
		requireClose(t, want, read(t, out), 1e-4, 1e-5, "sum_rows")
	}
	require.ErrorContains(t, SumRows(dev.Record(), zeros(t, 4), zeros(t, 3, 5), false), "sum_rows: x [3x5] -> out [4]: want 5 outputs")
}
