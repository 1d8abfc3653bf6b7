package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/webdino/webdino/curate"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
)

const dedupUsage = `usage: curate dedup --pool POOL... --out DIR [--eval EVAL]... [flags]

Deduplicates the embedded pool (the --out of curate embed; several --pool
directories form one pool, in flag order):

  self      every image is linked to those of its --k nearest neighbours
            with cosine similarity above --threshold; in each connected
            component the image with the lowest row is kept, the others
            are duplicates of it
  relative  with --eval (embedded evaluation sets, repeatable), every
            pool image more similar than --eval-threshold to an
            evaluation image is dropped, with its whole copy component

Outputs in DIR:
  dedup.jsonl     one line per pool row: {"row", "path", "source", "keep",
                  "reason" (kept, duplicate, eval-duplicate), "similarity"
                  (to the nearest other pool image, or to the evaluation
                  image for eval-duplicate), "of" (that image's path),
                  "component" (the kept row of the copy component)}
  report.json     counts per stage and the settings
  nn-similarity.png  histogram of every image's nearest-neighbour
                  similarity with the thresholds marked
  dup-groups.png  the largest duplicate groups, one per row, kept image
                  first (images that cannot be read are grey)
  verify-rejects.jsonl  with --verify: images that could not be read
                  ({"path", "problem", "reason"})

With --whiten, similarities are cosines of whitened embeddings: the
pool's mean is removed and every principal direction scaled to unit
variance (fitted on up to --whiten-sample pool rows; the whitened rows are
written to DIR/whitened while the searches run), so that the few
directions all images share no longer make unrelated images look alike.
Thresholds then mean something else: choose them with curate calibrate
--whiten. Pools embedded with --mirror (flip-invariant) find mirrored
copies too; the same calibration tells how much either helps.

With --verify, neighbour pairs whose similarity is at least
--verify-floor are also checked by their pixels: grey thumbnails of both
(--verify-side pixels, or the smaller images' own side), one cut to every
box of at least --verify-min-scale of each side and resized to the other,
aligned to an eighth of a pixel on the GPU, both ways round and with
--verify-mirror (the default) mirrored as well. Pairs whose best normalised
correlation passes --verify-threshold are copies whatever their cosine:
this finds crops and rescaled copies that descriptors of small images place
far apart, and its threshold means the same for every model (curate
calibrate --verify measures it). Verified pairs add edges; they remove
none. Images that cannot be read are listed in verify-rejects.jsonl and
their pairs keep the cosine's verdict. All neighbour lists are held in
memory while the pairs are chosen.

The searches are exact and stream both sides in blocks of --max-rows rows
(GPU and CPU memory stay bounded). For pools of millions, --index ivf finds
the self-dedup neighbours through an inverted-file index instead: about
--nprobe / --lists of the exact work, at some loss of recall (bench curate
reports recall@10 against exact search). The pool streams from disk; the
index's lists are held on the GPU, and on the CPU while they are packed.
With --ivf-int8 the lists are 8-bit codes, a quarter of the memory (for
10M images of 384 dimensions 3.8 GB instead of 15.4); every similarity that
may exceed --threshold is then recomputed exactly from the pool's rows, so
the copy graph is decided on exact values.

Flags:
`

// dedupRow is one line of dedup.jsonl.
type dedupRow struct {
	Row        int     `json:"row"`
	Path       string  `json:"path"`
	Source     string  `json:"source"`
	Keep       bool    `json:"keep"`
	Reason     string  `json:"reason"`
	Similarity float32 `json:"similarity"`
	Of         string  `json:"of,omitempty"`
	Component  int     `json:"component"`
}

// dedupReport is report.json of dedup.
type dedupReport struct {
	Pool           int           `json:"pool"`
	AfterSelf      int           `json:"after_self_dedup"`
	Groups         int           `json:"duplicate_groups"`
	EvalDropped    int           `json:"eval_dropped"`
	Kept           int           `json:"kept"`
	K              int           `json:"k"`
	Threshold      float32       `json:"threshold"`
	EvalThreshold  float32       `json:"eval_threshold"`
	Evals          []string      `json:"evals,omitempty"`
	EvalImages     int           `json:"eval_images"`
	Index          string        `json:"index"`              // exact or ivf
	NProbe         int           `json:"nprobe,omitempty"`   // ivf: lists searched per image
	IVFInt8        bool          `json:"ivf_int8,omitempty"` // ivf: 8-bit lists, edges re-scored exactly
	Whiten         bool          `json:"whiten"`             // similarities of whitened embeddings
	Mirror         bool          `json:"mirror"`             // flip-invariant descriptors (embed --mirror)
	SelfSeconds    float64       `json:"self_seconds"`
	Verify         *verifyReport `json:"verify,omitempty"`
	RelativeSecond float64       `json:"relative_seconds"`
}

func dedupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("dedup", dedupUsage, stderr)
	var pools multi
	fs.Var(&pools, "pool", "embedded pool `DIR` (curate embed --out; repeatable, earlier pools win ties)")
	out := fs.String("out", "", "output `DIR`")
	var evals multi
	fs.Var(&evals, "eval", "embedded evaluation set `DIR` (repeatable)")
	o := curate.DefaultDedup
	fs.IntVar(&o.K, "k", o.K, "nearest neighbours per image, 1..64 (the search returns at most 64 rows, the image itself among them: k = 64 links 63 others)")
	thr := fs.Float64("threshold", float64(o.Threshold), "cosine similarity above which two images are copies")
	evalThr := fs.Float64("eval-threshold", curate.DefaultRelativeThreshold, "similarity to an evaluation image above which a pool image is dropped")
	fs.IntVar(&o.MaxRows, "max-rows", 65536, "rows of each side of a search held in memory at once")
	groups := fs.Int("groups", 8, "duplicate groups drawn in dup-groups.png (0: no picture)")
	index := fs.String("index", "exact", "self-dedup search: exact, or ivf (an inverted-file index over the pool, its lists on the GPU: for pools of millions)")
	lists := fs.Int("lists", 0, "ivf: inverted lists (k-means clusters; 0: sqrt(pool))")
	fs.IntVar(&o.NProbe, "nprobe", 8, "ivf: lists searched per image")
	ivfSample := fs.Int("ivf-sample", 200000, "ivf: pool rows the k-means is fitted on (0: all)")
	ivfInt8 := fs.Bool("ivf-int8", false, "ivf: hold the lists as 8-bit codes (a quarter of the memory; similarities near or above --threshold are recomputed exactly)")
	whiten := fs.Bool("whiten", false, "compare PCA-whitened embeddings (fitted on the pool)")
	whitenSample := fs.Int("whiten-sample", 100000, "--whiten: pool rows the whitening is fitted on, evenly spaced (0: all)")
	verify := addVerifyFlags(fs, "also join neighbours whose pixels match once aligned (crops, resizes: see above)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case len(pools) == 0:
		return usageErr(stderr, "dedup", "--pool is required")
	case *out == "":
		return usageErr(stderr, "dedup", "--out is required")
	case o.K < 1 || o.K > 64:
		return usageErr(stderr, "dedup", "--k %d, want 1..64", o.K)
	case *index != "exact" && *index != "ivf":
		return usageErr(stderr, "dedup", "--index %q, want exact or ivf", *index)
	case *index == "ivf" && (o.NProbe < 1 || *lists < 0 || *ivfSample < 0):
		return usageErr(stderr, "dedup", "--nprobe %d, --lists %d, --ivf-sample %d: want nprobe >= 1, the others >= 0", o.NProbe, *lists, *ivfSample)
	case *whitenSample < 0:
		return usageErr(stderr, "dedup", "--whiten-sample %d, want >= 0", *whitenSample)
	}
	if err := verify.check(stderr, "dedup"); err != nil {
		return err
	}
	if *index == "ivf" {
		o.Index = &curate.IVFOpts{Lists: *lists, Sample: *ivfSample, Seed: 1, Int8: *ivfInt8}
	}
	o.Threshold = float32(*thr)
	p, err := openPool(pools...)
	if err != nil {
		return err
	}
	defer p.rows.Close()
	var ev []*pool
	for _, e := range evals {
		q, err := openPool(e)
		if err != nil {
			return err
		}
		defer q.rows.Close()
		if err := p.sameKind(q); err != nil {
			return err
		}
		ev = append(ev, q)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	var poolRows curate.Rows = p.rows
	var wt *curate.Whitening
	whitened := filepath.Join(*out, "whitened")
	if *whiten {
		if wt, err = curate.FitWhitening(p.rows, *whitenSample, curate.DefaultWhitenShrink); err != nil {
			return fmt.Errorf("%s: %w", p.dir, err)
		}
		defer os.RemoveAll(whitened)
		if err := os.MkdirAll(whitened, 0o755); err != nil {
			return err
		}
		wp, err := curate.WriteWhitened(ctx, p.rows, wt, filepath.Join(whitened, "pool"), o.MaxRows)
		if err != nil {
			return fmt.Errorf("whiten %s: %w", p.dir, err)
		}
		defer wp.Close()
		poolRows = wp
	}
	dev, err := gpu.Open()
	if err != nil {
		return err
	}
	defer dev.Close()

	n := p.rows.Len()
	rep := dedupReport{Pool: n, K: o.K, Threshold: o.Threshold, EvalThreshold: float32(*evalThr), Evals: evals, Index: *index, Whiten: *whiten, Mirror: p.mirror}
	if o.Index != nil {
		rep.NProbe, rep.IVFInt8 = o.NProbe, o.Index.Int8
	}
	progress := newProgress(stderr, "self-dedup (million pairs)", int(int64(n)*int64(n)/1e6))
	last := int64(0)
	o.Progress = func(done, total int64) {
		progress.Add(int(done/1e6 - last))
		last = done / 1e6
	}
	start := time.Now()
	var dd *curate.Dedup
	if verify.on {
		blocks, err := curate.SelfNeighbours(ctx, dev, poolRows, o)
		progress.Finish()
		if err != nil {
			return err
		}
		path := func(r int) string { return p.ids[r].Path }
		load := func(r int) (*data.RGB, error) { return data.LoadImage(path(r), data.DecodeOptions{}) }
		vr, err := verify.run(ctx, dev, blocks, load, path, filepath.Join(*out, "verify-rejects.jsonl"), stderr)
		if err != nil {
			return err
		}
		rep.Verify = &vr.report
		dd = curate.DedupVerified(n, blocks, o.Threshold, vr.pairs, vr.scores, verify.opts)
	} else {
		dd, err = curate.SelfDedup(ctx, dev, poolRows, o)
		progress.Finish()
		if err != nil {
			return err
		}
	}
	rep.SelfSeconds = time.Since(start).Seconds()
	rep.AfterSelf = dd.Kept()
	rep.Groups = len(dd.Groups())

	drop := make([]bool, n)
	var rel *curate.Relative
	var evalIDs []idRow
	if len(ev) > 0 {
		start = time.Now()
		var files []string
		for _, e := range ev {
			files = append(files, e.rows.Paths()...)
			evalIDs = append(evalIDs, e.ids...)
		}
		all, err := curate.OpenShards(files)
		if err != nil {
			return err
		}
		defer all.Close()
		rep.EvalImages = all.Len()
		var evalRows curate.Rows = all
		if wt != nil {
			we, err := curate.WriteWhitened(ctx, all, wt, filepath.Join(whitened, "eval"), o.MaxRows)
			if err != nil {
				return fmt.Errorf("whiten the evaluation sets: %w", err)
			}
			defer we.Close()
			evalRows = we
		}
		if rel, err = curate.RelativeDedup(ctx, dev, poolRows, evalRows, float32(*evalThr), o.MaxRows); err != nil {
			return err
		}
		drop = curate.DropComponents(dd.Component, rel.Drop)
		rep.RelativeSecond = time.Since(start).Seconds()
	}
	rows := make([]dedupRow, n)
	for i := range n {
		r := dedupRow{Row: i, Path: p.ids[i].Path, Source: p.ids[i].Source, Component: dd.Component[i], Similarity: dd.NearestSim[i], Reason: "kept"}
		if dd.Nearest[i] >= 0 {
			r.Of = p.ids[dd.Nearest[i]].Path
		}
		switch {
		case drop[i]:
			r.Reason = "eval-duplicate"
			if rel.Drop(i) {
				r.Similarity, r.Of = rel.NearestSim[i], evalIDs[rel.Nearest[i]].Path
			}
			rep.EvalDropped++
		case !dd.Keep(i):
			r.Reason = "duplicate"
		default:
			r.Keep = true
			rep.Kept++
		}
		rows[i] = r
	}
	if err := writeJSONL(filepath.Join(*out, "dedup.jsonl"), rows); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(*out, "report.json"), rep); err != nil {
		return err
	}
	marks := []float32{o.Threshold}
	if len(ev) > 0 {
		marks = append(marks, float32(*evalThr))
	}
	if err := writePNG(filepath.Join(*out, "nn-similarity.png"), histogram(dd.NearestSim, marks, "nearest-neighbour cosine similarity")); err != nil {
		return err
	}
	if gs := dd.Groups(); *groups > 0 && len(gs) > 0 {
		slices.SortStableFunc(gs, func(a, b []int) int { return len(b) - len(a) })
		gs = gs[:min(len(gs), *groups)]
		paths := make([][]string, len(gs))
		for g, m := range gs {
			for _, i := range m {
				paths[g] = append(paths[g], p.ids[i].Path)
			}
		}
		if err := writePNG(filepath.Join(*out, "dup-groups.png"), groupGrid(paths, 8, 64)); err != nil {
			return err
		}
	}
	similarity := "similarity"
	if *whiten {
		similarity = "whitened similarity"
	}
	fmt.Fprintf(stdout, "pool %d images\nself-dedup (k %d, %s > %.2f): %d kept, %d duplicate groups, %d duplicates removed (%.1fs)\n",
		n, o.K, similarity, o.Threshold, rep.AfterSelf, rep.Groups, n-rep.AfterSelf, rep.SelfSeconds)
	if v := rep.Verify; v != nil {
		fmt.Fprintf(stdout, "verified %d neighbour pairs (similarity >= %.2f) at %d px: %d copies (aligned correlation > %.3f); %d images unreadable (%s)\n",
			v.Pairs, v.Floor, v.Side, v.Copies, v.Threshold, v.Unreadable, filepath.Join(*out, "verify-rejects.jsonl"))
	}
	if len(ev) > 0 {
		fmt.Fprintf(stdout, "relative dedup against %d evaluation images (%s > %.2f): %d removed (%.1fs)\n",
			rep.EvalImages, similarity, *evalThr, rep.EvalDropped, rep.RelativeSecond)
	}
	fmt.Fprintf(stdout, "kept %d of %d: %s\n", rep.Kept, n, filepath.Join(*out, "dedup.jsonl"))
	return nil
}

// defaultVerifyFloor is the lowest neighbour similarity verified: on
// Fashion-MNIST every planted copy that verification finds lies above
// 0.41 with a copy-detection checkpoint (docs/curation.md).
const defaultVerifyFloor = 0.4

// verifyReport is report.json's account of --verify.
type verifyReport struct {
	Floor      float32 `json:"floor"`
	Side       int     `json:"side"`
	MinScale   float64 `json:"min_scale"`
	Mirror     bool    `json:"mirror"`
	Threshold  float64 `json:"threshold"`
	Pairs      int     `json:"pairs"`      // neighbour pairs verified
	Copies     int     `json:"copies"`     // of them, above the threshold
	Unreadable int     `json:"unreadable"` // images that could not be loaded: their pairs keep the cosine's verdict
	Seconds    float64 `json:"seconds"`
}

// verified is verifyNeighbours' result: the pairs verified, their aligned
// correlations and the report.
type verified struct {
	pairs  []curate.Pair
	scores []float64
	report verifyReport
}

// verifyFlags are the --verify flags of dedup and calibrate.
type verifyFlags struct {
	on    bool
	opts  curate.VerifyOpts
	floor float64
	side  int
}

// addVerifyFlags defines the --verify flags on fs; usage is --verify's.
func addVerifyFlags(fs *flag.FlagSet, usage string) *verifyFlags {
	v := &verifyFlags{opts: curate.DefaultVerify}
	fs.BoolVar(&v.on, "verify", false, usage)
	fs.Float64Var(&v.opts.MinScale, "verify-min-scale", v.opts.MinScale, "--verify: smallest crop searched, as a fraction of each side")
	fs.Float64Var(&v.opts.Threshold, "verify-threshold", v.opts.Threshold, "--verify: aligned correlation above which a pair is a copy")
	fs.BoolVar(&v.opts.Mirror, "verify-mirror", v.opts.Mirror, "--verify: search each image mirrored too (mirrored crops are copies)")
	fs.Float64Var(&v.floor, "verify-floor", defaultVerifyFloor, "--verify: cosine at or above which neighbours are verified")
	fs.IntVar(&v.side, "verify-side", curate.DefaultThumbSide, "--verify: thumbnail side pairs are verified at (smaller images: their own)")
	return v
}

// check reports a bad --verify setting as a usage error of command cmd.
func (v *verifyFlags) check(stderr io.Writer, cmd string) error {
	if v.side < 2 || v.side > curate.MaxThumbSide {
		return usageErr(stderr, cmd, "--verify-side %d, want 2..%d", v.side, curate.MaxThumbSide)
	}
	if err := v.opts.Validate(); err != nil {
		return usageErr(stderr, cmd, "--verify-min-scale, --verify-threshold: %v", err)
	}
	return nil
}

// run loads the thumbnails of every neighbour pair at or above the floor
// and verifies the pairs on the GPU. Images that cannot be loaded are
// listed in rejectsPath and their pairs left out.
func (v *verifyFlags) run(ctx context.Context, dev *gpu.Device, blocks []eval.Block, load func(int) (*data.RGB, error), path func(int) string, rejectsPath string, stderr io.Writer) (verified, error) {
	floor, side, vo := float32(v.floor), v.side, v.opts
	start := time.Now()
	res := verified{report: verifyReport{Floor: floor, MinScale: vo.MinScale, Mirror: vo.Mirror, Threshold: vo.Threshold}}
	pairs := curate.CandidatePairs(blocks, floor)
	var rows []int
	seen := map[int]bool{}
	for _, p := range pairs {
		for _, r := range [2]int{p.I, p.J} {
			if !seen[r] {
				seen[r] = true
				rows = append(rows, r)
			}
		}
	}
	thumbs, failed := curate.MakeThumbs(rows, load, side)
	rejects := &data.Rejects{}
	for r, err := range failed {
		rejects.Add(path(r), err)
	}
	if err := writeJSONL(rejectsPath, rejects.List()); err != nil {
		return res, err
	}
	for _, p := range pairs {
		if failed[p.I] == nil && failed[p.J] == nil {
			res.pairs = append(res.pairs, p)
		}
	}
	res.report.Unreadable, res.report.Pairs = len(failed), len(res.pairs)
	if len(res.pairs) > 0 {
		res.report.Side = thumbs[res.pairs[0].I].Side
	}
	progress := newProgress(stderr, "verify", len(res.pairs))
	reported := 0
	scores, err := curate.VerifyPairs(ctx, dev, res.pairs, thumbs, vo, func(done, _ int64) {
		progress.Add(int(done) - reported)
		reported = int(done)
	})
	progress.Finish()
	if err != nil {
		return res, err
	}
	res.scores = scores
	for _, s := range scores {
		if s > vo.Threshold {
			res.report.Copies++
		}
	}
	res.report.Seconds = time.Since(start).Seconds()
	return res, nil
}

func writeJSONL[T any](path string, rows []T) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
