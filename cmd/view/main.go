// Command view is the native counterpart of the in-browser viewer
// (docs/browser.md): it runs a DINOv2 backbone on a photo with WebGPU and
// shows, in a window, the model input, the PCA picture of the patch
// features (the paper's Figure 1), the CLS attention of the last block
// (mean or per head) and the cosine similarity of every patch to a clicked
// one. With --screenshot it writes the same picture to a PNG and exits
// without opening a window, so that it runs headless.
//
// The computing is wasm/viewer's, the same code the page runs, and the
// pictures are viz's. All drawing goes into one image, view.frame, which
// --screenshot writes out, so the window's code is only input handling and
// a blit, and the tests cover everything else.
//
// The window is a GLFW one (github.com/go-gl/glfw/v3.3) showing the frame
// with glDrawPixels. ebiten (v2.8.8) was the first choice, for its drawing
// loop, input and HiDPI handling, but it initialises GLFW in a package
// init function and panics there without an X display: a binary that links
// it cannot even start headless, so neither --screenshot in CI nor this
// package's tests could run. go-gl/glfw initialises nothing until Init is
// called. A WebGPU surface on the window would buy nothing either: the GPU
// work ends with reading the features back, and the pictures are drawn on
// the CPU, so a legacy OpenGL context and one glDrawPixels call per frame
// are all the window needs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/webdino/webdino/assets"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/wasm/viewer"
)

// The bundled defaults (assets/manifest.json): the demo model trained by
// webdino on Fashion-MNIST and a Fashion-MNIST test picture.
const (
	defaultModel = "models/fashion-demo.msgpack"
	defaultImage = "photos/fashion-boot.png"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

const usage = `usage: view [--model FILE] [--image FILE] [--short N] [--screenshot FILE.png]

Runs a DINOv2 backbone on a photo with WebGPU and shows, in a window:
  - the model input (the photo resized whole so that its short side is
    --short and its long side the nearest patch multiple, as
    embed --any-size does), the similarity patch outlined;
  - the PCA picture of the patch features (the paper's Figure 1: the first
    component thresholded into foreground, the first three components of
    the foreground as RGB, background black);
  - the CLS attention of the last block over the patches, the mean over
    heads or one head;
  - the cosine similarity of every patch to one patch;
  - the model, the photo, the device and the time of each step (ms).

In the window: click (or drag) on any panel to choose the similarity
patch; left/right step through the heads and the mean, 1-9 pick a head,
m the mean; up/down change the short side by one patch (the model runs
again); q or Esc quits.

--model takes a webdino checkpoint (.msgpack) or official DINOv2 weights
(.pth, .safetensors). Without --model and --image, the bundled Fashion-MNIST
demo model and picture are used.

With --screenshot, the window's content is written to a PNG instead
(--patch and --head choose what it shows) and no window is opened.

Flags:
`

type config struct {
	model, image, screenshot, patch string
	short, head                     int
}

// run is main without the exit: it returns the exit status (0 done, 1 a
// failure, 2 a usage error).
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("view", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.model, "model", "", "checkpoint `FILE` (.msgpack, .pth or .safetensors; default: the bundled "+defaultModel+")")
	fs.StringVar(&c.image, "image", "", "photo `FILE` (JPEG, PNG, GIF, WebP, BMP, TIFF; default: the bundled "+defaultImage+")")
	fs.IntVar(&c.short, "short", 0, "short side of the model input in pixels, a multiple of the patch size (0: the model's position grid times the patch, its training size)")
	fs.StringVar(&c.patch, "patch", "", "similarity patch `X,Y` (column, row of the patch grid from 0; default: the centre)")
	fs.IntVar(&c.head, "head", 0, "attention head shown, 1 to the number of heads (0: the mean over heads)")
	fs.StringVar(&c.screenshot, "screenshot", "", "write the window's content to `FILE` (PNG) and exit without opening a window")
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
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "view: unexpected arguments %q (see --help)\n", fs.Args())
		return 2
	}
	px, py, err := parsePatch(c.patch)
	if err != nil {
		fmt.Fprintf(stderr, "view: --patch %q: want X,Y, two whole numbers (see --help)\n", c.patch)
		return 2
	}
	if c.short < 0 || c.head < 0 {
		fmt.Fprintln(stderr, "view: --short and --head must not be negative (see --help)")
		return 2
	}
	v, err := load(c)
	if err != nil {
		fmt.Fprintln(stderr, "view:", err)
		return 1
	}
	defer v.dev.Close()
	defer v.model.Release()
	if c.patch != "" {
		if err = v.setPatch(px, py); err != nil {
			err = fmt.Errorf("--patch: %w", err)
		}
	}
	if err == nil && c.head > v.res.Heads {
		err = fmt.Errorf("--head %d: the model has %d heads", c.head, v.res.Heads)
	}
	if err == nil {
		v.setHead(c.head - 1) // --head 0 wraps to the mean
		if c.screenshot != "" {
			err = screenshot(v, c.screenshot)
		} else {
			err = window(v)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "view:", err)
		return 1
	}
	return 0
}

// parsePatch reads --patch X,Y; an empty flag is no patch.
func parsePatch(s string) (x, y int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	xs, ys, _ := strings.Cut(s, ",")
	if x, err = strconv.Atoi(xs); err == nil {
		y, err = strconv.Atoi(ys)
	}
	return x, y, err
}

// load reads the model and the photo (the bundled ones by default), opens
// the GPU and runs the model once.
func load(c config) (*view, error) {
	mb, mname, err := readInput(c.model, defaultModel)
	if err != nil {
		return nil, err
	}
	ib, iname, err := readInput(c.image, defaultImage)
	if err != nil {
		return nil, err
	}
	img, err := viewer.DecodeImage(iname, ib)
	if err != nil {
		return nil, err
	}
	dev, err := gpu.Open()
	if err != nil {
		return nil, err
	}
	m, err := viewer.LoadModel(dev, mname, mb)
	if err != nil {
		dev.Close()
		return nil, err
	}
	v := &view{dev: dev, model: m, modelName: filepath.Base(mname), img: img, imgName: filepath.Base(iname)}
	short, patch := c.short, m.ViT.Cfg.PatchSize
	if short == 0 {
		short = m.ViT.Cfg.PosGrid * patch
	}
	if short%patch != 0 {
		err = fmt.Errorf("--short %d is not a multiple of the patch size %d of %s (try %d)", short, patch, mname, max(patch, short/patch*patch))
	} else {
		err = v.run(short)
	}
	if err != nil {
		m.Release()
		dev.Close()
		return nil, err
	}
	return v, nil
}

// readInput returns the bytes of path and the name to report it by, or
// those of the bundled file def when path is empty.
func readInput(path, def string) ([]byte, string, error) {
	if path == "" {
		b, err := assets.FS.ReadFile(def)
		return b, "bundled " + def, err
	}
	b, err := os.ReadFile(path)
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = fmt.Errorf("%s: %w", path, pe.Err) // not "open PATH: ...": the flag may name a folder
	}
	return b, path, err
}

// screenshot writes the frame to path as a PNG.
func screenshot(v *view, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, v.frame()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
