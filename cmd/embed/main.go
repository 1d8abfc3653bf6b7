// Command embed computes DINOv2 features of images with a webdino model.
//
//	embed --model MODEL.msgpack --out DIR [flags] INPUT...
//
// Run it with --help for the inputs, outputs and flags.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/png"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/embed"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/gpu/lavapipe"
	"github.com/webdino/webdino/viz"
)

func main() {
	if err := lavapipe.Restart(); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first Ctrl-C finishes the current pass and closes the outputs; a
	// second one kills the process as usual.
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: embed --model MODEL.msgpack --out DIR [flags] INPUT...

Computes DINOv2 features of images with a webdino checkpoint (make one from
official .pth or .safetensors weights with cmd/convert).

INPUT is an image file or a folder, scanned recursively (sorted by folder,
then name; hidden files skipped). With --image-folder, the single INPUT is an
ImageFolder tree ROOT/CLASS/**/IMAGE and each image gets the label of its
class folder (class folders sorted by name, labels from 0).

Preprocessing is the reference's evaluation transform: resize the shortest
side to --resize with PIL's bicubic filter, centre crop --crop, ImageNet
mean and std. With --any-size, each image is instead resized whole so that
its short side is --short and its long side the nearest multiple of the
patch size keeping the aspect ratio; images that get the same size are
batched together, the others run in smaller passes.

Outputs in DIR:
  cls.npy         [N, D] float32: the normalised CLS token of each image
  patch.npy       [N, Np, D] float32 with --patch: normalised patch tokens,
                  row-major over the patch grid (registers excluded). With
                  --any-size, one file per grid: patch_GHxGW.npy
  layers.npy      [N, n, D] float32 with --layers n: the CLS token of each of
                  the last n blocks (earliest first) through the final norm
  manifest.jsonl  one JSON object per row of cls.npy, in row order:
                  {"row", "path", "label" and "class" (ImageFolder only),
                  "input": [H, W] the model input size, "grid": [GH, GW],
                  "patch_file" and "patch_row" (with --patch)}
  rejects.jsonl   files that could not be decoded (also listed on stderr):
                  {"path", "problem", "reason"}; they are skipped
  --pca DIR       per image, the DINOv2 paper's Figure 1 picture beside the
                  model input: PCA of the patch features, the first
                  component thresholded into foreground and background,
                  then the first three components of a PCA of the
                  foreground patches as RGB (min-max per component),
                  background black. The PCA is fitted jointly over the
                  images of each forward pass (colours comparable within a
                  batch) or per image with --pca-per-image. Foreground is
                  the side of the first component whose patches lie closer
                  to the image centre on average (--pca-sign centre), or
                  the side with fewer patches (--pca-sign minority).
  --attn DIR      per image, the model input, the mean over heads and each
                  head's CLS attention of the last block over the patch
                  grid (cls and registers excluded), in rows of 4.
Pictures are named ROW_NAME.png.

Undecodable files never stop the run. Ctrl-C stops it cleanly: the .npy
files and the manifest then hold the rows done so far (exit status 130).

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("embed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.model, "model", "", "webdino checkpoint `FILE` (msgpack; convert .pth/.safetensors with cmd/convert)")
	fs.StringVar(&c.out, "out", "", "output `DIR` (created if missing)")
	fs.BoolVar(&c.imageFolder, "image-folder", false, "INPUT is one ImageFolder root: label images by class folder")
	fs.IntVar(&c.opts.Batch, "batch", 32, "images per forward pass")
	fs.IntVar(&c.opts.Resize, "resize", 256, "shortest side before the centre crop")
	fs.IntVar(&c.opts.Crop, "crop", 224, "centre crop side (a multiple of the patch size)")
	fs.BoolVar(&c.opts.AnySize, "any-size", false, "no crop: resize each image to a patch-aligned size keeping its aspect ratio")
	fs.IntVar(&c.opts.Short, "short", 224, "short side with --any-size (a multiple of the patch size)")
	fs.IntVar(&c.opts.Workers, "workers", 0, "parallel image decoders (0: one per CPU)")
	fs.BoolVar(&c.patch, "patch", false, "also write patch tokens")
	fs.IntVar(&c.opts.Layers, "layers", 0, "also write layers.npy [N, n, D]: the CLS token of each of the last n blocks through the final norm (DINOv2's linear probe uses n = 4)")
	fs.StringVar(&c.pcaDir, "pca", "", "write PCA feature pictures (Figure 1 of the paper) to `DIR`")
	fs.BoolVar(&c.fig.PerImage, "pca-per-image", false, "fit the PCA of each picture on its own image instead of jointly over the batch")
	fs.StringVar(&c.sign, "pca-sign", "centre", "foreground side of the first component: centre or minority")
	fs.Float64Var(&c.fig.Threshold, "pca-threshold", 0, "foreground threshold on the first component, in standard deviations from the mean")
	fs.StringVar(&c.attnDir, "attn", "", "write CLS attention pictures to `DIR`")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	c.inputs = fs.Args()
	if err := c.check(); err != nil {
		fmt.Fprintf(stderr, "embed: %v (see --help)\n", err)
		return 2
	}
	err := c.embed(ctx, stdout, stderr)
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "embed: interrupted; the outputs hold the images done so far")
		return 130
	case err != nil:
		fmt.Fprintln(stderr, "embed:", err)
		return 1
	}
	return 0
}

type config struct {
	model, out      string
	inputs          []string
	imageFolder     bool
	opts            embed.Options
	patch           bool
	pcaDir, attnDir string
	sign            string
	fig             viz.FigureOpts
}

func (c *config) check() error {
	switch {
	case c.model == "":
		return errors.New("--model is required")
	case c.out == "":
		return errors.New("--out is required")
	case len(c.inputs) == 0:
		return errors.New("no INPUT images or folders")
	case c.imageFolder && len(c.inputs) != 1:
		return fmt.Errorf("--image-folder takes one ROOT folder, got %d inputs", len(c.inputs))
	case c.opts.Batch <= 0:
		return fmt.Errorf("--batch %d must be positive", c.opts.Batch)
	}
	switch c.sign {
	case "centre", "center":
		c.fig.Sign = viz.SignCentre
	case "minority":
		c.fig.Sign = viz.SignMinority
	default:
		return fmt.Errorf("--pca-sign %q: want centre or minority", c.sign)
	}
	return nil
}

// dataset gathers the inputs into one list of files.
func (c *config) dataset() (*data.Files, error) {
	if c.imageFolder {
		return data.ScanImageFolder(c.inputs[0])
	}
	all := &data.Files{}
	for _, in := range c.inputs {
		fi, err := os.Stat(in)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			all.Paths = append(all.Paths, in)
			continue
		}
		f, err := data.ScanFolder(in)
		if err != nil {
			return nil, err
		}
		all.Paths = append(all.Paths, f.Paths...)
		all.Skipped = append(all.Skipped, f.Skipped...)
	}
	return all, nil
}

// manifestRow is one line of manifest.jsonl.
type manifestRow struct {
	Row       int    `json:"row"`
	Path      string `json:"path"`
	Label     *int   `json:"label,omitempty"`
	Class     string `json:"class,omitempty"`
	Input     [2]int `json:"input"`
	Grid      [2]int `json:"grid"`
	PatchFile string `json:"patch_file,omitempty"`
	PatchRow  *int   `json:"patch_row,omitempty"`
}

// outputs are the files a run writes.
type outputs struct {
	dir      string
	cls      *npyStream
	layers   *npyStream            // with --layers
	patch    map[[2]int]*npyStream // by grid; one key without --any-size
	manifest *os.File
	enc      *json.Encoder
	rows     int
}

func (o *outputs) close() error {
	var errs []error
	for _, s := range []*npyStream{o.cls, o.layers} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	for _, s := range o.patch {
		errs = append(errs, s.Close())
	}
	if o.manifest != nil {
		errs = append(errs, o.manifest.Close())
	}
	return errors.Join(errs...)
}

func (c *config) embed(ctx context.Context, stdout, stderr io.Writer) (err error) {
	files, err := c.dataset()
	if err != nil {
		return err
	}
	if files.Len() == 0 {
		return fmt.Errorf("no images found in %s", strings.Join(c.inputs, ", "))
	}
	for _, dir := range []string{c.out, c.pcaDir, c.attnDir} {
		if dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
	}
	dev, err := gpu.Open()
	if err != nil {
		return err
	}
	defer dev.Close()
	model, err := embed.LoadModel(dev, c.model)
	if err != nil {
		return err
	}
	defer model.Release()
	D := model.Cfg.EmbedDim

	out := &outputs{dir: c.out, patch: map[[2]int]*npyStream{}}
	defer func() {
		if cerr := out.close(); err == nil {
			err = cerr
		}
	}()
	if out.cls, err = createNpy(filepath.Join(c.out, "cls.npy"), D); err != nil {
		return err
	}
	if c.opts.Layers > 0 {
		if c.opts.Layers > model.Cfg.Depth {
			return fmt.Errorf("--layers %d: the model has %d blocks", c.opts.Layers, model.Cfg.Depth)
		}
		if out.layers, err = createNpy(filepath.Join(c.out, "layers.npy"), c.opts.Layers, D); err != nil {
			return err
		}
	}
	if out.manifest, err = os.Create(filepath.Join(c.out, "manifest.jsonl")); err != nil {
		return err
	}
	out.enc = json.NewEncoder(out.manifest)

	rejects := &data.Rejects{}
	for _, s := range files.Skipped {
		rejects.Add(s.Path, errors.New(s.Reason))
	}
	opts := c.opts
	opts.Rejects = rejects
	opts.Attn0 = c.attnDir != ""
	opts.Pixels = c.pcaDir != "" || c.attnDir != ""
	var progress *data.Progress
	if f, ok := stderr.(*os.File); ok && f == os.Stderr {
		progress = data.NewProgress("embed", files.Len())
	} else {
		progress = data.NewPlainProgress(stderr, "embed", files.Len(), data.DefaultInterval)
	}
	// Progress counts dataset files: embedded or rejected (not the folders
	// the scan could not read).
	counted, skipped := 0, rejects.Len()
	start := time.Now()
	err = embed.Run(ctx, dev, model, files, opts, func(r *embed.Result) error {
		if err := c.write(out, files, r); err != nil {
			return err
		}
		counted = advance(progress, counted, out.rows+rejects.Len()-skipped, rejects.Len())
		return nil
	})
	advance(progress, counted, out.rows+rejects.Len()-skipped, rejects.Len())
	progress.Finish()
	c.report(stdout, stderr, out, rejects, D, time.Since(start))
	if rejects.Len() > 0 {
		if werr := rejects.WriteFile(filepath.Join(c.out, "rejects.jsonl")); err == nil {
			err = werr
		}
	}
	return err
}

// advance moves progress from counted to done files and returns done.
func advance(p *data.Progress, counted, done, rejected int) int {
	if rejected > 0 {
		p.SetExtra(fmt.Sprintf("(%d rejected)", rejected))
	}
	p.Add(done - counted)
	return done
}

// write appends one forward pass to the outputs and draws its pictures.
func (c *config) write(out *outputs, files *data.Files, r *embed.Result) error {
	o := r.Out
	if err := out.cls.Append(o.ClsToken()); err != nil {
		return err
	}
	if out.layers != nil {
		n := len(o.Intermediate)
		per := make([][]float32, n)
		for i := range per {
			per[i] = o.IntermediateClsToken(i)
		}
		rows := make([]float32, 0, o.B*n*o.D)
		for b := 0; b < o.B; b++ {
			for i := range per {
				rows = append(rows, per[i][b*o.D:(b+1)*o.D]...)
			}
		}
		if err := out.layers.Append(rows); err != nil {
			return err
		}
	}
	grid := [2]int{o.GridH, o.GridW}
	var patch *npyStream
	if c.patch {
		patch = out.patch[grid]
		if patch == nil {
			name := "patch.npy"
			if c.opts.AnySize {
				name = fmt.Sprintf("patch_%dx%d.npy", o.GridH, o.GridW)
			}
			var err error
			if patch, err = createNpy(filepath.Join(out.dir, name), o.N, o.D); err != nil {
				return err
			}
			out.patch[grid] = patch
		}
	}
	for k, path := range r.Paths {
		m := manifestRow{Row: out.rows + k, Path: path, Input: [2]int{r.H, r.W}, Grid: grid}
		if files.Labels != nil {
			label := r.Labels[k]
			m.Label = &label
			if label >= 0 && label < len(files.Classes) {
				m.Class = files.Classes[label]
			}
		}
		if patch != nil {
			row := patch.rows + k
			m.PatchFile, m.PatchRow = filepath.Base(patch.path), &row
		}
		if err := out.enc.Encode(m); err != nil {
			return err
		}
	}
	if patch != nil {
		if err := patch.Append(o.PatchTokens()); err != nil {
			return err
		}
	}
	if err := c.pictures(r, out.rows); err != nil {
		return err
	}
	out.rows += o.B
	return nil
}

// pictures writes the PCA and attention pictures of one forward pass.
func (c *config) pictures(r *embed.Result, row0 int) error {
	if c.pcaDir == "" && c.attnDir == "" {
		return nil
	}
	o := r.Out
	var figs []viz.Figure
	if c.pcaDir != "" {
		patches := o.PatchTokens()
		sets := make([]viz.Patches, o.B)
		for b := range sets {
			sets[b] = viz.Patches{Feat: patches[b*o.N*o.D : (b+1)*o.N*o.D], GH: o.GridH, GW: o.GridW}
		}
		var err error
		if figs, err = viz.PCAFigure(sets, o.D, c.fig); err != nil {
			return err
		}
	}
	plane := 3 * r.H * r.W
	T := o.T()
	for b := 0; b < o.B; b++ {
		input, err := viz.FromCHW(r.Pixels[b*plane:(b+1)*plane], r.H, r.W, embed.Norm.Mean, embed.Norm.Std)
		if err != nil {
			return err
		}
		stem := strings.TrimSuffix(filepath.Base(r.Paths[b]), filepath.Ext(r.Paths[b]))
		name := fmt.Sprintf("%06d_%s.png", row0+b, stem)
		if c.pcaDir != "" {
			if err := writePNG(filepath.Join(c.pcaDir, name), viz.FigurePicture(input, figs[b], 4)); err != nil {
				return err
			}
		}
		if c.attnDir != "" {
			pic, err := viz.AttnPicture(input, o.Attn0[b*o.Heads*T:(b+1)*o.Heads*T], o.Heads, o.R, o.GridH, o.GridW, 4, 4)
			if err != nil {
				return err
			}
			if err := writePNG(filepath.Join(c.attnDir, name), pic); err != nil {
				return err
			}
		}
	}
	return nil
}

func writePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// report prints what was written and lists the rejected files.
func (c *config) report(stdout, stderr io.Writer, out *outputs, rejects *data.Rejects, D int, took time.Duration) {
	fmt.Fprintf(stdout, "embedded %d images in %s: %s [%d, %d]\n", out.rows, took.Round(time.Millisecond),
		filepath.Join(c.out, "cls.npy"), out.rows, D)
	grids := slices.SortedFunc(maps.Keys(out.patch), func(a, b [2]int) int { return cmp.Compare(a[0]*1e6+a[1], b[0]*1e6+b[1]) })
	for _, g := range grids {
		s := out.patch[g]
		fmt.Fprintf(stdout, "patch tokens: %s [%d, %d, %d]\n", s.path, s.rows, s.tail[0], s.tail[1])
	}
	fmt.Fprintf(stdout, "manifest: %s\n", filepath.Join(c.out, "manifest.jsonl"))
	if rejects.Len() == 0 {
		return
	}
	var kinds []string
	for p, n := range rejects.Counts() {
		kinds = append(kinds, fmt.Sprintf("%s %d", p, n))
	}
	slices.Sort(kinds)
	fmt.Fprintf(stdout, "rejected %d files (%s): %s\n", rejects.Len(), strings.Join(kinds, ", "), filepath.Join(c.out, "rejects.jsonl"))
	for _, r := range rejects.List() {
		fmt.Fprintf(stderr, "rejected %s: %s: %s\n", r.Path, r.Problem, r.Reason)
	}
}
