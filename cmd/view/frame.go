package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/viz"
	"github.com/webdino/webdino/wasm/viewer"
)

// Layout of a frame, in pixels. Text is basicfont's 7x13 face, so a title
// bar or status line is 16 pixels high.
const (
	gap         = 6   // between panels and around the frame
	lineH       = 16  // one line of text
	statusLines = 4   // model, photo and device, timings, keys
	minPanel    = 360 // panels are scaled up by a whole factor to at least this short side
)

// view is the state both modes draw: one model and photo, the last run, the
// chosen attention head and similarity patch. The window only turns input
// into calls of its methods and shows frame(); --screenshot writes frame()
// to a PNG. Its methods run on one goroutine.
type view struct {
	dev       *gpu.Device
	model     *viewer.Model
	modelName string
	img       *data.RGB
	imgName   string

	res     *viewer.Result
	head    int // 0..heads-1, or heads for the mean over heads (res.Attn's order)
	patch   int // row-major index in the patch grid
	sim     []float32
	simMs   float64
	scale   int // panel pixels per model input pixel
	message string
}

// run computes the pictures at the given short side. The similarity patch
// starts at the grid's centre and, on a later run at another size, stays
// over the same place of the photo.
func (v *view) run(short int) error {
	r, err := viewer.Run(v.dev, v.model, v.img, short)
	if err != nil {
		return err
	}
	x, y := r.GW/2, r.GH/2
	if old := v.res; old != nil {
		x, y = (2*(v.patch%old.GW)+1)*r.GW/(2*old.GW), (2*(v.patch/old.GW)+1)*r.GH/(2*old.GH) // patch centres
	}
	v.res = r
	v.scale = max(1, (minPanel+min(r.H, r.W)-1)/min(r.H, r.W))
	return v.setPatch(x, y)
}

// setPatch chooses the patch at column x, row y of the grid and computes
// its similarity map.
func (v *view) setPatch(x, y int) error {
	r := v.res
	if x < 0 || y < 0 || x >= r.GW || y >= r.GH {
		return fmt.Errorf("patch %d,%d is outside the %dx%d patch grid (columns 0..%d, rows 0..%d)", x, y, r.GW, r.GH, r.GW-1, r.GH-1)
	}
	t := time.Now()
	s, err := r.Similarity(y*r.GW + x)
	if err != nil {
		return err
	}
	v.patch, v.sim = y*r.GW+x, s
	v.simMs = float64(time.Since(t).Microseconds()) / 1000
	return nil
}

// setHead shows head h's attention (0-based), or the mean for h == heads;
// other values wrap around, so that keys can step through all of them.
func (v *view) setHead(h int) {
	n := v.res.Heads + 1
	v.head = ((h % n) + n) % n
}

// Panels of a frame, in the order of panelRects.
const (
	panelInput = iota
	panelPCA
	panelAttn
	panelSim
	numPanels
)

// panelSize is the size of each picture: the model input, scaled up.
func (v *view) panelSize() (w, h int) { return v.res.W * v.scale, v.res.H * v.scale }

// frameSize is the size of the whole frame: two rows of two panels, each
// under a title line, and the status lines at the bottom.
func (v *view) frameSize() (w, h int) {
	pw, ph := v.panelSize()
	return 2*pw + 3*gap, 2*(lineH+ph) + 3*gap + statusLines*lineH
}

// panelRects returns where each picture is drawn (without its title).
func (v *view) panelRects() [numPanels]image.Rectangle {
	pw, ph := v.panelSize()
	var rs [numPanels]image.Rectangle
	for i := range rs {
		x := gap + (i%2)*(pw+gap)
		y := gap + (i/2)*(lineH+ph+gap) + lineH
		rs[i] = image.Rect(x, y, x+pw, y+ph)
	}
	return rs
}

// patchAt returns the grid column and row under frame pixel (x, y), in any
// of the four panels: they all show the same grid.
func (v *view) patchAt(x, y int) (col, row int, ok bool) {
	p := image.Pt(x, y)
	for _, r := range v.panelRects() {
		if p.In(r) {
			return (x - r.Min.X) * v.res.GW / r.Dx(), (y - r.Min.Y) * v.res.GH / r.Dy(), true
		}
	}
	return 0, 0, false
}

// attnTitle names the attention map shown.
func (v *view) attnTitle() string {
	if v.head == v.res.Heads {
		return fmt.Sprintf("CLS attention, last block: mean of %d heads", v.res.Heads)
	}
	return fmt.Sprintf("CLS attention, last block: head %d of %d", v.head+1, v.res.Heads)
}

// frame draws the window's content: the model input (the chosen patch
// outlined), the PCA picture, the attention map and the similarity map,
// each upsampled by nearest neighbour so patches stay crisp squares, with
// titles and status lines.
func (v *view) frame() *image.RGBA {
	r := v.res
	fw, fh := v.frameSize()
	out := image.NewRGBA(image.Rect(0, 0, fw, fh))
	draw.Draw(out, out.Bounds(), image.NewUniform(color.RGBA{24, 24, 24, 255}), image.Point{}, draw.Src)
	pw, ph := v.panelSize()
	pics := [numPanels]image.Image{
		viz.Upsample(r.Input, pw, ph),
		viz.Upsample(r.PCA.Image(), pw, ph),
		viz.Upsample(viz.Heat(r.Attn[v.head], r.GH, r.GW), pw, ph),
		viz.Upsample(viz.Heat(v.sim, r.GH, r.GW), pw, ph),
	}
	px, py := v.patch%r.GW, v.patch/r.GW
	titles := [numPanels]string{
		fmt.Sprintf("input %dx%d (%dx%d patches)", r.W, r.H, r.GW, r.GH),
		"PCA of patch features (paper Fig. 1)",
		v.attnTitle(),
		fmt.Sprintf("cosine similarity to patch %d,%d", px, py),
	}
	for i, rect := range v.panelRects() {
		draw.Draw(out, rect, pics[i], image.Point{}, draw.Src)
		text(out, rect.Min.X, rect.Min.Y-lineH, titles[i])
	}
	// The chosen patch, outlined on the input only: the other panels keep
	// the exact colours of their maps.
	in := v.panelRects()[panelInput]
	cw, ch := pw/r.GW, ph/r.GH
	outline(out, image.Rect(in.Min.X+px*cw, in.Min.Y+py*ch, in.Min.X+(px+1)*cw, in.Min.Y+(py+1)*ch))

	y := fh - statusLines*lineH
	for i, line := range v.status() {
		text(out, gap, y+i*lineH, line)
	}
	return out
}

// status returns the status lines: model, photo and device, timings, keys
// (or the last message, such as an error from a key press).
func (v *view) status() [statusLines]string {
	var steps []string
	for _, s := range v.res.Steps {
		name, _, _ := strings.Cut(s.Name, " ") // "model forward + readback (GPU)" -> "model"
		steps = append(steps, fmt.Sprintf("%s %.1f", name, s.Ms))
	}
	steps = append(steps, fmt.Sprintf("similarity %.2f", v.simMs))
	keys := v.message
	if keys == "" {
		keys = "click: patch | left/right, 1-9, m: head | up/down: short side | q: quit"
	}
	c := v.model.ViT.Cfg
	return [statusLines]string{
		fmt.Sprintf("%s: patch %d, dim %d, depth %d, %d heads, %d registers", v.modelName, c.PatchSize, c.EmbedDim, c.Depth, c.Heads, c.Registers),
		fmt.Sprintf("%s %dx%d on %s", v.imgName, v.img.W, v.img.H, v.dev.Info().Name),
		"ms: " + strings.Join(steps, ", "),
		keys,
	}
}

// text writes s in white with its line's top-left corner at (x, y),
// clipped to dst.
func text(dst draw.Image, x, y int, s string) {
	face := basicfont.Face7x13
	d := font.Drawer{Dst: dst, Src: image.White, Face: face,
		Dot: fixed.P(x, y+(lineH-face.Height)/2+face.Ascent)}
	d.DrawString(s)
}

// outline draws a 2-pixel white frame just inside r.
func outline(dst *image.RGBA, r image.Rectangle) {
	w := image.NewUniform(color.White)
	for _, e := range []image.Rectangle{
		{r.Min, image.Pt(r.Max.X, r.Min.Y+2)}, {image.Pt(r.Min.X, r.Max.Y-2), r.Max},
		{r.Min, image.Pt(r.Min.X+2, r.Max.Y)}, {image.Pt(r.Max.X-2, r.Min.Y), r.Max},
	} {
		draw.Draw(dst, e.Intersect(r), w, image.Point{}, draw.Src)
	}
}
