// Package viewer is what the in-browser viewer computes, kept apart from the
// syscall/js glue (wasm/main.go) so that it builds and is tested natively:
// read a checkpoint from bytes, decode a photo, resize it whole to a
// patch-aligned size on the GPU, run the backbone with the last block's CLS
// attention, and turn the outputs into the pictures the page shows (PCA of
// the patch features, attention maps per head and averaged, cosine
// similarity of every patch to a chosen one). Each step is timed.
package viewer

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"math"
	"time"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/viz"
)

// Model is a backbone loaded on a device, with what the page says about it.
type Model struct {
	ViT    *nn.ViT
	Source string // "webdino checkpoint" or "imported pth/safetensors"
	Meta   map[string]string
}

// Release frees the model's GPU memory.
func (m *Model) Release() { m.ViT.Release() }

// maxPageBytes bounds the WebAssembly memory loading a model may take: the
// file and its decoded float32 weights are held at once, and wasm32
// addresses 4 GiB, some of which the runtime and the images need.
const maxPageBytes = 3 << 30

// CheckModel says, from the first bytes of a model file of size bytes,
// whether the page can load it, before the page copies the whole file into
// WebAssembly memory: a webdino checkpoint's config must fit that memory
// and dev's limits. Other files (.pth, .safetensors) are judged by size;
// LoadModel checks them further.
func CheckModel(dev *gpu.Device, name string, head []byte, size int64) error {
	return checkModel(dev.Limits(), name, head, size)
}

func checkModel(lim gpu.Limits, name string, head []byte, size int64) error {
	const gib = 1 << 30
	cfg, err := ckpt.PeekConfig(head)
	if err != nil {
		if need := 2 * size; need > maxPageBytes {
			return fmt.Errorf("%s (%.1f GB) needs about %.1f GiB of WebAssembly memory to load, more than a page can use (%d GiB): run it natively (cmd/embed)",
				name, float64(size)/1e9, float64(need)/gib, maxPageBytes/gib)
		}
		return nil
	}
	if need := size + 4*cfg.NumParams(); need > maxPageBytes {
		return fmt.Errorf("%s (%s, %d M parameters) needs about %.1f GiB of WebAssembly memory to load (the file and its float32 weights), more than a page can use (%d GiB): run it natively (cmd/embed)",
			name, cfg, cfg.NumParams()/1e6, float64(need)/gib, maxPageBytes/gib)
	}
	if err := cfg.Fits(lim); err != nil {
		return fmt.Errorf("%s (%s) does not fit this device (buffers up to %d MB, bindings up to %d MB): %w",
			name, cfg, lim.MaxBufferSize>>20, lim.MaxStorageBinding>>20, err)
	}
	return nil
}

// LoadModel reads a webdino checkpoint (msgpack) or, failing that, official
// DINOv2 weights (.pth, .safetensors) held in b, and uploads the backbone to
// dev. The errors say which of the three cases went wrong and, when a
// parameter tensor is larger than the device allows, the device's limits.
func LoadModel(dev *gpu.Device, name string, b []byte) (*Model, error) {
	c, err := ckpt.Decode(b)
	source := "webdino checkpoint"
	if err != nil {
		ic, info, ierr := ckpt.Import(bytes.NewReader(b), int64(len(b)))
		if ierr != nil {
			if len(b) > 0 && b[0] >= 0x80 && b[0] <= 0x8f { // a msgpack map: a broken webdino file
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return nil, fmt.Errorf("%s is not a webdino checkpoint (.msgpack, see docs/checkpoint.md) nor official DINOv2 weights (.pth or .safetensors): %w", name, err)
		}
		c, source = ic, "imported "+info.Format
	}
	vit, err := nn.NewViT(dev, c.Config)
	if err != nil {
		l := dev.Limits()
		return nil, fmt.Errorf("%s (%s) does not fit this device (buffers up to %d MB, bindings up to %d MB): %w",
			name, c.Config, l.MaxBufferSize>>20, l.MaxStorageBinding>>20, err)
	}
	w := make(map[string][]float32, len(c.Weights))
	for k, t := range c.Weights {
		w[k] = t.Data
	}
	if err := vit.SetWeights(w); err != nil {
		vit.Release()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &Model{ViT: vit, Source: source, Meta: c.Meta}, nil
}

// DecodeImage decodes an encoded photo (JPEG, PNG, GIF, WebP, BMP, TIFF)
// with the decoder the native tools use, so both see the same pixels.
func DecodeImage(name string, b []byte) (*data.RGB, error) {
	return data.Decode(name, b, data.DecodeOptions{MinSide: 1})
}

// Step is one timed stage of Run.
type Step struct {
	Name string
	Ms   float64
}

// Result is one image through the model, ready to draw.
type Result struct {
	H, W      int // model input size
	GH, GW    int // patch grid
	Heads     int
	Registers int
	D         int
	Input     *image.RGBA // the model input, denormalised
	Patches   []float32   // normed patch tokens [GH*GW, D]
	Attn0     []float32   // CLS attention of the last block [heads, T]
	PCA       viz.Figure
	// Attn holds one [GH*GW] map per head, then their mean (viz.AttnMaps).
	Attn  [][]float32
	Steps []Step
	unit  []float32 // Patches with rows scaled to unit length
}

// Run resizes img so that its short side is short (a multiple of the patch
// size) and its long side the nearest patch multiple keeping the aspect
// ratio, exactly as `embed --any-size --short` does, then runs the model and
// computes the pictures. The image stays on the GPU only for this call.
func Run(dev *gpu.Device, m *Model, img *data.RGB, short int) (*Result, error) {
	cfg := m.ViT.Cfg
	h, w, err := nn.PatchAlignedSize(img.H, img.W, short, cfg.PatchSize)
	if err != nil {
		return nil, err
	}
	r := &Result{H: h, W: w, Heads: cfg.Heads, Registers: cfg.Registers, D: cfg.EmbedDim}
	t := time.Now()
	step := func(name string) {
		now := time.Now()
		r.Steps = append(r.Steps, Step{name, float64(now.Sub(t).Microseconds()) / 1000})
		t = now
	}
	batch, err := nn.UploadImages(dev, []nn.Image{{H: img.H, W: img.W, C: 3, Pix: img.Pix}})
	if err != nil {
		return nil, err
	}
	defer batch.Release()
	plan, err := nn.NewResizePlan(dev, batch, h, w)
	if err != nil {
		return nil, err
	}
	defer plan.Release()
	x, err := dev.NewTensor("viewer input", 1, 3, h, w)
	if err != nil {
		return nil, err
	}
	defer x.Buf.Release()
	step("upload")
	rec := dev.Record()
	nn.Resample(rec, x, batch, plan, nn.ImageNetNorm)
	if err := rec.Submit(); err != nil {
		return nil, fmt.Errorf("preprocessing: %w", err)
	}
	// Reading the input back is also the wait that times this step: one
	// round trip to a browser's GPU process, not two.
	pix, err := dev.Read(x)
	if err != nil {
		return nil, err
	}
	if r.Input, err = viz.FromCHW(pix, h, w, nn.ImageNetNorm.Mean, nn.ImageNetNorm.Std); err != nil {
		return nil, err
	}
	step("resize+normalise+readback (GPU)")
	out, err := m.ViT.Forward(x, nn.ForwardOpts{Attn0: true})
	if err != nil {
		return nil, fmt.Errorf("model at %dx%d: %w", h, w, err)
	}
	step("model forward + readback (GPU)")
	r.GH, r.GW = out.GridH, out.GridW
	r.Patches, r.Attn0 = out.PatchTokens(), out.Attn0
	figs, err := viz.PCAFigure([]viz.Patches{{Feat: r.Patches, GH: r.GH, GW: r.GW}}, r.D, viz.FigureOpts{PerImage: true})
	if err != nil {
		return nil, err
	}
	r.PCA = figs[0]
	step("PCA (CPU)")
	if r.Attn, err = viz.AttnMaps(r.Attn0, r.Heads, r.Registers, r.GH, r.GW); err != nil {
		return nil, err
	}
	r.unit = unitRows(r.Patches, r.D)
	step("attention maps (CPU)")
	return r, nil
}

// unitRows returns x [n, d] with each row divided by its length.
func unitRows(x []float32, d int) []float32 {
	u := make([]float32, len(x))
	for i := 0; i < len(x); i += d {
		var s float64
		for _, v := range x[i : i+d] {
			s += float64(v) * float64(v)
		}
		inv := 1 / math.Max(math.Sqrt(s), 1e-12)
		for j, v := range x[i : i+d] {
			u[i+j] = float32(float64(v) * inv)
		}
	}
	return u
}

// Similarity returns the cosine similarity of every patch to patch i
// (row-major over the grid): the dense correspondence DINOv2's features
// support without any training.
func (r *Result) Similarity(i int) ([]float32, error) {
	n := r.GH * r.GW
	if i < 0 || i >= n {
		return nil, errors.New("similarity: patch index outside the grid")
	}
	d := r.D
	q := r.unit[i*d : (i+1)*d]
	s := make([]float32, n)
	for j := range s {
		var dot float64
		for k, v := range r.unit[j*d : (j+1)*d] {
			dot += float64(v) * float64(q[k])
		}
		s[j] = float32(dot)
	}
	return s, nil
}
