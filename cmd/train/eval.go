package main

import (
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/embed"
	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/viz"
)

// labelled opens an evaluation set: an ImageFolder tree, or a Fashion-MNIST
// split when dir is empty and the run trains on Fashion-MNIST; the first n
// images (all when n is 0).
func (s *session) labelled(dir, split string, n int) (data.Dataset, error) {
	if dir == "" {
		if s.o.data != "" {
			return nil, nil
		}
		g, err := data.LoadFashionMNIST(data.FashionMNISTDir, split)
		if err != nil {
			return nil, err
		}
		return data.GrayDataset{Gray: g.Subset(n), Name: "fashion-mnist/" + split}, nil
	}
	f, err := data.ScanImageFolder(dir)
	if err != nil {
		return nil, err
	}
	if n > 0 && n < len(f.Paths) {
		f.Paths, f.Labels = f.Paths[:n], f.Labels[:n]
	}
	return f, nil
}

// embedOpts is the evaluation transform at the training resolution.
func (s *session) embedOpts() embed.Options {
	g := s.c.Augment.GlobalSize
	return embed.Options{Batch: 256, Resize: g * 256 / 224, Crop: g, Workers: s.o.workers}
}

// features embeds ds with the teacher backbone: CLS features and labels,
// and with pixels also the normalised model inputs (the raw-pixel baseline).
func (s *session) features(ctx context.Context, ds data.Dataset, pixels bool) (cls, px []float32, labels []int, err error) {
	o := s.embedOpts()
	o.Pixels = pixels
	err = embed.Run(ctx, s.dev, s.tr.Teacher.Backbone, ds, o, func(r *embed.Result) error {
		cls = append(cls, r.Out.ClsToken()...)
		px = append(px, r.Pixels...)
		labels = append(labels, r.Labels...)
		return nil
	})
	return cls, px, labels, err
}

// evaluate runs the k-NN evaluation of the teacher (k = 20, T = 0.07,
// cosine on normalised CLS), when labelled sets are available.
func (s *session) evaluate(ctx context.Context) error {
	trainSet, err := s.labelled(s.o.knnTrain, "train", s.o.knnTrainN)
	if err != nil || trainSet == nil {
		return err
	}
	testSet, err := s.labelled(s.o.knnTest, "t10k", s.o.knnTestN)
	if err != nil || testSet == nil {
		return err
	}
	// The first evaluation also measures the raw-pixel baseline: the same
	// k-NN on the normalised model inputs.
	first := len(s.evals) == 0
	trF, trP, trL, err := s.features(ctx, trainSet, first)
	if err != nil {
		return fmt.Errorf("k-NN features: %w", err)
	}
	teF, teP, teL, err := s.features(ctx, testSet, first)
	if err != nil {
		return fmt.Errorf("k-NN features: %w", err)
	}
	classes := 0
	for _, l := range append(append([]int(nil), trL...), teL...) {
		classes = max(classes, l+1)
	}
	acc, err := eval.KNNAccuracy(ctx, s.dev, trF, trL, teF, teL, s.c.Model.EmbedDim, eval.DefaultKNN(classes))
	if err != nil {
		return err
	}
	r := evalRecord{Step: s.tr.StepsDone, KNNTop1: acc, Train: len(trL), Test: len(teL)}
	if first {
		raw, err := eval.KNNAccuracy(ctx, s.dev, trP, trL, teP, teL, len(trP)/len(trL), eval.DefaultKNN(classes))
		if err != nil {
			return err
		}
		r.RawPixels = &raw
		fmt.Fprintf(s.stdout, "raw pixels (the model's %dx%d inputs): k-NN top-1 %.2f%%\n", s.c.Augment.GlobalSize, s.c.Augment.GlobalSize, 100*raw)
	}
	s.evals = append(s.evals, r)
	s.enc.Encode(r)
	fmt.Fprintf(s.stdout, "step %d: k-NN top-1 %.2f%% (k=20, %d train, %d test images)\n", r.Step, 100*acc, r.Train, r.Test)
	return nil
}

// summary is the closing line of the k-NN evaluations.
func (s *session) summary() string {
	if len(s.evals) == 0 {
		return ""
	}
	first, last := s.evals[0], s.evals[len(s.evals)-1]
	text := fmt.Sprintf("k-NN top-1: %.2f%% at step %d -> %.2f%% at step %d", 100*first.KNNTop1, first.Step, 100*last.KNNTop1, last.Step)
	if first.RawPixels != nil {
		text += fmt.Sprintf(" (raw pixels %.2f%%)", 100**first.RawPixels)
	}
	return text
}

// pictures writes PCA pictures (paper Figure 1) of the first test images,
// one PCA fitted jointly over them.
func (s *session) pictures(ctx context.Context) error {
	if s.o.pcaN <= 0 {
		return nil
	}
	ds, err := s.labelled(s.o.knnTest, "t10k", s.o.pcaN)
	if err != nil || ds == nil {
		return err
	}
	o := s.embedOpts()
	o.Pixels = true
	var patches []viz.Patches
	var inputs []image.Image
	D := s.c.Model.EmbedDim
	err = embed.Run(ctx, s.dev, s.tr.Teacher.Backbone, ds, o, func(r *embed.Result) error {
		pt := r.Out.PatchTokens()
		per := r.Out.N * D
		for i := 0; i < r.Out.B; i++ {
			patches = append(patches, viz.Patches{Feat: pt[i*per : (i+1)*per], GH: r.Out.GridH, GW: r.Out.GridW})
			px := r.Pixels[i*3*r.H*r.W : (i+1)*3*r.H*r.W]
			im, err := viz.FromCHW(px, r.H, r.W, embed.Norm.Mean, embed.Norm.Std)
			if err != nil {
				return err
			}
			scale := max(1, 224/max(r.H, r.W))
			inputs = append(inputs, viz.Upsample(im, r.W*scale, r.H*scale))
		}
		return nil
	})
	if err != nil {
		return err
	}
	figs, err := viz.PCAFigure(patches, D, viz.FigureOpts{})
	if err != nil {
		return err
	}
	dir := outPath(s.o, "pca")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var tiles []image.Image
	for i, f := range figs {
		pic := viz.FigurePicture(inputs[i], f, 4)
		tiles = append(tiles, pic)
		if err := writePNG(filepath.Join(dir, fmt.Sprintf("%03d.png", i)), pic); err != nil {
			return err
		}
	}
	grid := viz.Tile(2, 8, tiles...)
	if err := writePNG(filepath.Join(dir, "grid.png"), grid); err != nil {
		return err
	}
	fmt.Fprintf(s.stdout, "PCA pictures of %d test images: %s\n", len(figs), dir)
	return nil
}

func writePNG(path string, img image.Image) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
