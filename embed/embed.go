// Package embed turns a set of images into backbone features: files are
// decoded in parallel (data.Loader; bad files are skipped and recorded),
// preprocessed on the GPU exactly as the reference evaluates (PIL bicubic
// resize of the shortest side, centre crop, ImageNet normalisation) or
// resized whole to a patch-aligned size, run through the ViT, and handed
// batch by batch, in dataset order, to a sink. cmd/embed, evaluation and
// data curation share it.
package embed

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/webdino/webdino/ckpt"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// Options configure Run. The zero value means the reference's evaluation
// transform at batch 32.
type Options struct {
	Batch  int // images per loader batch and forward pass (32)
	Resize int // shortest side before the centre crop (256)
	Crop   int // centre crop side, a multiple of the patch size (224)
	// AnySize resizes each image whole so that its short side is Short and
	// its long side the nearest patch multiple keeping the aspect ratio
	// (nn.PatchAlignedSize), no crop. Images of one loader batch that get
	// the same size run together; the others run in smaller passes.
	AnySize bool
	Short   int  // any-size short side (Crop)
	Attn0   bool // also return the last block's CLS attention
	// Layers, when positive, also returns the last Layers blocks' outputs
	// through the final norm (Output.Intermediate; DINOv2's linear probe
	// concatenates their CLS tokens).
	Layers int
	Pixels bool // also return the normalised model inputs, for pictures
	// Mirror also runs every image's left-right mirror (Result.Mirror), for
	// descriptors that a flip cannot change (Result.Descriptor).
	Mirror  bool
	Workers int // parallel decoders (GOMAXPROCS)
	// Rejects collects the files that could not be decoded; Run creates
	// one when nil. Data sets with Files take their decode limits from
	// Files.Options.
	Rejects *data.Rejects
}

func (o Options) withDefaults() Options {
	if o.Batch == 0 {
		o.Batch = 32
	}
	if o.Resize == 0 {
		o.Resize = 256
	}
	if o.Crop == 0 {
		o.Crop = 224
	}
	if o.Short == 0 {
		o.Short = o.Crop
	}
	if o.Rejects == nil {
		o.Rejects = &data.Rejects{}
	}
	return o
}

// Result is one forward pass: images of one input size, in dataset order.
type Result struct {
	Indices []int    // dataset indices
	Paths   []string // their paths
	Labels  []int    // their labels (-1 when unlabelled)
	H, W    int      // the model input size
	Out     *nn.Output
	Mirror  *nn.Output // the mirrored images' outputs, when Options.Mirror
	Pixels  []float32  // [B, 3, H, W] normalised inputs, when Options.Pixels
}

// Descriptor is the images' L2-normalised CLS tokens [B, D]; with
// Options.Mirror, the normalised sum of an image's and its mirror's, which
// is the same for the image and its mirror image: the two passes only swap
// (the terms of a float sum commute exactly).
func (r *Result) Descriptor() []float32 {
	d := r.Out.ClsToken()
	D := r.Out.D
	eval.Normalize(d, D)
	if r.Mirror != nil {
		m := r.Mirror.ClsToken()
		eval.Normalize(m, D)
		for i := range d {
			d[i] += m[i]
		}
		eval.Normalize(d, D)
	}
	return d
}

// Norm is the input normalisation Run applies (ImageNet mean and std).
var Norm = nn.ImageNetNorm

// Run embeds every image of ds with model on dev and calls sink once per
// forward pass, in dataset order (with AnySize, passes of one loader batch
// are ordered by their first image). It returns the first error of the
// loader, the GPU or the sink, or ctx.Err() when ctx ends. Files that fail
// to decode are skipped and recorded in o.Rejects.
func Run(ctx context.Context, dev *gpu.Device, model *nn.ViT, ds data.Dataset, o Options, sink func(*Result) error) error {
	o = o.withDefaults()
	P := model.Cfg.PatchSize
	switch {
	case o.Batch < 0:
		return fmt.Errorf("embed: batch %d, want > 0", o.Batch)
	case !o.AnySize && (o.Crop%P != 0 || o.Crop > o.Resize || o.Crop < 0):
		return fmt.Errorf("embed: crop %d of resize %d: the crop must be a positive multiple of the patch size %d and at most the resize", o.Crop, o.Resize, P)
	case o.AnySize && (o.Short <= 0 || o.Short%P != 0):
		return fmt.Errorf("embed: any-size short side %d must be a positive multiple of the patch size %d", o.Short, P)
	}
	loader := &data.Loader{Data: ds, BatchSize: o.Batch, Workers: o.Workers, Rejects: o.Rejects}
	for b, err := range loader.Batches(ctx, nil) {
		if err != nil {
			return err
		}
		groups, err := o.groups(b, P)
		if err != nil {
			return err
		}
		for _, g := range groups {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, err := forward(dev, model, ds, b, g, o)
			if err != nil {
				return err
			}
			if err := sink(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// group is a run of positions in a loader batch that share an input size.
type group struct {
	members []int
	h, w    int
}

// groups splits a loader batch by model input size: one group for the
// centre crop, one per distinct patch-aligned size with AnySize.
func (o Options) groups(b *data.Batch, patch int) ([]group, error) {
	if !o.AnySize {
		g := group{h: o.Crop, w: o.Crop}
		for i := range b.Images {
			g.members = append(g.members, i)
		}
		return []group{g}, nil
	}
	var gs []group
	at := map[[2]int]int{}
	for i, im := range b.Images {
		h, w, err := nn.PatchAlignedSize(im.H, im.W, o.Short, patch)
		if err != nil {
			return nil, err
		}
		k, ok := at[[2]int{h, w}]
		if !ok {
			k = len(gs)
			at[[2]int{h, w}] = k
			gs = append(gs, group{h: h, w: w})
		}
		gs[k].members = append(gs[k].members, i)
	}
	return gs, nil
}

// forward preprocesses one group on the GPU and runs the backbone on it.
func forward(dev *gpu.Device, model *nn.ViT, ds data.Dataset, b *data.Batch, g group, o Options) (*Result, error) {
	r := &Result{H: g.h, W: g.w}
	imgs := make([]nn.Image, len(g.members))
	for k, i := range g.members {
		im := b.Images[i]
		imgs[k] = nn.Image{H: im.H, W: im.W, C: 3, Pix: im.Pix}
		r.Indices = append(r.Indices, b.Indices[i])
		r.Paths = append(r.Paths, ds.Path(b.Indices[i]))
		r.Labels = append(r.Labels, b.Labels[i])
	}
	run := func() (*nn.Output, *gpu.Tensor, error) {
		x, err := preprocess(dev, imgs, g, o)
		if err != nil {
			return nil, nil, err
		}
		out, err := model.Forward(x, nn.ForwardOpts{Attn0: o.Attn0, Intermediate: o.Layers})
		if err != nil {
			x.Buf.Release()
			return nil, nil, err
		}
		return out, x, nil
	}
	var x, xm *gpu.Tensor
	var err error
	if r.Out, x, err = run(); err != nil {
		return nil, err
	}
	defer x.Buf.Release()
	if o.Mirror {
		for k, im := range imgs {
			imgs[k].Pix = mirror(im)
		}
		if r.Mirror, xm, err = run(); err != nil {
			return nil, err
		}
		xm.Buf.Release()
	}
	if o.Pixels {
		if r.Pixels, err = dev.Read(x); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// preprocess uploads imgs and resizes and crops them on the GPU into the
// normalised model inputs [B, 3, g.h, g.w].
func preprocess(dev *gpu.Device, imgs []nn.Image, g group, o Options) (*gpu.Tensor, error) {
	batch, err := nn.UploadImages(dev, imgs)
	if err != nil {
		return nil, err
	}
	defer batch.Release()
	var plan *nn.CropPlan
	if o.AnySize {
		plan, err = nn.NewResizePlan(dev, batch, g.h, g.w)
	} else {
		plan, err = nn.NewCenterCropPlan(dev, batch, o.Resize, o.Crop)
	}
	if err != nil {
		return nil, err
	}
	defer plan.Release()
	x, err := dev.NewTensor("embed inputs", len(imgs), 3, g.h, g.w)
	if err != nil {
		return nil, err
	}
	rec := dev.Record()
	nn.Resample(rec, x, batch, plan, Norm)
	if err := rec.Submit(); err != nil {
		x.Buf.Release()
		return nil, fmt.Errorf("embed: preprocessing: %w", err)
	}
	return x, nil
}

// mirror returns im's pixels flipped left to right.
func mirror(im nn.Image) []uint8 {
	out := make([]uint8, len(im.Pix))
	for y := range im.H {
		for x := range im.W {
			src := (y*im.W + im.W - 1 - x) * im.C
			copy(out[(y*im.W+x)*im.C:(y*im.W+x+1)*im.C], im.Pix[src:src+im.C])
		}
	}
	return out
}

// LoadModel reads a webdino checkpoint's backbone onto dev. Official weight
// files get an error that says how to convert them.
func LoadModel(dev *gpu.Device, path string) (*nn.ViT, error) {
	c, err := ckpt.ReadFile(path)
	if err != nil {
		if ext := strings.ToLower(filepath.Ext(path)); slices.Contains([]string{".pth", ".pt", ".safetensors", ".bin"}, ext) ||
			strings.Contains(err.Error(), "cmd/convert") {
			return nil, fmt.Errorf("--model %s is not a webdino checkpoint (%v); convert official weights first: go run ./cmd/convert %s model.msgpack", path, err, path)
		}
		return nil, fmt.Errorf("--model: %w", err)
	}
	m, err := nn.NewViT(dev, c.Config)
	if err != nil {
		return nil, err
	}
	w := make(map[string][]float32, len(c.Weights))
	for k, t := range c.Weights {
		w[k] = t.Data
	}
	if err := m.SetWeights(w); err != nil {
		m.Release()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
