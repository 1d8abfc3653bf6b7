package main

import (
	"context"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/webdino/webdino/curate"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/embed"
	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
)

const calibrateUsage = `usage: curate calibrate --model FILE --out DIR (--fashion-mnist | INPUT...) [flags]

Measures how well self-deduplication finds copies among your own images
with this model, so that you can choose curate dedup's --threshold: it
samples --n images of the INPUTs (folders, files, --list files) or of
Fashion-MNIST's test split, plants 1-3 edited copies of --groups of them
(exact copy, left-right flip, crop of 75-90% of each side resized back,
contrast and brightness x0.7-1.3, JPEG at quality 30-70), embeds everything
(CLS token, as curate embed) and deduplicates at every --thresholds value
with the --k nearest neighbours.

--mirror and --whiten score the descriptors of curate embed --mirror and
the comparison of curate dedup --whiten (fitted here on the sampled
images and their copies).

--verify adds curate dedup --verify's check by aligned pixels to the
cosine's edges, with the same flags.

Precision is the fraction of dropped images that are planted copies,
recall the fraction of planted copies dropped. Natural duplicates among
the sampled images count against precision.

Outputs in DIR:
  calibrate.jsonl  one line per threshold: {"threshold", "precision",
                   "recall", "f1", "kept", "dropped", "recall_by_edit"}
  calibrate.png    precision and recall against the threshold
  reach.json       {"k", "reach_by_edit"}: per edit, the fraction of copies
                   joined to their original or a sibling copy by an edge
                   of the --k nearest-neighbour graph: no threshold finds
                   more, except through chains of wrong edges (a low figure
                   means the descriptors miss that edit, and no threshold
                   will help)
  verified.jsonl   with --verify: one line per verified pair: {"a", "b",
                   "cosine", "aligned"} (aligned correlations far below
                   --verify-threshold are lower bounds)

Flags:
`

// carefulPrecision is the precision calibrate reports the best recall at.
const carefulPrecision = 0.95

// calibrateRow is one threshold's result.
type calibrateRow struct {
	Threshold    float32            `json:"threshold"`
	Precision    float64            `json:"precision"`
	Recall       float64            `json:"recall"`
	F1           float64            `json:"f1"`
	Kept         int                `json:"kept"`
	Dropped      int                `json:"dropped"`
	RecallByEdit map[string]float64 `json:"recall_by_edit"`
}

func calibrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("calibrate", calibrateUsage, stderr)
	model := fs.String("model", "", "webdino checkpoint `FILE`")
	out := fs.String("out", "", "output `DIR` (created if missing)")
	fmnist := fs.Bool("fashion-mnist", false, "sample Fashion-MNIST's test split ("+data.FashionMNISTDir+") instead of INPUTs")
	var lists multi
	fs.Var(&lists, "list", "a list `FILE` of image paths (repeatable)")
	n := fs.Int("n", 2000, "originals sampled")
	groups := fs.Int("groups", 500, "originals that get planted copies")
	editList := fs.String("edits", "copy,flip,crop,jitter,jpeg", "planted edits, comma-separated")
	thresholds := fs.String("thresholds", "0.3,0.4,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.92,0.93,0.95,0.97,0.99", "cosine thresholds to score, comma-separated")
	k := fs.Int("k", 64, "nearest neighbours searched per image")
	seed := fs.Uint64("seed", 0, "seed of the sample and the edits")
	var o embed.Options
	fs.IntVar(&o.Batch, "batch", 32, "images per forward pass")
	fs.IntVar(&o.Resize, "resize", 256, "shortest side before the centre crop")
	fs.IntVar(&o.Crop, "crop", 224, "centre crop side (a multiple of the patch size)")
	fs.IntVar(&o.Workers, "workers", 0, "parallel image decoders (0: one per CPU)")
	fs.BoolVar(&o.Mirror, "mirror", false, "flip-invariant descriptors, as curate embed --mirror")
	whiten := fs.Bool("whiten", false, "compare whitened embeddings, as curate dedup --whiten")
	verify := addVerifyFlags(fs, "verify candidate pairs by their aligned pixels, as curate dedup --verify")
	if err := parse(fs, args); err != nil {
		return err
	}
	edits, err := parseEdits(*editList)
	if err != nil {
		return usageErr(stderr, "calibrate", "--edits: %v", err)
	}
	ts, err := parseThresholds(*thresholds)
	if err != nil {
		return usageErr(stderr, "calibrate", "--thresholds: %v", err)
	}
	switch {
	case *model == "":
		return usageErr(stderr, "calibrate", "--model is required")
	case *out == "":
		return usageErr(stderr, "calibrate", "--out is required")
	case *fmnist == (fs.NArg() > 0 || len(lists) > 0):
		return usageErr(stderr, "calibrate", "give either --fashion-mnist or INPUT images, folders or --list files")
	case *n <= 1 || *groups < 1 || *groups > *n:
		return usageErr(stderr, "calibrate", "want --n > 1 and 1 <= --groups <= --n")
	case *k <= 0 || o.Batch <= 0:
		return usageErr(stderr, "calibrate", "--k and --batch must be positive")
	}
	if err := verify.check(stderr, "calibrate"); err != nil {
		return err
	}
	var src data.Dataset
	if *fmnist {
		g, err := data.LoadFashionMNIST(data.FashionMNISTDir, "t10k")
		if err != nil {
			return err
		}
		src = data.GrayDataset{Gray: g, Name: "fashion-mnist/t10k"}
	} else {
		files, err := gather(lists, fs.Args())
		if err != nil {
			return err
		}
		src = files
	}
	if *n > src.Len() {
		return fmt.Errorf("--n %d: only %d images found", *n, src.Len())
	}
	planted, err := curate.NewPlanted(src, *n, *groups, edits, *seed)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}

	dev, err := gpu.Open()
	if err != nil {
		return err
	}
	defer dev.Close()
	m, err := loadModel(dev, *model)
	if err != nil {
		return err
	}
	defer m.Release()
	D := m.Cfg.EmbedDim
	feats := make([]float32, planted.Len()*D)
	present := make([]bool, planted.Len())
	o.Rejects = &data.Rejects{}
	progress := newProgress(stderr, "embed", planted.Len())
	err = embed.Run(ctx, dev, m, planted, o, func(r *embed.Result) error {
		cls := r.Descriptor()
		for j, i := range r.Indices {
			copy(feats[i*D:(i+1)*D], cls[j*D:(j+1)*D])
			present[i] = true
		}
		progress.Add(len(r.Indices))
		return nil
	})
	progress.Finish()
	if err != nil {
		return err
	}
	if o.Rejects.Len() > 0 {
		// An unreadable image and its copies would count as misses:
		// refuse rather than report a skewed figure.
		return fmt.Errorf("%d sampled images could not be read (first: %s); remove them or pick another --seed", o.Rejects.Len(), o.Rejects.List()[0].Path)
	}

	if *whiten {
		w, err := curate.FitWhitening(curate.Mat{Data: feats, D: D}, 0, curate.DefaultWhitenShrink)
		if err != nil {
			return err
		}
		w.Apply(feats)
	}
	truth := planted.Truth()
	var rows []calibrateRow
	fmt.Fprintf(stdout, "%d originals, %d planted copies of %d of them (%v); model %s, mirror %v, whiten %v\n", *n, len(planted.Copies), *groups, edits, *model, o.Mirror, *whiten)
	// One search serves the reach and every threshold.
	blocks, err := curate.SelfNeighbours(ctx, dev, curate.Mat{Data: feats, D: D}, curate.DedupOpts{K: min(*k, planted.Len()-1)})
	if err != nil {
		return err
	}
	var vr verified
	if verify.on {
		if vr, err = verify.run(ctx, dev, blocks, planted.Load, planted.Path, filepath.Join(*out, "verify-rejects.jsonl"), stderr); err != nil {
			return err
		}
		lines := make([]verifiedPair, len(vr.pairs))
		for p, pr := range vr.pairs {
			lines[p] = verifiedPair{A: planted.Path(pr.I), B: planted.Path(pr.J), Cosine: pr.Sim, Aligned: vr.scores[p]}
		}
		if err := writeJSONL(filepath.Join(*out, "verified.jsonl"), lines); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "verified %d neighbour pairs (similarity >= %.2f) at %d px: %d above %.3f\n", vr.report.Pairs, vr.report.Floor, vr.report.Side, vr.report.Copies, vr.report.Threshold)
	}
	reach := searchReach(planted, blocks)
	if err := writeJSON(filepath.Join(*out, "reach.json"), reach); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "copies joined to their original or a sibling by an edge of the %d-nearest-neighbour graph: %s\n", reach.K, byEdit(edits, reach.ByEdit))
	fmt.Fprintf(stdout, "%9s %9s %7s %6s %6s  recall by edit\n", "threshold", "precision", "recall", "f1", "kept")
	for _, t := range ts {
		dd := curate.DedupVerified(planted.Len(), blocks, t, vr.pairs, vr.scores, verify.opts)
		row := calibrateRow{Threshold: t, Kept: dd.Kept(), Dropped: planted.Len() - dd.Kept(), RecallByEdit: map[string]float64{}}
		row.Precision, row.Recall = curate.DropPrecisionRecall(truth, dd.Component)
		if row.Precision+row.Recall > 0 {
			row.F1 = 2 * row.Precision * row.Recall / (row.Precision + row.Recall)
		}
		found, total := map[string]int{}, map[string]int{}
		for i := *n; i < planted.Len(); i++ {
			e := string(planted.EditOf(i))
			total[e]++
			if !dd.Keep(i) {
				found[e]++
			}
		}
		for _, e := range edits {
			if total[string(e)] > 0 {
				row.RecallByEdit[string(e)] = float64(found[string(e)]) / float64(total[string(e)])
			}
		}
		fmt.Fprintf(stdout, "%9.2f %9.3f %7.3f %6.3f %6d  %s\n", t, row.Precision, row.Recall, row.F1, row.Kept, byEdit(edits, row.RecallByEdit))
		rows = append(rows, row)
	}
	if err := writeJSONL(filepath.Join(*out, "calibrate.jsonl"), rows); err != nil {
		return err
	}
	if err := calibratePlot(filepath.Join(*out, "calibrate.png"), rows); err != nil {
		return err
	}
	best := rows[0]
	for _, r := range rows {
		if r.F1 > best.F1 {
			best = r
		}
	}
	fmt.Fprintf(stdout, "best F1 %.3f at threshold %.2f (precision %.3f, recall %.3f); wrote %s\n",
		best.F1, best.Threshold, best.Precision, best.Recall, filepath.Join(*out, "calibrate.jsonl"))
	// The threshold a careful user wants: few wrongly dropped images.
	var careful *calibrateRow
	for i, r := range rows {
		if r.Precision >= carefulPrecision && (careful == nil || r.Recall > careful.Recall) {
			careful = &rows[i]
		}
	}
	if careful != nil {
		fmt.Fprintf(stdout, "highest recall at precision >= %.2f: %.3f at threshold %.2f\n", carefulPrecision, careful.Recall, careful.Threshold)
	} else {
		fmt.Fprintf(stdout, "no threshold reaches precision %.2f\n", carefulPrecision)
	}
	return nil
}

// calibrateReach is reach.json: per edit, the fraction of planted copies
// joined to their original or a sibling copy by an edge of the K
// nearest-neighbour graph (curate.Planted.Reach).
type calibrateReach struct {
	K      int                `json:"k"`
	ByEdit map[string]float64 `json:"reach_by_edit"`
}

// searchReach measures how many planted copies the self-dedup search
// (curate.SelfNeighbours' blocks) reaches.
func searchReach(planted *curate.Planted, blocks []eval.Block) calibrateReach {
	nearest := make([][]int, planted.Len())
	K := 0
	for _, b := range blocks {
		K = b.K
		for r := 0; r*b.K < len(b.Index); r++ {
			nearest[b.First+r] = b.Index[r*b.K : (r+1)*b.K]
		}
	}
	r := calibrateReach{K: K - 1, ByEdit: map[string]float64{}} // the image itself is among them
	for e, v := range planted.Reach(func(i int) []int { return nearest[i] }) {
		r.ByEdit[string(e)] = v
	}
	return r
}

// byEdit formats per-edit fractions in the order of edits.
func byEdit(edits []curate.Edit, v map[string]float64) string {
	var by []string
	for _, e := range edits {
		if f, ok := v[string(e)]; ok {
			by = append(by, fmt.Sprintf("%s %.3f", e, f))
		}
	}
	return strings.Join(by, ", ")
}

func parseEdits(s string) ([]curate.Edit, error) {
	var edits []curate.Edit
	for _, f := range strings.Split(s, ",") {
		e := curate.Edit(strings.TrimSpace(f))
		if !slices.Contains(curate.Edits, e) {
			return nil, fmt.Errorf("unknown edit %q (want some of %v)", e, curate.Edits)
		}
		edits = append(edits, e)
	}
	return edits, nil
}

func parseThresholds(s string) ([]float32, error) {
	var ts []float32
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 32)
		if err != nil || v <= -1 || v >= 1 {
			return nil, fmt.Errorf("%q is not a cosine threshold in (-1, 1)", f)
		}
		ts = append(ts, float32(v))
	}
	return ts, nil
}

// calibratePlot draws precision and recall against the threshold.
func calibratePlot(path string, rows []calibrateRow) error {
	p := plot.New()
	p.Title.Text = "self-deduplication of planted copies"
	p.X.Label.Text = "cosine threshold"
	p.Y.Min, p.Y.Max = 0, 1.02
	for _, s := range []struct {
		name string
		get  func(calibrateRow) float64
		c    color.RGBA
	}{
		{"precision", func(r calibrateRow) float64 { return r.Precision }, color.RGBA{31, 119, 180, 255}},
		{"recall", func(r calibrateRow) float64 { return r.Recall }, color.RGBA{255, 127, 14, 255}},
		{"F1", func(r calibrateRow) float64 { return r.F1 }, color.RGBA{0, 0, 0, 255}},
	} {
		pts := make(plotter.XYs, len(rows))
		for i, r := range rows {
			pts[i].X, pts[i].Y = float64(r.Threshold), s.get(r)
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		l.Color, sc.Color = s.c, s.c
		p.Add(l, sc)
		p.Legend.Add(s.name, l)
	}
	p.Legend.Left, p.Legend.Top = true, false
	p.Add(plotter.NewGrid())
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

// verifiedPair is a line of verified.jsonl.
type verifiedPair struct {
	A       string  `json:"a"`
	B       string  `json:"b"`
	Cosine  float32 `json:"cosine"`
	Aligned float64 `json:"aligned"`
}
