//go:build !js

package curate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/eval"
)

// lloydRef is the float64 reference: iters of assign (nearest centroid,
// lowest index on ties) and mean update (empty clusters keep theirs),
// then a final assignment.
func lloydRef(x []float32, d int, init []float32, iters int) ([]float64, []int) {
	n, k := len(x)/d, len(init)/d
	c := make([]float64, len(init))
	for i, v := range init {
		c[i] = float64(v)
	}
	assign := make([]int, n)
	step := func() {
		for i := range n {
			best, bd := 0, math.Inf(1)
			for j := range k {
				var s float64
				for e := range d {
					t := float64(x[i*d+e]) - c[j*d+e]
					s += t * t
				}
				if s < bd {
					best, bd = j, s
				}
			}
			assign[i] = best
		}
	}
	for range iters {
		step()
		sum := make([]float64, len(c))
		cnt := make([]int, k)
		for i, a := range assign {
			cnt[a]++
			for e := range d {
				sum[a*d+e] += float64(x[i*d+e])
			}
		}
		for j := range k {
			if cnt[j] > 0 {
				for e := range d {
					c[j*d+e] = sum[j*d+e] / float64(cnt[j])
				}
			}
		}
	}
	step()
	return c, assign
}

// blobs draws n points around k random centres (spread 3) with unit noise.
func blobs(rng *rand.Rand, n, d, k int) []float32 {
	centres := make([]float64, k*d)
	for i := range centres {
		centres[i] = 3 * rng.NormFloat64()
	}
	x := make([]float32, n*d)
	for i := range n {
		c := rng.IntN(k)
		for e := range d {
			x[i*d+e] = float32(centres[c*d+e] + rng.NormFloat64())
		}
	}
	return x
}

func TestKMeansVsReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct{ n, d, k, iters, maxRows int }{
		{1001, 19, 7, 6, 0},    // scalar matmul path
		{1500, 20, 13, 4, 600}, // vec4 path, three point chunks
		{50, 8, 1, 2, 0},
	} {
		x := blobs(rng, c.n, c.d, 8)
		o := KMeansOpts{K: c.k, Iters: c.iters, Seed: 42, MaxRows: c.maxRows}
		km, err := KMeansFit(context.Background(), dev, x, c.d, o)
		require.NoError(t, err)
		init, err := KMeansPlusPlus(context.Background(), dev, x, c.d, c.k, min(c.n, 64*c.k), 42)
		require.NoError(t, err)
		wantC, wantA := lloydRef(x, c.d, init, c.iters)
		require.Equal(t, wantA, km.Assign, "%+v", c)
		for i, w := range wantC {
			// float32 features and means of up to 1500 points: 1e-4
			// relative to the spread of 3.
			require.InDelta(t, w, km.Centroids[i], 3e-4, "%+v centroid value %d", c, i)
		}
		total := 0
		for _, s := range km.Sizes {
			total += s
		}
		require.Equal(t, c.n, total)
		var inertia float64
		for i, a := range wantA {
			for e := range c.d {
				t := float64(x[i*c.d+e]) - wantC[a*c.d+e]
				inertia += t * t
			}
		}
		require.InEpsilon(t, inertia, km.Inertia, 1e-3)

		// Determinism: the same bits again.
		km2, err := KMeansFit(context.Background(), dev, x, c.d, o)
		require.NoError(t, err)
		require.Equal(t, km.Centroids, km2.Centroids)

		// Predict agrees with the fit's final assignment.
		a, dist, err := km.Predict(context.Background(), dev, Mat{Data: x, D: c.d}, 333)
		require.NoError(t, err)
		require.Equal(t, km.Assign, a)
		require.Len(t, dist, c.n)
	}
	_, err := KMeansFit(context.Background(), dev, make([]float32, 10), 5, KMeansOpts{K: 3})
	require.ErrorContains(t, err, "k = 3 for 2 points")
}

func TestFixedPointScatterNegative(t *testing.T) {
	// Sums that cancel to small negatives exercise the carry and the
	// negation in the conversion back to float.
	x := []float32{-1, 0.75, 1e-6, -0.5, -1e-6, -0.25}
	km, err := KMeansFit(context.Background(), dev, x, 1, KMeansOpts{K: 1, Iters: 1})
	require.NoError(t, err)
	require.InDelta(t, (-1+0.75+1e-6-0.5-1e-6-0.25)/6, km.Centroids[0], 1e-8)
}

// ivfFixture indexes n unit vectors of d around c centres in lists lists
// and returns the index (released with the test), nq more as queries and
// their exact top k.
func ivfFixture(t *testing.T, rng *rand.Rand, n, nq, d, c, lists, k int) (*IVF, []float32, *eval.Neighbours) {
	return ivfFixtureOpts(t, rng, n, nq, d, c, k, IVFOpts{Lists: lists, Seed: 1})
}

func ivfFixtureOpts(t *testing.T, rng *rand.Rand, n, nq, d, c, k int, o IVFOpts) (*IVF, []float32, *eval.Neighbours) {
	x := blobs(rng, n+nq, d, c)
	eval.Normalize(x, d)
	base, query := x[:n*d], x[n*d:]
	ix, err := BuildIVF(context.Background(), dev, Mat{Data: base, D: d}, o)
	require.NoError(t, err)
	t.Cleanup(ix.Release)
	exact, err := eval.SearchAll(context.Background(), dev, Mat{Data: query, D: d}, Mat{Data: base, D: d}, eval.SearchOpts{K: k})
	require.NoError(t, err)
	return ix, query, exact
}

// Recall grows with the lists probed and is exact with all of them: rows
// of vec4s or of floats, the lists in one buffer or (packs of at most 700
// rows) in about ten.
func TestIVFRecall(t *testing.T) {
	for _, c := range []struct{ d, packRows int }{{36, 0}, {37, 0}, {36, 700}} {
		t.Run(fmt.Sprintf("d%d-pack%d", c.d, c.packRows), func(t *testing.T) { testIVFRecall(t, c.d, c.packRows) })
	}
}

func testIVFRecall(t *testing.T, d, packRows int) {
	ix, query, exact := ivfFixtureOpts(t, rand.New(rand.NewPCG(11, 12)), 6000, 300, d, 40, 10, IVFOpts{Lists: 64, Seed: 1, packRows: packRows})
	if packRows > 0 {
		require.Greater(t, len(ix.packs), 5)
	} else {
		require.Len(t, ix.packs, 1)
	}
	prev := 0.0
	for _, np := range []int{1, 4, 16, 64} {
		got, err := ix.Search(context.Background(), query, 10, np)
		require.NoError(t, err)
		r := Recall(exact, got, 10)
		t.Logf("IVF %d lists in %d buffers, d %d, nprobe %d: recall@10 %.3f", 64, len(ix.packs), d, np, r)
		require.GreaterOrEqual(t, r, prev)
		prev = r
		if np == 64 { // every list probed: exact
			require.Equal(t, 1.0, r)
			for i := range exact.Similar {
				require.InDelta(t, exact.Similar[i], got.Similar[i], 1e-6)
			}
		}
	}
}

func TestKMeansRestartsKeepLeastInertia(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const n, d, k = 800, 6, 9
	x := blobs(rng, n, d, 12) // more blobs than clusters: local optima differ by seed
	var fits []*KMeans
	for s := range uint64(4) {
		km, err := KMeansFit(context.Background(), dev, x, d, KMeansOpts{K: k, Iters: 5, Seed: 8 + s})
		require.NoError(t, err)
		fits = append(fits, km)
	}
	best, err := KMeansFit(context.Background(), dev, x, d, KMeansOpts{K: k, Iters: 5, Seed: 8, Restarts: 4})
	require.NoError(t, err)
	least := fits[0]
	for _, f := range fits[1:] {
		if f.Inertia < least.Inertia {
			least = f
		}
	}
	t.Logf("inertia by seed: %.1f %.1f %.1f %.1f; kept %.1f", fits[0].Inertia, fits[1].Inertia, fits[2].Inertia, fits[3].Inertia, best.Inertia)
	require.Equal(t, least.Centroids, best.Centroids, "restarts keep the fit of least inertia among seeds 8..11")
	require.Less(t, best.Inertia, fits[0].Inertia, "the seeds must reach different optima, or this test proves nothing")
}

func TestIVFSplitsAPopularList(t *testing.T) {
	// One list of 5000 rows probed by all 2000 queries: 10M scores, more
	// than one submission's budget (and, at scale, than a binding holds),
	// so the list's queries go in several batches; the result is exact.
	const n, nq = 5000, 2000
	require.Greater(t, n*nq, ivfBudget)
	ix, query, exact := ivfFixture(t, rand.New(rand.NewPCG(13, 14)), n, nq, 8, 5, 1, 5)
	got, err := ix.Search(context.Background(), query, 5, 1)
	require.NoError(t, err)
	require.Equal(t, 1.0, Recall(exact, got, 5))
	require.Equal(t, 2, ix.Stats.Batches, "two submissions, the second run while the first's results merge")
	require.Equal(t, 2, ix.Stats.Lists)
	for i := range exact.Similar {
		require.InDelta(t, exact.Similar[i], got.Similar[i], 1e-6)
	}
}

func TestIVFItemsBoundScores(t *testing.T) {
	byList := [][]int{{0, 1, 2, 3, 4, 5, 6}, nil, {7}, {8, 9}}
	sizes := []int{300, 50, 5000, 100}
	items := ivfItems(byList, sizes, 1000)
	var got [][]int
	for _, it := range items {
		require.True(t, len(it.qs) == 1 || len(it.qs)*sizes[it.l] <= 1000, "item %+v over the budget", it)
		got = append(got, append([]int{it.l}, it.qs...))
	}
	// List 0: 3 queries (900 scores) a batch; list 2 exceeds the budget with
	// one query and goes alone; every query appears once.
	require.Equal(t, [][]int{{0, 0, 1, 2}, {0, 3, 4, 5}, {0, 6}, {2, 7}, {3, 8, 9}}, got)
}

// The default seeding sample: 64 points per cluster while that is cheap,
// capped by a budget of distances and by the rows of one binding, never
// below k, never above n.
func TestSeedSample(t *testing.T) {
	for _, c := range []struct{ n, k, pairs, rows, want int }{
		{1000000, 1000, seedPairsCPU, 1 << 20, 64000},     // 64M distances: under the cap
		{1000000, 4096, seedPairsCPU, 1 << 20, 16384},     // capped: 2^26 / 4096
		{1000000, 100000, seedPairsCPU, 1 << 20, 100000},  // the cap is below k: k points
		{10000000, 100000, seedPairsGPU, 1 << 30, 687194}, // a GPU: 2^36 / 100000
		{10000000, 100000, seedPairsGPU, 349525, 349525},  // 512 MiB of D 384
		{1000000, 1000, seedPairsCPU, 500, 1000},          // a binding under k rows: k
		{50000, 1000, seedPairsCPU, 1 << 20, 50000},       // the whole set
		{200000, 200000, seedPairsCPU, 1 << 20, 200000},   // k = n
	} {
		require.Equal(t, c.want, seedSample(c.n, c.k, c.pairs, c.rows), "%+v", c)
	}
}

// A sample of exactly k points is the seeding: every point, each once.
func TestKMeansPlusPlusSampleOfK(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n, d, k = 500, 3, 40
	x := blobs(rng, n, d, 5)
	cent, err := KMeansPlusPlus(context.Background(), dev, x, d, k, k, 9)
	require.NoError(t, err)
	require.Len(t, cent, k*d)
	seen := map[[d]float32]int{}
	for i := 0; i < n; i++ {
		seen[[d]float32(x[i*d:(i+1)*d])]++
	}
	picked := map[[d]float32]bool{}
	for c := 0; c < k; c++ {
		row := [d]float32(cent[c*d : (c+1)*d])
		require.Contains(t, seen, row, "seed %d is not a data point", c)
		require.False(t, picked[row], "seed %d picked twice", c)
		picked[row] = true
	}
	// Another seed draws another sample.
	other, err := KMeansPlusPlus(context.Background(), dev, x, d, k, k, 10)
	require.NoError(t, err)
	require.NotEqual(t, cent, other)
}

// checkSeedPicks replays k-means++ in float64 along the GPU's picks: pick t
// must be a row of positive weight whose cumulative interval holds u[t]
// times the total weight, within float32 rounding of the sums.
func checkSeedPicks(t *testing.T, x []float32, d int, u []float32, picks []int) {
	t.Helper()
	s := len(x) / d
	best := make([]float64, s)
	for i := range best {
		best[i] = math.Inf(1)
	}
	for step := 1; step < len(u); step++ {
		c := x[picks[step-1]*d : (picks[step-1]+1)*d]
		var total float64
		for i := range s {
			var dd float64
			for j, v := range x[i*d : (i+1)*d] {
				e := float64(v) - float64(c[j])
				dd += e * e
			}
			best[i] = min(best[i], dd)
			total += best[i]
		}
		p := picks[step]
		require.True(t, p >= 0 && p < s, "pick %d: row %d of %d", step, p, s)
		if total == 0 {
			continue // every row is a pick already: uniform
		}
		require.Greater(t, best[p], 0.0, "pick %d: row %d is at distance 0 from a pick", step, p)
		var before float64
		for _, b := range best[:p] {
			before += b
		}
		target, tol := float64(u[step])*total, 1e-4*total
		require.True(t, before-tol <= target && target < before+best[p]+tol,
			"pick %d: row %d covers [%g, %g) of %g, target %g", step, p, before, before+best[p], total, target)
	}
}

// The GPU's k-means++ picks each row with probability proportional to its
// squared distance to the nearest earlier pick: checked step by step
// against float64, with a partial last block, more blocks than the pick
// kernel's 256 lanes, targets at the very ends of the range, and fewer
// distinct rows than picks.
func TestKMeansPlusPlusGPU(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	uniforms := func(k int) []float32 {
		u := make([]float32, k)
		for i := range u {
			u[i] = rng.Float32()
		}
		return u
	}
	for _, c := range []struct {
		name       string
		s, d, k    int
		distinct   int // rows repeat with this period (0: all distinct)
		extremeEnd bool
	}{
		{"blobs", 1500, 7, 60, 0, false},
		{"ends of the range", 700, 5, 30, 0, true},
		{"more blocks than lanes", 70000, 2, 12, 0, false},
		{"fewer distinct rows than picks", 300, 4, 9, 5, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := blobs(rng, c.s, c.d, 6)
			if c.distinct > 0 {
				for i := range c.s {
					copy(x[i*c.d:(i+1)*c.d], x[(i%c.distinct)*c.d:])
				}
			}
			u := uniforms(c.k)
			if c.extremeEnd {
				for i := 1; i < c.k; i += 2 {
					u[i] = math.Nextafter32(1, 0) // the largest float32 below 1
				}
				u[2] = 0
			}
			picks, err := seedPicks(context.Background(), dev, x, c.d, rng.IntN(c.s), u)
			require.NoError(t, err)
			require.Len(t, picks, c.k)
			checkSeedPicks(t, x, c.d, u, picks)
			if c.distinct > 0 {
				rows := map[int]bool{}
				for _, p := range picks[:c.distinct] {
					rows[p%c.distinct] = true
				}
				require.Len(t, rows, c.distinct, "the first picks cover every distinct row")
			}
		})
	}
}

// On clusters far apart compared with their spread, k-means++ seeds each
// cluster once.
func TestKMeansPlusPlusSeedsEveryCluster(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const n, d, k = 3000, 8, 25
	centres := make([]float32, k*d)
	for i := range centres {
		centres[i] = 100 * rng.Float32()
	}
	x := make([]float32, n*d)
	label := make([]int, n)
	for i := range n {
		label[i] = i % k
		for e := range d {
			x[i*d+e] = centres[label[i]*d+e] + 0.01*float32(rng.NormFloat64())
		}
	}
	cent, err := KMeansPlusPlus(context.Background(), dev, x, d, k, n, 11)
	require.NoError(t, err)
	seeded := map[int]int{}
	for c := range k {
		nearest, bestD := -1, math.Inf(1)
		for j := range k {
			var dd float64
			for e := range d {
				v := float64(cent[c*d+e] - centres[j*d+e])
				dd += v * v
			}
			if dd < bestD {
				nearest, bestD = j, dd
			}
		}
		seeded[nearest]++
	}
	require.Len(t, seeded, k, "every cluster seeded once: %v", seeded)
}

// 8-bit lists find what float lists find, to the rounding of their codes:
// with every list probed each similarity is the exact dot product to
// within sum_d |q_d| s_d / 254, recall@10 against exact search stays above
// 0.9 (the rounding reorders near ties), and 20 candidates re-ranked
// exactly give the exact top 10 (lists in one buffer and in packs of 700
// rows).
func TestIVFInt8(t *testing.T) {
	const n, nq, d, k = 6000, 300, 36, 10
	x := blobs(rand.New(rand.NewPCG(21, 22)), n+nq, d, 40)
	eval.Normalize(x, d)
	base, query := x[:n*d], x[n*d:]
	exact, err := eval.SearchAll(context.Background(), dev, Mat{Data: query, D: d}, Mat{Data: base, D: d}, eval.SearchOpts{K: k})
	require.NoError(t, err)
	scale, err := codeScale(Mat{Data: base, D: d})
	require.NoError(t, err)
	for _, packRows := range []int{0, 700} {
		ix, err := BuildIVF(context.Background(), dev, Mat{Data: base, D: d}, IVFOpts{Lists: 64, Seed: 1, Int8: true, packRows: packRows})
		require.NoError(t, err)
		t.Cleanup(ix.Release)
		require.Equal(t, packRows > 0, len(ix.packs) > 5)
		got, err := ix.Search(context.Background(), query, k, 64)
		require.NoError(t, err)
		r := Recall(exact, got, k)
		// Twice the candidates, re-ranked exactly, restore the order.
		cand, err := ix.Search(context.Background(), query, 2*k, 64)
		require.NoError(t, err)
		reranked := Rerank(query, base, d, cand, k)
		rr := Recall(exact, reranked, k)
		t.Logf("int8 lists in %d buffers, every list probed: recall@%d %.3f, re-ranked from %d %.3f", len(ix.packs), k, r, 2*k, rr)
		require.GreaterOrEqual(t, r, 0.9)
		require.Equal(t, 1.0, rr)
		for i := range exact.Similar {
			require.InDelta(t, exact.Similar[i], reranked.Similar[i], 1e-6)
		}
		for q := range nq {
			qv := query[q*d : (q+1)*d]
			bound := 1e-6
			for j, v := range qv {
				bound += math.Abs(float64(v)) * float64(scale[j]) / 254
			}
			require.InDelta(t, bound, ix.ScoreBound(qv), 1e-4+1e-6)
			for j := range k {
				row := got.Index[q*k+j]
				var dot float64
				for c, v := range qv {
					dot += float64(v) * float64(base[row*d+c])
				}
				require.InDelta(t, dot, got.Similar[q*k+j], bound, "query %d, neighbour %d", q, row)
			}
		}
	}
	_, err = BuildIVF(context.Background(), dev, Mat{Data: make([]float32, 37*50), D: 37}, IVFOpts{Lists: 4, Int8: true})
	require.ErrorContains(t, err, "8-bit lists need a dimension that is a multiple of 4, not 37")
}
