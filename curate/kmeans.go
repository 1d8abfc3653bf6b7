package curate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// KMeansOpts configure KMeansFit.
type KMeansOpts struct {
	K     int    // clusters
	Iters int    // Lloyd iterations (20)
	Seed  uint64 // k-means++ sampling
	// Sample is the number of points k-means++ seeds from (O(Sample*K*D)
	// on the GPU); 0 means seedSample's choice.
	Sample int
	// MaxRows bounds the rows of one assignment matmul (0: 65536).
	MaxRows int
	// Restarts fits this many times, seeds Seed, Seed+1, ..., and keeps the
	// fit of least inertia (0 or 1: once). k-means++ seeding lands in a
	// poor local optimum now and then; a few restarts make that rare.
	Restarts int
}

// KMeans is a fitted clustering of n points [n, D].
type KMeans struct {
	K, D      int
	Centroids []float32 // [K, D]
	Sizes     []int     // points per cluster after the last update
	Assign    []int     // each point's nearest centroid (the final one)
	Inertia   float64   // sum of squared distances to the assigned centroids
}

// KMeansScatter records, for every row of x [n, d] with cluster assign[n]
// (a u32 tensor), sums[assign, :] += x as 64-bit fixed point (value *
// scale; sums is [K, d, 2] u32) and counts[assign] += 1. scale must keep
// every |x| * scale below 2^31.
func KMeansScatter(rec *gpu.Recorder, sums, counts, x, assign *gpu.Tensor, scale float32) error {
	if sums == nil || counts == nil || x == nil || assign == nil {
		return rec.Fail(fmt.Errorf("kmeans_scatter: nil tensor"))
	}
	n, d := x.Dim(0), x.Len()/x.Dim(0)
	k := counts.Len()
	if assign.Len() != n || sums.Len() != 2*k*d {
		return rec.Fail(fmt.Errorf("kmeans_scatter: x %s, assign %s, sums %s, counts %s: want assign [%d] and sums [%d x %d x 2]", x, assign, sums, counts, n, k, d))
	}
	kern := gpu.Kernel{Name: "kmeans_scatter", Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	return rec.Dispatch(kern, rec.Groups(n*d, 256), []uint32{gpu.U32(n), gpu.U32(d), gpu.F32(scale)}, x, assign, sums, counts)
}

// KMeansUpdate records centroids = sums / (counts * scale) for non-empty
// clusters, clears sums, then bias = -|c|^2/2, sizes = counts (u32) and
// clears counts: the state the next KMeansScatter and assignment need.
func KMeansUpdate(rec *gpu.Recorder, centroids, bias, sizes, sums, counts *gpu.Tensor, scale float32) error {
	if centroids == nil || bias == nil || sizes == nil || sums == nil || counts == nil {
		return rec.Fail(fmt.Errorf("kmeans_update: nil tensor"))
	}
	k, d := centroids.Dim(0), centroids.Len()/centroids.Dim(0)
	if bias.Len() != k || sizes.Len() != k || counts.Len() != k || sums.Len() != 2*k*d {
		return rec.Fail(fmt.Errorf("kmeans_update: centroids %s, bias %s, sizes %s, sums %s, counts %s: shapes do not agree", centroids, bias, sizes, sums, counts))
	}
	up := gpu.Kernel{Name: "kmeans_update", Access: []gpu.Access{gpu.ReadWrite, gpu.Read, gpu.ReadWrite}}
	if err := rec.Dispatch(up, rec.Groups(k*d, 256), []uint32{gpu.U32(k), gpu.U32(d), gpu.F32(1 / scale)}, sums, counts, centroids); err != nil {
		return err
	}
	return kmeansNorm(rec, centroids, bias, sizes, counts)
}

func kmeansNorm(rec *gpu.Recorder, centroids, bias, sizes, counts *gpu.Tensor) error {
	k, d := centroids.Dim(0), centroids.Len()/centroids.Dim(0)
	norm := gpu.Kernel{Name: "kmeans_norm", Access: []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite, gpu.ReadWrite}}
	return rec.Dispatch(norm, rec.Groups(k, 64), []uint32{gpu.U32(k), gpu.U32(d)}, centroids, counts, bias, sizes)
}

// fixedScale is the power of two that maps the largest |x| to at most
// 2^30: sums of up to 2^32 points fit the 64-bit accumulators, and the
// rounding (2^-30 of the largest value) is far below float32's.
func fixedScale(x []float32) float32 {
	var m float64
	for _, v := range x {
		m = max(m, math.Abs(float64(v)))
	}
	if m == 0 {
		return 1
	}
	return float32(math.Ldexp(1, 30-int(math.Ceil(math.Log2(m)))))
}

// KMeansFit clusters x [n, d] (Euclidean) on the GPU: k-means++ seeding on
// a random sample, then Lloyd iterations with assignment by a matmul
// and top-1 and the centroid update by a fixed-point scatter, o.Restarts
// times from different seeds, keeping the least inertia. The result is the
// same on every run with the same seed (the GPU sums are integers); empty
// clusters keep their previous centroid.
func KMeansFit(ctx context.Context, dev *gpu.Device, x []float32, d int, o KMeansOpts) (*KMeans, error) {
	var best *KMeans
	for r := range max(1, o.Restarts) {
		once := o
		once.Seed = o.Seed + uint64(r)
		km, err := kmeansFitOnce(ctx, dev, x, d, once)
		if err != nil {
			return nil, err
		}
		if best == nil || km.Inertia < best.Inertia {
			best = km
		}
	}
	return best, nil
}

// kmeansFitOnce is one fit of KMeansFit, from o.Seed.
func kmeansFitOnce(ctx context.Context, dev *gpu.Device, x []float32, d int, o KMeansOpts) (*KMeans, error) {
	if d <= 0 || len(x)%d != 0 || len(x) == 0 {
		return nil, fmt.Errorf("kmeans: %d values are not rows of %d", len(x), d)
	}
	n := len(x) / d
	if o.K < 1 || o.K > n {
		return nil, fmt.Errorf("kmeans: k = %d for %d points", o.K, n)
	}
	if o.Iters == 0 {
		o.Iters = 20
	}
	if o.Sample <= 0 {
		pairs := seedPairsGPU
		if dev.Info().IsCPU() {
			pairs = seedPairsCPU
		}
		o.Sample = seedSample(n, o.K, pairs, int(dev.Limits().MaxStorageBinding/4)/d)
	}
	init, err := KMeansPlusPlus(ctx, dev, x, d, o.K, min(n, max(o.Sample, o.K)), o.Seed)
	if err != nil {
		return nil, err
	}
	km := &KMeans{K: o.K, D: d}
	g, err := newKMeansGPU(dev, x, d, init, o.MaxRows)
	if err != nil {
		return nil, err
	}
	defer g.release()
	for it := 0; it < o.Iters; it++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rec := dev.Record()
		for _, c := range g.chunks {
			g.assign(rec, c)
			KMeansScatter(rec, g.sums, g.counts, c.x, c.ix, g.scale)
		}
		KMeansUpdate(rec, g.cent, g.bias, g.sizes, g.sums, g.counts, g.scale)
		if err := rec.Submit(); err != nil {
			return nil, fmt.Errorf("kmeans: %w", err)
		}
	}
	if km.Centroids, err = dev.Read(g.cent); err != nil {
		return nil, err
	}
	sizes, err := dev.ReadU32(g.sizes)
	if err != nil {
		return nil, err
	}
	for _, s := range sizes {
		km.Sizes = append(km.Sizes, int(s))
	}
	// Final assignment to the final centroids.
	rec := dev.Record()
	for _, c := range g.chunks {
		g.assign(rec, c)
	}
	if err := rec.Submit(); err != nil {
		return nil, fmt.Errorf("kmeans: %w", err)
	}
	km.Assign = make([]int, 0, n)
	for _, c := range g.chunks {
		v, ix, err := dev.ReadTopK(c.v, c.ix)
		if err != nil {
			return nil, err
		}
		for r, a := range ix {
			row := x[(c.first+r)*d : (c.first+r+1)*d]
			var sq float64
			for _, e := range row {
				sq += float64(e) * float64(e)
			}
			km.Assign = append(km.Assign, int(a))
			km.Inertia += max(0, sq-2*float64(v[r]))
		}
	}
	return km, nil
}

// kmeansGPU is the device state of a fit or a prediction.
type kmeansGPU struct {
	dev                             *gpu.Device
	k, d                            int
	scale                           float32
	cent, bias, sizes, sums, counts *gpu.Tensor
	scores                          *gpu.Tensor
	chunks                          []kmChunk
}

// kmChunk is a block of points resident on the GPU with its assignment.
type kmChunk struct {
	first int
	x     *gpu.Tensor // [rows, d]
	v, ix *gpu.Tensor // best score x.c - |c|^2/2 and its cluster
}

func newKMeansGPU(dev *gpu.Device, x []float32, d int, centroids []float32, maxRows int) (g *kmeansGPU, err error) {
	k := len(centroids) / d
	g = &kmeansGPU{dev: dev, k: k, d: d, scale: fixedScale(x)}
	defer func() {
		if err != nil {
			g.release()
			err = fmt.Errorf("kmeans: %w", err)
		}
	}()
	if maxRows <= 0 {
		maxRows = 65536
	}
	limit := int(dev.Limits().MaxStorageBinding / 4)
	rows := max(1, min(maxRows, limit/k, limit/d))
	// Chunk starts must be 256-byte aligned views into x's buffers: each
	// chunk has buffers of its own.
	n := len(x) / d
	for r0 := 0; r0 < n; r0 += rows {
		r1 := min(n, r0+rows)
		c := kmChunk{first: r0}
		if c.x, err = dev.Upload("kmeans points", x[r0*d:r1*d], r1-r0, d); err != nil {
			return g, err
		}
		g.chunks = append(g.chunks, c)
		if g.chunks[len(g.chunks)-1].v, err = dev.NewTensor("kmeans best", r1-r0, 1); err != nil {
			return g, err
		}
		if g.chunks[len(g.chunks)-1].ix, err = dev.NewTensor("kmeans assign", r1-r0, 1); err != nil {
			return g, err
		}
	}
	if g.cent, err = dev.Upload("kmeans centroids", centroids, k, d); err != nil {
		return g, err
	}
	for _, t := range []struct {
		p     **gpu.Tensor
		shape []int
	}{{&g.bias, []int{k}}, {&g.sizes, []int{k}}, {&g.counts, []int{k}}, {&g.sums, []int{k, d, 2}}, {&g.scores, []int{min(rows, n), k}}} {
		if *t.p, err = dev.NewTensor("kmeans state", t.shape...); err != nil {
			return g, err
		}
	}
	rec := dev.Record()
	kmeansNorm(rec, g.cent, g.bias, g.sizes, g.counts)
	return g, rec.Submit()
}

// assign records the nearest centroid of every point of c.
func (g *kmeansGPU) assign(rec *gpu.Recorder, c kmChunk) {
	s := g.scores
	if rows := c.x.Dim(0); rows != s.Dim(0) {
		s, _ = s.View(0, rows, g.k)
	}
	nn.MatMul(rec, s, c.x, g.cent, nn.MatMulOpts{TransB: true, Bias: g.bias})
	nn.TopK(rec, c.v, c.ix, s, 1, 0)
}

func (g *kmeansGPU) release() {
	for _, c := range g.chunks {
		for _, t := range []*gpu.Tensor{c.x, c.v, c.ix} {
			if t != nil {
				t.Buf.Release()
			}
		}
	}
	for _, t := range []*gpu.Tensor{g.cent, g.bias, g.sizes, g.sums, g.counts, g.scores} {
		if t != nil {
			t.Buf.Release()
		}
	}
}

// Predict assigns every row of x to its nearest centroid on the GPU,
// streaming x in blocks, and returns the clusters and squared distances.
func (km *KMeans) Predict(ctx context.Context, dev *gpu.Device, x Rows, maxRows int) ([]int, []float32, error) {
	if x.Dim() != km.D {
		return nil, nil, fmt.Errorf("kmeans predict: rows of %d, centroids of %d", x.Dim(), km.D)
	}
	if maxRows <= 0 {
		maxRows = 65536
	}
	n := x.Len()
	assign, dist := make([]int, 0, n), make([]float32, 0, n)
	buf := make([]float32, min(n, maxRows)*km.D)
	for r0 := 0; r0 < n; r0 += maxRows {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		r1 := min(n, r0+maxRows)
		b := buf[:(r1-r0)*km.D]
		if err := x.Read(r0, r1, b); err != nil {
			return nil, nil, err
		}
		g, err := newKMeansGPU(dev, b, km.D, km.Centroids, maxRows)
		if err != nil {
			return nil, nil, err
		}
		rec := dev.Record()
		for _, c := range g.chunks {
			g.assign(rec, c)
		}
		err = rec.Submit()
		for _, c := range g.chunks {
			if err != nil {
				break
			}
			var ix []uint32
			var v []float32
			if v, ix, err = dev.ReadTopK(c.v, c.ix); err != nil {
				break
			}
			for r := range ix {
				var sq float64
				for _, e := range b[(c.first+r)*km.D : (c.first+r+1)*km.D] {
					sq += float64(e) * float64(e)
				}
				assign = append(assign, int(ix[r]))
				dist = append(dist, float32(max(0, sq-2*float64(v[r]))))
			}
		}
		g.release()
		if err != nil {
			return nil, nil, fmt.Errorf("kmeans predict: %w", err)
		}
	}
	return assign, dist, nil
}

// Seeding budgets: the point-centroid distances k-means++ may compute, so
// that seeding stays a fraction of the fit. lavapipe on two cores computes
// 3.8M distances of D = 384 a second (`bench curate`, kmeans/seed), so 2^26
// (16384 points for 4096 clusters) take 18 s; a GPU reading its memory at
// 1 TB/s does 2^36 (100k clusters from 687k points) in about two minutes.
const (
	seedPairsCPU = 1 << 26
	seedPairsGPU = 1 << 36
)

// seedSample is the k-means++ sample of n points for k clusters: 64 per
// cluster, fewer when that would exceed pairs distances or maxRows rows
// (one storage binding), but never fewer than k. A sample of k points is
// the seeding itself (k-means++ would pick every one): a uniform random
// sample, faiss's initialisation, which Lloyd's iterations then refine.
func seedSample(n, k, pairs, maxRows int) int {
	return min(n, max(k, min(64*k, pairs/k, maxRows)))
}

// KMeansPlusPlus seeds k centroids from a random sample of s rows of x
// [n, d] on the GPU: the first uniformly, each next one with probability
// proportional to its squared distance to the nearest centroid so far
// (Arthur and Vassilvitskii 2007). Deterministic for a seed.
func KMeansPlusPlus(ctx context.Context, dev *gpu.Device, x []float32, d, k, s int, seed uint64) ([]float32, error) {
	n := len(x) / d
	rng := newRand(seed)
	sample := rng.Perm(n)[:s]
	rows := make([]float32, 0, s*d)
	for _, i := range sample {
		rows = append(rows, x[i*d:(i+1)*d]...)
	}
	if s == k {
		return rows, nil
	}
	first := rng.IntN(s)
	u := make([]float32, k)
	for i := range u {
		u[i] = float32(rng.Float64())
	}
	picks, err := seedPicks(ctx, dev, rows, d, first, u)
	if err != nil {
		return nil, err
	}
	cent := make([]float32, 0, k*d)
	for _, i := range picks {
		cent = append(cent, rows[i*d:(i+1)*d]...)
	}
	return cent, nil
}

// seedStepsPerSubmit bounds the k-means++ steps of one submission, so that
// a cancelled context stops a long seeding soon.
const seedStepsPerSubmit = 1024

// seedPicks runs k-means++ over the rows of x [s, d] on the GPU and
// returns the k = len(u) rows it picked: first, then pick t drawn by
// inverting the cumulative sum of the squared distances to the nearest
// earlier pick at u[t] times their total (kmeans_pp_pick). Every step is
// the same two dispatches: the state lives on the GPU.
func seedPicks(ctx context.Context, dev *gpu.Device, x []float32, d, first int, u []float32) (_ []int, err error) {
	s, k := len(x)/d, len(u)
	blocks := (s + 255) / 256
	var ts []*gpu.Tensor
	defer func() {
		for _, t := range ts {
			t.Buf.Release()
		}
	}()
	alloc := func(name string, shape ...int) *gpu.Tensor {
		if err != nil {
			return nil
		}
		var t *gpu.Tensor
		if t, err = dev.NewTensor(name, shape...); err == nil {
			ts = append(ts, t)
		}
		return t
	}
	xs := alloc("kmeans++ points", s, d)
	best := alloc("kmeans++ distances", s)
	sums := alloc("kmeans++ block sums", blocks)
	us := alloc("kmeans++ uniforms", k)
	state := alloc("kmeans++ state", 2) // u32: the step t, the last pick
	picks := alloc("kmeans++ picks", k) // u32
	if err != nil {
		return nil, fmt.Errorf("kmeans++: %w", err)
	}
	far := make([]float32, s)
	for i := range far {
		far[i] = math.MaxFloat32
	}
	err = errors.Join(dev.Write(xs, x), dev.Write(best, far), dev.Write(us, u),
		dev.WriteU32(state, []uint32{1, uint32(first)}), dev.WriteU32(picks, append([]uint32{uint32(first)}, make([]uint32, k-1)...)))
	if err != nil {
		return nil, fmt.Errorf("kmeans++: %w", err)
	}
	vec4 := d%4 == 0
	dw := d // the row length in the kernel's words
	if vec4 {
		dw = d / 4
	}
	update := gpu.Kernel{Name: "kmeans_pp_update", Data: struct{ Vec4 bool }{vec4}, Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	pick := gpu.Kernel{Name: "kmeans_pp_pick", Access: []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	for t0 := 1; t0 < k; t0 += seedStepsPerSubmit {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rec := dev.Record()
		for range min(seedStepsPerSubmit, k-t0) {
			rec.Dispatch(update, rec.Groups(s, 256), []uint32{gpu.U32(s), gpu.U32(dw)}, xs, state, best, sums)
			rec.Dispatch(pick, [3]uint32{1, 1, 1}, []uint32{gpu.U32(s), gpu.U32(blocks)}, best, sums, us, state, picks)
		}
		if err := rec.Submit(); err != nil {
			return nil, fmt.Errorf("kmeans++: %w", err)
		}
	}
	got, err := dev.ReadU32(picks)
	if err != nil {
		return nil, fmt.Errorf("kmeans++: %w", err)
	}
	out := make([]int, k)
	for i, v := range got {
		out[i] = int(v)
	}
	return out, nil
}

// newRand is the generator of every random choice in curate.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6b6d65616e73)) }
