package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/webdino/webdino/curate"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

func init() { commands["curate"] = curateBench }

// curateSizes are the shapes of a curate run.
type curateSizes struct {
	pool, queries, d, k   int
	lists                 int
	nprobe                []int
	kmPoints, kmK, kmIter int
	verifyPairs           int
}

var (
	// The scale is 1M x 384 against 10k queries: about 7.7 TFLOP
	// of similarities, hours on lavapipe; these are scaled down.
	curateFull  = curateSizes{pool: 50000, queries: 1000, d: 384, k: 10, lists: 224, nprobe: []int{1, 4, 16}, kmPoints: 20000, kmK: 256, kmIter: 3, verifyPairs: 2000}
	curateQuick = curateSizes{pool: 4000, queries: 200, d: 64, k: 10, lists: 64, nprobe: []int{1, 8}, kmPoints: 2000, kmK: 32, kmIter: 2, verifyPairs: 100}
)

// curateResult is one reported figure.
type curateResult struct {
	Name          string   `json:"name"`
	Value         float64  `json:"value"`
	Unit          string   `json:"unit"`
	BaselineRatio *float64 `json:"baseline_ratio,omitempty"`
	Note          string   `json:"note,omitempty"`
}

func curateBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("curate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, `print one JSON object per line: {"name","value","unit"[,"baseline_ratio","note"]}`)
	quick := fs.Bool("quick", false, "small shapes (a smoke test, not a measurement)")
	s := curateFull
	fs.IntVar(&s.pool, "pool", s.pool, "pool rows")
	fs.IntVar(&s.queries, "queries", s.queries, "query rows")
	fs.IntVar(&s.d, "d", s.d, "embedding dimension")
	fs.IntVar(&s.lists, "lists", s.lists, "IVF lists (k-means clusters of the pool)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: bench curate [flags]

Times data curation on the current WebGPU device with synthetic embeddings
(unit vectors around 1000 random centres, so k-means and IVF have structure):

  knn/exact      exact k-NN (eval.Search: GPU similarity matmul + top-k
                 per block, CPU merge) of the queries against the pool, in
                 GFLOP/s of similarity (2 x pool x queries x d), against
                 numpy (matmul + argpartition) on the same shapes
  ivf/build      k-means of the pool into lists and packing (seconds), and
                 the lists' device memory
  ivf/nprobe=N   IVF search time, recall@10 against exact and speed-up
  ivf-int8/...   the same with 8-bit lists (a quarter of the memory), each
                 search fetching twice k and re-ranking exactly on the CPU
  kmeans/iter    one Lloyd iteration (assign + fixed-point update), seconds
  kmeans/seed    k-means++ seeding from all the k-means points, seconds
  verify/28px    copy verification (curate dedup --verify) of pairs of a
                 28-pixel picture and a crop of it, pairs per second: the
                 worst case, every box refined; against the float64
                 reference (curate.AlignedCorrelation) on every CPU core

Each search runs twice and the second run is timed (the first compiles the
pipelines its shapes need).

Defaults: pool 50000 x 384 against 1000 queries (the issue's 1M x 10k takes
hours on a CPU device); -quick: 4000 x 64 against 200. The machine is
usually shared: compare ratios within one run.

flags:
`)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if *quick {
		s = curateQuick
	}
	dev, err := gpu.Open()
	if err != nil {
		return err
	}
	defer dev.Close()
	reportDevice(stderr, dev)
	res, err := measureCurate(dev, s, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range res {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "case\tvalue\tunit\tvs numpy\tnote")
	for _, r := range res {
		base := "-"
		if r.BaselineRatio != nil {
			base = fmt.Sprintf("%.2fx", *r.BaselineRatio)
		}
		fmt.Fprintf(w, "%s\t%.3f\t%s\t%s\t%s\n", r.Name, r.Value, r.Unit, base, r.Note)
	}
	return w.Flush()
}

// clustered draws n unit vectors of d around c random centres.
func clustered(rng *rand.Rand, n, d, c int) []float32 {
	centres := make([]float32, c*d)
	for i := range centres {
		centres[i] = float32(rng.NormFloat64())
	}
	x := make([]float32, n*d)
	for i := range n {
		m := rng.IntN(c)
		for j := range d {
			x[i*d+j] = centres[m*d+j] + float32(0.7*rng.NormFloat64())
		}
	}
	eval.Normalize(x, d)
	return x
}

func measureCurate(dev *gpu.Device, s curateSizes, stderr io.Writer) ([]curateResult, error) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	all := clustered(rng, s.pool+s.queries, s.d, 1000)
	pool, query := all[:s.pool*s.d], all[s.pool*s.d:]
	var res []curateResult
	flops := 2 * float64(s.pool) * float64(s.queries) * float64(s.d)
	shape := fmt.Sprintf("%dx%dx%d", s.pool, s.queries, s.d)

	// Every search runs twice and the second is timed: the first compiles
	// the pipelines its shapes need.
	var exact *eval.Neighbours
	var tExact float64
	for range 2 {
		start := time.Now()
		var err error
		exact, err = eval.SearchAll(ctx, dev, eval.Mat{Data: query, D: s.d}, eval.Mat{Data: pool, D: s.d}, eval.SearchOpts{K: s.k})
		if err != nil {
			return nil, err
		}
		tExact = time.Since(start).Seconds()
	}
	r := curateResult{Name: "knn/exact/" + shape, Value: flops / tExact / 1e9, Unit: "GFLOP/s",
		Note: fmt.Sprintf("%.2fs, k=%d, %.0f queries/s", tExact, s.k, float64(s.queries)/tExact)}
	if np, err := numpyKNN(s); err != nil {
		fmt.Fprintln(stderr, "no numpy baseline:", err)
	} else {
		ratio := tExact / np
		ratio = 1 / ratio
		r.BaselineRatio = &ratio
		r.Note += fmt.Sprintf("; numpy %.2fs", np)
	}
	res = append(res, r)

	for _, int8 := range []bool{false, true} {
		kind := "ivf"
		if int8 {
			kind = "ivf-int8"
		}
		start := time.Now()
		ix, err := curate.BuildIVF(ctx, dev, curate.Mat{Data: pool, D: s.d}, curate.IVFOpts{Lists: s.lists, Iters: 5, Seed: 1, Sample: min(s.pool, 64*s.lists), Int8: int8})
		if err != nil {
			return nil, err
		}
		defer ix.Release()
		res = append(res, curateResult{Name: fmt.Sprintf("%s/build/%d-lists", kind, s.lists), Value: time.Since(start).Seconds(), Unit: "s",
			Note: fmt.Sprintf("lists %.1f MiB on the device", float64(ix.ListBytes())/(1<<20))})
		for _, np := range s.nprobe {
			var got *eval.Neighbours
			var t float64
			var stats string
			for range 2 {
				start = time.Now()
				// 8-bit lists: twice the candidates, re-ranked exactly
				// (as curate dedup --ivf-int8).
				cand := s.k
				if int8 {
					cand = min(2*s.k, nn.MaxTopK)
				}
				if got, err = ix.Search(ctx, query, cand, np); err != nil {
					return nil, err
				}
				stats = searchTimes(ix.Stats)
				if int8 {
					got = curate.Rerank(query, pool, s.d, got, s.k)
				}
				t = time.Since(start).Seconds()
			}
			res = append(res, curateResult{Name: fmt.Sprintf("%s/nprobe=%d/%d-lists", kind, np, s.lists), Value: t, Unit: "s",
				Note: fmt.Sprintf("recall@%d %.3f, speed-up %.1fx over exact; %s", s.k, curate.Recall(exact, got, s.k), tExact/t, stats)})
		}
	}

	x := pool[:min(s.pool, s.kmPoints)*s.d]
	// fit times one k-means fit of iters iterations.
	fit := func(iters int) (float64, error) {
		start := time.Now()
		_, err := curate.KMeansFit(ctx, dev, x, s.d, curate.KMeansOpts{K: s.kmK, Iters: iters, Seed: 1, Sample: s.kmK})
		return time.Since(start).Seconds(), err
	}
	// A warm-up fit compiles the kernels; then the fastest of three fits of
	// 1 and 1+n iterations, n growing until the difference is a quarter of
	// a fit's fixed cost at least (on a fast GPU an iteration takes a tenth
	// of a millisecond, below the noise of a few).
	if _, err := fit(1); err != nil {
		return nil, err
	}
	fastest := func(iters int) (float64, error) {
		best := math.Inf(1)
		for range 3 {
			secs, err := fit(iters)
			if err != nil {
				return 0, err
			}
			best = min(best, secs)
		}
		return best, nil
	}
	one, err := fastest(1)
	if err != nil {
		return nil, err
	}
	n, more := s.kmIter, 0.0
	for {
		if more, err = fastest(1 + n); err != nil {
			return nil, err
		}
		if more-one > one/4 || n >= 1024 {
			break
		}
		n *= 4
	}
	if it := (more - one) / float64(n); it > 0 {
		res = append(res, curateResult{Name: fmt.Sprintf("kmeans/iter/%dx%d-k%d", len(x)/s.d, s.d, s.kmK), Value: it, Unit: "s",
			Note: fmt.Sprintf("%.1f GFLOP/s of assignment matmul (%d iterations timed)", 2*float64(len(x))*float64(s.kmK)/it/1e9, n)})
	} else {
		fmt.Fprintf(stderr, "kmeans/iter: %d more iterations took no measurable time (%.4f s against %.4f s)\n", n, more, one)
	}

	// k-means++ seeding of the same points, all of them as the sample: k-1
	// passes over the points, each reading them once.
	seed := func() (float64, error) {
		start := time.Now()
		_, err := curate.KMeansPlusPlus(ctx, dev, x, s.d, s.kmK, len(x)/s.d, 1)
		return time.Since(start).Seconds(), err
	}
	if _, err := seed(); err != nil { // compiles the kernels
		return nil, err
	}
	st, err := seed()
	if err != nil {
		return nil, err
	}
	pairs := float64(len(x)/s.d) * float64(s.kmK-1)
	res = append(res, curateResult{Name: fmt.Sprintf("kmeans/seed/%dx%d-k%d", len(x)/s.d, s.d, s.kmK), Value: st, Unit: "s",
		Note: fmt.Sprintf("k-means++ on the GPU: %.3g point-centroid distances/s, %.1f GB/s of points read", pairs/st, pairs*float64(s.d)*4/st/1e9)})
	vr, err := benchVerify(ctx, dev, rng, s.verifyPairs)
	if err != nil {
		return nil, err
	}
	return append(res, vr), nil
}

// benchVerify times curate.VerifyPairs on n pairs of a random 28-pixel
// picture of 4-pixel blocks and a crop of it, and the float64 reference
// on every core.
func benchVerify(ctx context.Context, dev *gpu.Device, rng *rand.Rand, n int) (curateResult, error) {
	const side = 28
	var thumbs []curate.Thumb
	pairs := make([]curate.Pair, n)
	for p := range pairs {
		img := &data.RGB{H: side, W: side, Pix: make([]uint8, 3*side*side)}
		for y := range side {
			for x := range side {
				v := uint8(((x/4)*7 + (y/4)*13 + p*5) % 17 * 15)
				img.Pix[3*(y*side+x)], img.Pix[3*(y*side+x)+1], img.Pix[3*(y*side+x)+2] = v, v, v
			}
		}
		crop, err := curate.ApplyEdit(img, curate.EditCrop, rng)
		if err != nil {
			return curateResult{}, err
		}
		thumbs = append(thumbs, curate.NewThumb(img, side), curate.NewThumb(crop, side))
		pairs[p] = curate.Pair{I: 2 * p, J: 2*p + 1}
	}
	o := curate.DefaultVerify
	if _, err := curate.VerifyPairs(ctx, dev, pairs[:1], thumbs, o, nil); err != nil { // compiles the kernels
		return curateResult{}, err
	}
	start := time.Now()
	if _, err := curate.VerifyPairs(ctx, dev, pairs, thumbs, o, nil); err != nil {
		return curateResult{}, err
	}
	gpuRate := float64(n) / time.Since(start).Seconds()
	start = time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := int(next.Add(1)) - 1; p < n; p = int(next.Add(1)) - 1 {
				curate.AlignedCorrelation(thumbs[pairs[p].I], thumbs[pairs[p].J], o)
			}
		}()
	}
	wg.Wait()
	cpuRate := float64(n) / time.Since(start).Seconds()
	return curateResult{Name: fmt.Sprintf("verify/%dpx-crops", side), Value: gpuRate, Unit: "pairs/s",
		Note: fmt.Sprintf("%.2fx the float64 reference on %d CPU threads (%.0f pairs/s)", gpuRate/cpuRate, runtime.GOMAXPROCS(0), cpuRate)}, nil
}

// numpyKNNScript times exact top-k by blocks of at most 1024 queries and
// 64M scores (a 1M pool: 64 queries; whole blocks of 1024 were 4 GB of
// scores plus argpartition's copies, and the kernel killed the process):
// matmul, argpartition, sort of the k. Prints seconds.
const numpyKNNScript = `
import sys, time
import numpy as np
n, q, d, k = map(int, sys.argv[1:5])
rng = np.random.default_rng(0)
p = rng.standard_normal((n, d), dtype=np.float32)
x = rng.standard_normal((q, d), dtype=np.float32)
b = max(1, min(1024, (1 << 26) // n))  # query rows a block: 256 MB of scores
t = time.perf_counter()
for i in range(0, q, b):
    s = x[i:i+b] @ p.T
    top = np.argpartition(-s, k, axis=1)[:, :k]
    v = np.take_along_axis(s, top, 1)
    o = np.argsort(-v, axis=1)
print(time.perf_counter() - t)
`

func numpyKNN(s curateSizes) (float64, error) {
	cmd := exec.Command(pythonExe(), "-c", numpyKNNScript, fmt.Sprint(s.pool), fmt.Sprint(s.queries), fmt.Sprint(s.d), fmt.Sprint(s.k))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var t float64
	if _, err := fmt.Sscan(string(out), &t); err != nil || t <= 0 || math.IsNaN(t) {
		return 0, fmt.Errorf("numpy printed %q", out)
	}
	return t, nil
}

// searchTimes says where an IVF search's time went.
func searchTimes(s curate.SearchStats) string {
	sec := func(d time.Duration) float64 { return d.Seconds() }
	return fmt.Sprintf("probe %.3fs, %d batches of %d list products: gather and upload %.3fs, record and submit %.3fs, wait %.3fs, merge %.3fs",
		sec(s.Probe), s.Batches, s.Lists, sec(s.Prepare), sec(s.Submit), sec(s.Wait), sec(s.Merge))
}
