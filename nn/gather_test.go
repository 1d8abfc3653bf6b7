//go:build !js

package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn/ref"
)

// gatherIdx uploads row indices as a u32 tensor.
func gatherIdx(t *testing.T, idx []int) *gpu.Tensor {
	t.Helper()
	u := make([]uint32, len(idx))
	for i, v := range idx {
		u[i] = uint32(v)
	}
	x := zeros(t, len(idx))
	require.NoError(t, dev.WriteU32(x, u))
	return x
}

func TestGatherScatterRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	// {R, M, D}: one row, all rows permuted, a mask of 75 of 257 tokens of
	// an odd width, and D = 384 (ViT-S) with more elements than one grid pass.
	for _, s := range [][3]int{{1, 1, 1}, {5, 5, 3}, {257, 75, 13}, {1370, 600, 384}} {
		R, M, D := s[0], s[1], s[2]
		t.Run(fmt.Sprintf("%dx%d_pick%d", R, D, M), func(t *testing.T) {
			idx := rng.Perm(R)[:M] // distinct, as ScatterRowsAdd requires
			x64, x32 := randn(rng, R*D, 1)
			dy64, dy32 := randn(rng, M*D, 1)
			acc64, acc32 := randn(rng, R*D, 1)
			x, dy, it := upload(t, x32, R, D), upload(t, dy32, M, D), gatherIdx(t, idx)
			y, dx, dxAcc := upload(t, make([]float32, M*D), M, D), upload(t, acc32, R, D), upload(t, acc32, R, D)
			rec := dev.Record()
			require.NoError(t, GatherRows(rec, y, x, it))
			require.NoError(t, ScatterRowsAdd(rec, dx, dy, it, false))
			require.NoError(t, ScatterRowsAdd(rec, dxAcc, dy, it, true))
			run(t, rec)
			// Copies and single additions of f32 values: exact.
			requireClose(t, ref.GatherRows(x64, idx, D), read(t, y), 0, 0, "y")
			want := ref.ScatterRowsAdd(dy64, idx, R, D)
			requireClose(t, want, read(t, dx), 0, 0, "dx")
			for i := range want {
				want[i] += acc64[i]
			}
			// One f32 addition: half an ulp.
			requireClose(t, want, read(t, dxAcc), 0, 1e-7, "dx accumulated")
		})
	}
}

func TestGatherRowsOutOfRange(t *testing.T) {
	x := upload(t, []float32{1, 2, 3, 4}, 2, 2)
	y, dx := zeros(t, 2, 2), upload(t, []float32{9, 9, 9, 9}, 2, 2)
	it := gatherIdx(t, []int{1, 7})
	rec := dev.Record()
	require.NoError(t, GatherRows(rec, y, x, it))
	require.NoError(t, ScatterRowsAdd(rec, dx, x, it, false))
	run(t, rec)
	require.Equal(t, []float64{3, 4, 0, 0}, read(t, y))
	require.Equal(t, []float64{0, 0, 1, 2}, read(t, dx))
}

func TestGatherBadShapes(t *testing.T) {
	err := GatherRows(dev.Record(), zeros(t, 3, 4), zeros(t, 10, 5), zeros(t, 3))
	require.ErrorContains(t, err, "gather_rows: x [10x5], idx [3], y [3x4]: y must hold 3 rows of 5")
	err = GatherRows(dev.Record(), zeros(t, 2, 5), zeros(t, 10, 5), nil)
	require.ErrorContains(t, err, "gather_rows: tensor idx is nil")
	err = ScatterRowsAdd(dev.Record(), zeros(t, 10, 5), zeros(t, 4, 5), zeros(t, 3), false)
	require.ErrorContains(t, err, "scatter_rows_add: dx [10x5], idx [3], dy [4x5]: dy must hold 3 rows of 5")
}
