// Command eval measures the quality of a webdino backbone's frozen
// features on a labelled image set: weighted k-NN and a linear probe.
//
//	eval --model MODEL.msgpack --train DIR --test DIR [flags]
//
// Run it with --help for the details.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/embed"
	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/gpu/lavapipe"
	"github.com/webdino/webdino/nn"
)

func main() {
	if err := lavapipe.Restart(); err != nil {
		fmt.Fprintln(os.Stderr, "eval:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: eval --model MODEL.msgpack (--train DIR --test DIR | --fashion-mnist) [flags]

Evaluates a webdino backbone's frozen features on labelled images, as the
DINOv2 paper does:

  k-NN          cosine similarity of L2-normalised features, the --k nearest
                training images vote with weights exp(similarity / --temperature)
                (paper: k = 20, T = 0.07)
  linear probe  a linear classifier on the features trained by SGD for a grid
                of learning rates at once, the best chosen on 10% of the
                training images held out, reported on the test set

--train and --test are ImageFolder trees ROOT/CLASS/**/IMAGE (class folders
sorted by name; both must have the same classes). --fashion-mnist uses the
Fashion-MNIST splits instead (Debian's dataset-fashion-mnist).

Features: the CLS token (through the final norm). --last-blocks N and
--avgpool build the reference linear evaluation's inputs instead: the CLS
tokens of the last N blocks, concatenated (earliest first), then the mean of
the last block's patch tokens. Both evaluations use the same features.

Preprocessing is the reference's evaluation transform: shortest side to
--resize (bicubic), centre crop --crop, ImageNet normalisation. Unreadable
images are skipped and counted. The result is printed, and written as one
JSON object to --json FILE when given.

Flags:
`

type options struct {
	model, trainDir, testDir, jsonOut string
	fashion, noKNN, noLinear          bool
	k                                 int
	temperature                       float64
	batch, resize, crop               int
	trainN, testN                     int
	lastBlocks                        int
	avgpool                           bool
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.model, "model", "", "webdino checkpoint (required)")
	fs.StringVar(&o.trainDir, "train", "", "labelled training images (ImageFolder)")
	fs.StringVar(&o.testDir, "test", "", "labelled test images (ImageFolder)")
	fs.BoolVar(&o.fashion, "fashion-mnist", false, "use the Fashion-MNIST train and test splits")
	fs.BoolVar(&o.noKNN, "no-knn", false, "skip the k-NN evaluation")
	fs.BoolVar(&o.noLinear, "no-linear", false, "skip the linear probe")
	fs.IntVar(&o.k, "k", 20, "neighbours of the k-NN vote")
	fs.Float64Var(&o.temperature, "temperature", 0.07, "k-NN vote temperature")
	fs.IntVar(&o.batch, "batch", 64, "images per forward pass")
	fs.IntVar(&o.resize, "resize", 0, "shortest side before the crop (default: crop * 256/224)")
	fs.IntVar(&o.crop, "crop", 0, "centre crop (default: 224, or 28 for Fashion-MNIST)")
	fs.IntVar(&o.trainN, "train-n", 0, "use the first N training images (0: all)")
	fs.IntVar(&o.testN, "test-n", 0, "use the first N test images (0: all)")
	fs.StringVar(&o.jsonOut, "json", "", "also write the result as JSON to this file")
	fs.IntVar(&o.lastBlocks, "last-blocks", 1, "concatenate the CLS tokens of the last N blocks (the reference's linear evaluation: 1 or 4)")
	fs.BoolVar(&o.avgpool, "avgpool", false, "append the mean of the last block's patch tokens to the features")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	case o.model == "":
		return nil, fmt.Errorf("--model is required (see --help)")
	case !o.fashion && (o.trainDir == "" || o.testDir == ""):
		return nil, fmt.Errorf("give --train and --test, or --fashion-mnist (see --help)")
	case o.noKNN && o.noLinear:
		return nil, fmt.Errorf("--no-knn and --no-linear leave nothing to do")
	case o.lastBlocks < 1:
		return nil, fmt.Errorf("--last-blocks %d: want at least 1", o.lastBlocks)
	}
	if o.crop == 0 {
		o.crop = 224
		if o.fashion {
			o.crop = 28
		}
	}
	if o.resize == 0 {
		o.resize = o.crop * 256 / 224
	}
	return o, nil
}

// Result is what eval reports.
type Result struct {
	Model     string   `json:"model"`
	Train     int      `json:"train_images"`
	Test      int      `json:"test_images"`
	Classes   int      `json:"classes"`
	Rejected  int      `json:"rejected_images"`
	Features  string   `json:"features"`
	Dim       int      `json:"feature_dim"`
	KNNTop1   *float64 `json:"knn_top1,omitempty"`
	LinearTop *float64 `json:"linear_top1,omitempty"`
	LinearLR  *float64 `json:"linear_best_lr,omitempty"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "eval:", err)
		return 2
	}
	if err := evaluate(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "eval:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	return 0
}

func (o *options) sets() (train, test data.Dataset, err error) {
	if o.fashion {
		tr, err := data.LoadFashionMNIST(data.FashionMNISTDir, "train")
		if err != nil {
			return nil, nil, err
		}
		te, err := data.LoadFashionMNIST(data.FashionMNISTDir, "t10k")
		if err != nil {
			return nil, nil, err
		}
		return data.GrayDataset{Gray: tr.Subset(o.trainN), Name: "fashion-mnist/train"},
			data.GrayDataset{Gray: te.Subset(o.testN), Name: "fashion-mnist/t10k"}, nil
	}
	open := func(dir string, n int) (*data.Files, error) {
		f, err := data.ScanImageFolder(dir)
		if err != nil {
			return nil, err
		}
		if f.Len() == 0 {
			return nil, fmt.Errorf("%s: no images found", dir)
		}
		if n > 0 && n < f.Len() {
			f.Paths, f.Labels = f.Paths[:n], f.Labels[:n]
		}
		return f, nil
	}
	trf, err := open(o.trainDir, o.trainN)
	if err != nil {
		return nil, nil, err
	}
	tef, err := open(o.testDir, o.testN)
	if err != nil {
		return nil, nil, err
	}
	return trf, tef, nil
}

func evaluate(ctx context.Context, o *options, stdout io.Writer) error {
	trainSet, testSet, err := o.sets()
	if err != nil {
		return err
	}
	dev, err := gpu.Open()
	if err != nil {
		return err
	}
	defer dev.Close()
	model, err := embed.LoadModel(dev, o.model)
	if err != nil {
		return err
	}
	defer model.Release()
	if o.lastBlocks > model.Cfg.Depth {
		return fmt.Errorf("--last-blocks %d: the model has %d blocks", o.lastBlocks, model.Cfg.Depth)
	}
	rejects := &data.Rejects{}
	eo := embed.Options{Batch: o.batch, Resize: o.resize, Crop: o.crop, Rejects: rejects}
	if o.lastBlocks > 1 {
		eo.Layers = o.lastBlocks
	}
	dim := model.Cfg.EmbedDim * o.lastBlocks
	if o.avgpool {
		dim += model.Cfg.EmbedDim
	}
	features := func(ds data.Dataset, what string) (eval.Features, error) {
		f := eval.Features{D: dim}
		prog := data.NewProgress("embed "+what, ds.Len())
		defer prog.Finish()
		err := embed.Run(ctx, dev, model, ds, eo, func(r *embed.Result) error {
			f.X = append(f.X, probeFeatures(r.Out, o.lastBlocks, o.avgpool)...)
			f.Labels = append(f.Labels, r.Labels...)
			prog.Add(len(r.Labels))
			return nil
		})
		return f, err
	}
	tr, err := features(trainSet, "train")
	if err != nil {
		return err
	}
	te, err := features(testSet, "test")
	if err != nil {
		return err
	}
	res := Result{Model: o.model, Train: tr.N(), Test: te.N(), Rejected: rejects.Len(), Features: featureName(o.lastBlocks, o.avgpool), Dim: dim}
	for _, l := range append(append([]int(nil), tr.Labels...), te.Labels...) {
		if l < 0 {
			return fmt.Errorf("unlabelled image in the evaluation sets")
		}
		res.Classes = max(res.Classes, l+1)
	}
	fmt.Fprintf(stdout, "%s (%s): %d train, %d test images, %d classes", o.model, model.Cfg, res.Train, res.Test, res.Classes)
	if res.Rejected > 0 {
		fmt.Fprintf(stdout, ", %d unreadable images skipped", res.Rejected)
	}
	fmt.Fprintf(stdout, "; features: %s (%d values)\n", res.Features, dim)
	if !o.noKNN {
		acc, err := eval.KNNAccuracy(ctx, dev, tr.X, tr.Labels, te.X, te.Labels, tr.D, eval.KNNOpts{K: o.k, T: o.temperature, Classes: res.Classes})
		if err != nil {
			return err
		}
		res.KNNTop1 = &acc
		fmt.Fprintf(stdout, "k-NN (k=%d, T=%g): top-1 %.2f%%\n", o.k, o.temperature, 100*acc)
	}
	if !o.noLinear {
		po := eval.DefaultProbe(res.Classes)
		po.Progress = data.NewProgress("linear probe", po.Steps(tr.N()))
		pr, err := eval.LinearProbe(ctx, dev, tr, te, po)
		po.Progress.Finish()
		if err != nil {
			return err
		}
		lr := pr.LRs[pr.Best]
		res.LinearTop, res.LinearLR = &pr.Acc, &lr
		fmt.Fprintf(stdout, "linear probe: top-1 %.2f%% (best learning rate %g of %d)\n", 100*pr.Acc, lr, len(pr.LRs))
	}
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// probeFeatures builds each image's features from a forward pass, as the
// reference's linear evaluation does: the CLS tokens of the last few
// blocks (through the final norm), earliest first, then with avgpool the
// mean of the last block's patch tokens: [B, (blocks + 1 if avgpool) D].
func probeFeatures(o *nn.Output, blocks int, avgpool bool) []float32 {
	cls := [][]float32{o.ClsToken()}
	if blocks > 1 {
		cls = cls[:0]
		for i := range blocks {
			cls = append(cls, o.IntermediateClsToken(i))
		}
	}
	var patches []float32
	if avgpool {
		patches = o.PatchTokens()
	}
	D, per := o.D, len(cls)
	if avgpool {
		per++
	}
	out := make([]float32, 0, o.B*per*D)
	for b := range o.B {
		for _, c := range cls {
			out = append(out, c[b*D:(b+1)*D]...)
		}
		if avgpool {
			mean := make([]float64, D)
			for n := range o.N {
				for d, v := range patches[(b*o.N+n)*D : (b*o.N+n+1)*D] {
					mean[d] += float64(v)
				}
			}
			for _, v := range mean {
				out = append(out, float32(v/float64(o.N)))
			}
		}
	}
	return out
}

// featureName describes the features for the report.
func featureName(blocks int, avgpool bool) string {
	name := "CLS"
	if blocks > 1 {
		name = fmt.Sprintf("CLS of the last %d blocks", blocks)
	}
	if avgpool {
		name += " + mean patch token"
	}
	return name
}
