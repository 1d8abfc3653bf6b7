//go:build !js

package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

func TestSumRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	// Both forms of the kernel: one invocation per column or four (a
	// CPU's; 2000 x 9, 3001 x 12 and 6400 x 64 in row chunks added up by a
	// second pass), and lanes per column with a tree (a GPU's: 32 lanes by
	// default; 1 and 256 are the extremes of its column blocks),
	// accumulating and not.
	for _, lanes := range []int{0, 1, 32, 256} {
		for _, s := range [][2]int{{1, 1}, {1, 77}, {300, 5}, {257, 130}, {2000, 9}, {3001, 12}, {6400, 64}} {
			M, N := s[0], s[1]
			for _, acc := range []bool{false, true} {
				t.Run(fmt.Sprintf("lanes%d_%dx%d_acc%v", lanes, M, N, acc), func(t *testing.T) {
					x64, x32 := randn(rng, M*N, 1)
					o64, o32 := randn(rng, N, 1)
					out := upload(t, o32, N)
					rec := dev.Record()
					require.NoError(t, sumRows(rec, out, upload(t, x32, M, N), acc, lanes))
					run(t, rec)
					want := ref.SumRows(x64, N)
					for i := range want {
						if acc {
							want[i] += o64[i]
						}
					}
					// f32 sums of M unit normals added in turn: M roundings of
					// partial sums of size about sqrt(M), a random walk of
					// about sqrt(M) * 6e-8 * sqrt(M) (5e-4 seen at 6400 rows).
					requireClose(t, want, read(t, out), 1e-5+2e-7*float64(M), 1e-5, "sum_rows")
				})
			}
		}
	}
	require.ErrorContains(t, SumRows(dev.Record(), zeros(t, 4), zeros(t, 3, 5), false), "sum_rows: x [3x5] -> out [4]: want 5 outputs")
}

func TestReduceRows(t *testing.T) { forLayouts(t, testReduceRows) }

func testReduceRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	for i, s := range append(rowShapes, [2]int{3, 65537}) {
		rows, D := s[0], s[1]
		for j, op := range []Reduction{RowSum, RowMean, RowMax, RowL2} {
			accumulate := (i+j)%2 == 0
			t.Run(fmt.Sprintf("%dx%d_%s_acc%v", rows, D, op, accumulate), func(t *testing.T) {
				x64, x32 := randn(rng, rows*D, 1)
				if op == RowMax {
					for c := range x32 { // an all-negative row
						x32[c] = -1 - float32(c%5)
						x64[c] = float64(x32[c])
					}
				}
				x, out := upload(t, x32, rows, D), zeros(t, rows)
				rec := dev.Record()
				require.NoError(t, ReduceRows(rec, out, x, op))
				run(t, rec)
				// One lane may add up a whole row in turn (lanes = 1): the f32
				// rounding of D partial sums of size ~sqrt(D) stays under
				// D * 1e-7 with a wide margin. The max is exact.
				requireClose(t, ref.RowReduce(x64, D, string(op)), read(t, out), 1e-5+1e-7*float64(D), 1e-5, string(op))
				if op == RowMax {
					return
				}
				dy64, dy32 := randn(rng, rows, 1)
				dx64, dx32 := randn(rng, rows*D, 1)
				dx := upload(t, dx32, rows, D)
				rec = dev.Record()
				require.NoError(t, ReduceRowsBackward(rec, dx, upload(t, dy32, rows), x, out, op, accumulate))
				run(t, rec)
				want := ref.RowReduceBackward(dy64, x64, D, string(op))
				if accumulate {
					want = plus(want, dx64)
				}
				// A product or quotient of f32 values and the norm (good to 1e-5).
				requireClose(t, want, read(t, dx), 1e-6, 2e-5, string(op)+" backward")
			})
		}
	}
}

func TestReduceRowsReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(53, 54))
	const rows, D = 3, 7
	x, _ := randn(rng, rows*D, 1)
	w, _ := randn(rng, rows, 1)
	for _, op := range []string{"sum", "mean", "l2"} {
		checkGradient(t, func(v []float64) float64 { return dot(w, ref.RowReduce(v, D, op)) }, x, ref.RowReduceBackward(w, x, D, op), op)
	}
}

func TestSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(55, 56))
	for _, n := range []int{1, 3, 100003} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			x64, x32 := randn(rng, n, 1)
			dx64, dx32 := randn(rng, n, 1)
			out, dx := zeros(t, 1), upload(t, dx32, n)
			rec := dev.Record()
			require.NoError(t, Sum(rec, out, upload(t, x32, n), 0.5))
			require.NoError(t, SumBackward(rec, dx, out, 0.25, true))
			run(t, rec)
			var s float64
			for _, v := range x64 {
				s += v
			}
			got := read(t, out)
			// f32 sum of 1e5 unit normals: error ~ 1e-3 at worst, sum ~ 300.
			requireClose(t, []float64{0.5 * s}, got, 1e-3, 1e-5, "sum")
			for i := range dx64 {
				dx64[i] += 0.25 * got[0]
			}
			requireClose(t, dx64, read(t, dx), 1e-6, 1e-6, "sum backward")
		})
	}
}

func TestReduceBadInputs(t *testing.T) {
	x := zeros(t, 3, 5)
	rec := dev.Record()
	require.ErrorContains(t, ReduceRows(rec, zeros(t, 5), x, RowSum), "reduce_rows: x [3x5] -> out [5]: want 3 outputs, one per row")
	require.Error(t, rec.Submit())
	require.ErrorContains(t, ReduceRows(dev.Record(), zeros(t, 3), x, "min"), `reduce_rows: unknown reduction "min"`)
	require.ErrorContains(t, ReduceRowsBackward(dev.Record(), x, zeros(t, 3), nil, nil, RowMax, false), `reduce_rows_backward: no backward for reduction "max"`)
	require.ErrorContains(t, ReduceRowsBackward(dev.Record(), x, zeros(t, 3), nil, nil, RowL2, false), "reduce_rows_backward: tensor x is nil")
	require.ErrorContains(t, ReduceRowsBackward(dev.Record(), x, zeros(t, 5), nil, nil, RowSum, false), "reduce_rows_backward: dx [3x5], dy [5]: want 3 gradients, one per row")
	require.ErrorContains(t, Sum(dev.Record(), zeros(t, 2), x, 1), "sum: out [2]: want a single element")
	require.ErrorContains(t, SumBackward(dev.Record(), x, zeros(t, 2), 1, false), "sum_backward: dy [2]: want a single element")
}
