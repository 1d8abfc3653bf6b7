package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/webdino/webdino/curate"
	"github.com/webdino/webdino/gpu"
)

const retrieveUsage = `usage: curate retrieve --pool POOL... [--dedup DEDUP.jsonl] --curated SET... --out DIR [flags]
       curate retrieve --mode balanced --pool POOL... [--dedup DEDUP.jsonl] --count N --out DIR [flags]

Retrieves pool images near curated sets, as DINOv2 did for LVD-142M. POOL
and every SET are embed outputs (curate embed --out; the --pool directories
in the order given to curate dedup); --dedup restricts the candidates to
the rows that curate dedup kept.

  sample   for every curated image its --k nearest pool images (exact
           search; one hit per pool image, for its most similar image)
  cluster  k-means of the pool (--clusters, fitted on --kmeans-sample
           rows, then every pool row assigned); from every cluster that
           holds more than --min-curated images of the set, up to
           --per-cluster pool images chosen at random (--seed)
  auto     cluster for sets smaller than --small images, else sample
  balanced no curated sets: --count pool images balanced over concepts
           (Vo et al. 2024): hierarchical k-means of the pool (--levels,
           finest first, with --resample rounds, fitted on --kmeans-sample
           rows, then every pool row assigned), sampled top-down with
           water-filled per-cluster caps, points at random (--seed)

Each set keeps at most --cap retrieved images (the most similar ones for
sample retrieval, a random subset for cluster retrieval). A pool image
retrieved for several sets is listed for the first (sets in flag order).

Outputs in DIR:
  manifest.jsonl  the training set, one JSON object per image: {"path",
                  "source" (the curated set; the pool's for balanced),
                  "reason" (curated, retrieved-sample, retrieved-cluster,
                  balanced), "similarity" (to the curated image that
                  retrieved it), "cluster" (k-means cluster, the finest
                  level's for balanced, -1 if none), "query" (that
                  curated image)}
  report.json     counts per stage and set

Flags:
`

// manifestRow is one line of the final manifest.
type manifestRow struct {
	Path       string  `json:"path"`
	Source     string  `json:"source"`
	Reason     string  `json:"reason"`
	Similarity float32 `json:"similarity"`
	Cluster    int     `json:"cluster"`
	Query      string  `json:"query,omitempty"`
}

// setReport is one curated set's line of report.json.
type setReport struct {
	Source    string `json:"source"`
	Curated   int    `json:"curated"`
	Mode      string `json:"mode"`
	Retrieved int    `json:"retrieved"`
	Capped    int    `json:"capped"`
	New       int    `json:"new"` // not already retrieved for an earlier set
}

type retrieveReport struct {
	Pool       int         `json:"pool"`
	Candidates int         `json:"candidates"`
	Sets       []setReport `json:"sets"`
	Balanced   int         `json:"balanced,omitempty"`
	Manifest   int         `json:"manifest"`
}

func retrieveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("retrieve", retrieveUsage, stderr)
	var pools multi
	fs.Var(&pools, "pool", "embedded pool `DIR` (repeatable)")
	dedupPath := fs.String("dedup", "", "`FILE` dedup.jsonl of the pool: only kept rows are retrieved")
	var sets multi
	fs.Var(&sets, "curated", "embedded curated set `DIR` (repeatable)")
	out := fs.String("out", "", "output `DIR`")
	mode := fs.String("mode", "auto", "retrieval: sample, cluster, auto or balanced")
	small := fs.Int("small", 1000, "auto mode: sets with fewer images use cluster retrieval")
	k := fs.Int("k", 4, "sample retrieval: pool images per curated image (1..32)")
	clusters := fs.Int("clusters", 1000, "cluster retrieval: k-means clusters of the pool")
	sample := fs.Int("kmeans-sample", 200000, "cluster and balanced: pool rows the k-means is fitted on")
	iters := fs.Int("kmeans-iters", 20, "cluster and balanced: Lloyd iterations")
	restarts := fs.Int("kmeans-restarts", 1, "cluster: fit k-means this many times from different seeds and keep the least inertia")
	minCur := fs.Int("min-curated", 3, "cluster retrieval: a cluster must hold more curated images than this")
	perCluster := fs.Int("per-cluster", 10000, "cluster retrieval: pool images taken per cluster")
	capN := fs.Int("cap", 1000000, "retrieved images kept per curated set")
	seed := fs.Uint64("seed", 0, "random seed (k-means, cluster sampling)")
	maxRows := fs.Int("max-rows", 65536, "rows of each side of a search held in memory at once")
	count := fs.Int("count", 0, "balanced: pool images to sample")
	levelsFlag := fs.String("levels", "1000,100,10", "balanced: hierarchical k-means clusters per level, finest first")
	resample := fs.Int("resample", 1, "balanced: resampling rounds per level (refits on the points nearest each centroid)")
	resamplePoints := fs.Int("resample-points", 0, "balanced: points per cluster in a resampling round (0: half the mean cluster size)")
	if err := parse(fs, args); err != nil {
		return err
	}
	levels, err := parseLevels(*levelsFlag)
	switch {
	case *mode == "balanced" && (len(pools) == 0 || *out == "" || *count < 1 || len(sets) > 0):
		return usageErr(stderr, "retrieve", "--mode balanced needs --pool, --out and --count >= 1, and takes no --curated")
	case *mode == "balanced" && err != nil:
		return usageErr(stderr, "retrieve", "%v", err)
	case *mode != "balanced" && (len(pools) == 0 || *out == "" || len(sets) == 0):
		return usageErr(stderr, "retrieve", "--pool, --curated and --out are required")
	case *mode != "sample" && *mode != "cluster" && *mode != "auto" && *mode != "balanced":
		return usageErr(stderr, "retrieve", "--mode %q: want sample, cluster, auto or balanced", *mode)
	case *k < 1 || *k > 32:
		return usageErr(stderr, "retrieve", "--k %d, want 1..32", *k)
	}
	p, err := openPool(pools...)
	if err != nil {
		return err
	}
	defer p.rows.Close()
	n := p.rows.Len()
	keep := make([]bool, n)
	for i := range keep {
		keep[i] = true
	}
	if *dedupPath != "" {
		if keep, err = readKeep(*dedupPath, p); err != nil {
			return err
		}
	}
	allow := func(i int) bool { return keep[i] }
	rep := retrieveReport{Pool: n}
	for _, v := range keep {
		if v {
			rep.Candidates++
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	dev, err := gpu.Open()
	if err != nil {
		return err
	}
	defer dev.Close()

	var km *curate.KMeans
	var poolCluster []int
	cluster := func() error { // the pool's k-means, fitted once on first use
		if km != nil {
			return nil
		}
		x, err := sampleRows(p.rows, *sample, *seed)
		if err != nil {
			return err
		}
		kk := min(*clusters, len(x)/p.rows.Dim())
		fmt.Fprintf(stderr, "k-means: %d clusters on %d pool rows, %d iterations\n", kk, len(x)/p.rows.Dim(), *iters)
		if km, err = curate.KMeansFit(ctx, dev, x, p.rows.Dim(), curate.KMeansOpts{K: kk, Iters: *iters, Seed: *seed, MaxRows: *maxRows, Restarts: *restarts}); err != nil {
			return err
		}
		poolCluster, _, err = km.Predict(ctx, dev, p.rows, *maxRows)
		return err
	}
	var manifest []manifestRow
	if *mode == "balanced" {
		o := balancedOpts{count: *count, sample: *sample, iters: *iters, resample: *resample, resamplePoints: *resamplePoints,
			maxRows: *maxRows, levels: levels, seed: *seed}
		if manifest, err = balancedSample(ctx, dev, p, keep, o, stderr); err != nil {
			return err
		}
		rep.Balanced = len(manifest)
		fmt.Fprintf(stdout, "balanced sampling: %d pool images\n", rep.Balanced)
	}
	taken := map[int]bool{}
	for _, dir := range sets {
		s, err := openPool(dir)
		if err != nil {
			return err
		}
		defer s.rows.Close()
		if s.rows.Dim() != p.rows.Dim() {
			return fmt.Errorf("%s has embeddings of %d dimensions, the pool %d: embed both with the same model", dir, s.rows.Dim(), p.rows.Dim())
		}
		if err := p.sameKind(s); err != nil {
			return err
		}
		source := s.ids[0].Source
		sr := setReport{Source: source, Curated: s.rows.Len(), Mode: *mode}
		if sr.Mode == "auto" {
			sr.Mode = "sample"
			if s.rows.Len() < *small {
				sr.Mode = "cluster"
			}
		}
		for _, id := range s.ids {
			manifest = append(manifest, manifestRow{Path: id.Path, Source: source, Reason: "curated", Similarity: 1, Cluster: -1})
		}
		var hits []curate.Hit
		if sr.Mode == "sample" {
			if hits, err = curate.SampleRetrieve(ctx, dev, s.rows, p.rows, *k, allow, *maxRows); err != nil {
				return err
			}
		} else {
			if err := cluster(); err != nil {
				return err
			}
			ca, _, err := km.Predict(ctx, dev, s.rows, *maxRows)
			if err != nil {
				return err
			}
			hits = curate.ClusterRetrieve(poolCluster, ca, *minCur, *perCluster, allow, *seed)
		}
		sr.Retrieved = len(hits)
		if len(hits) > *capN {
			if sr.Mode == "sample" {
				slices.SortStableFunc(hits, func(a, b curate.Hit) int { return cmpDesc(a.Sim, b.Sim) })
			} else {
				r := newShuffle(*seed)
				r.Shuffle(len(hits), func(i, j int) { hits[i], hits[j] = hits[j], hits[i] })
			}
			hits = hits[:*capN]
			slices.SortFunc(hits, func(a, b curate.Hit) int { return a.Pool - b.Pool })
		}
		sr.Capped = len(hits)
		for _, h := range hits {
			if taken[h.Pool] {
				continue
			}
			taken[h.Pool] = true
			sr.New++
			m := manifestRow{Path: p.ids[h.Pool].Path, Source: source, Reason: "retrieved-" + sr.Mode, Similarity: h.Sim, Cluster: h.Cluster}
			if h.Curated >= 0 {
				m.Query = s.ids[h.Curated].Path
			}
			manifest = append(manifest, m)
		}
		rep.Sets = append(rep.Sets, sr)
		fmt.Fprintf(stdout, "%s: %d curated images, %s retrieval: %d pool images (%d after the cap, %d new)\n",
			source, sr.Curated, sr.Mode, sr.Retrieved, sr.Capped, sr.New)
	}
	rep.Manifest = len(manifest)
	if err := writeJSONL(filepath.Join(*out, "manifest.jsonl"), manifest); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(*out, "report.json"), rep); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pool %d images, %d candidates after dedup; manifest: %d images in %s\n",
		n, rep.Candidates, rep.Manifest, filepath.Join(*out, "manifest.jsonl"))
	return nil
}

func cmpDesc(a, b float32) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// readKeep reads the keep flags of dedup.jsonl, checking it belongs to p.
func readKeep(path string, p *pool) ([]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	keep := make([]bool, len(p.ids))
	seen := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r dedupRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if r.Row < 0 || r.Row >= len(keep) || p.ids[r.Row].Path != r.Path {
			return nil, fmt.Errorf("%s: row %d (%s) is not in the pool %s", path, r.Row, r.Path, p.dir)
		}
		keep[r.Row] = r.Keep
		seen++
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if seen != len(keep) {
		return nil, fmt.Errorf("%s has %d rows, the pool %d: rerun curate dedup", path, seen, len(keep))
	}
	return keep, nil
}

// sampleRows reads up to n rows of r chosen at random (all when r is
// smaller), in row order.
func sampleRows(r curate.Rows, n int, seed uint64) ([]float32, error) {
	d := r.Dim()
	idx := newShuffle(seed).Perm(r.Len())
	if n < len(idx) {
		idx = idx[:n]
	}
	slices.Sort(idx)
	x := make([]float32, len(idx)*d)
	for j, i := range idx {
		if err := r.Read(i, i+1, x[j*d:(j+1)*d]); err != nil {
			return nil, err
		}
	}
	return x, nil
}
