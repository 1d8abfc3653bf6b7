//go:build !js

package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/viz"
	"github.com/webdino/webdino/wasm/viewer"
)

const (
	fashionModel = "../../assets/models/fashion-demo.msgpack"
	bootPhoto    = "../../assets/photos/fashion-boot.png"
	randomModel  = "../../assets/models/demo-vits14-d2-reg4-random.msgpack"
	catPhoto     = "../../assets/photos/chelsea.jpg"
)

// viewRun runs the command in-process and returns its exit status and
// what it wrote.
func viewRun(t *testing.T, args ...string) (int, string) {
	var stderr bytes.Buffer
	rc := run(args, &stderr)
	return rc, stderr.String()
}

// takeScreenshot runs --screenshot with args and decodes the PNG.
func takeScreenshot(t *testing.T, args ...string) *image.RGBA {
	path := filepath.Join(t.TempDir(), "view.png")
	rc, stderr := viewRun(t, append(args, "--screenshot", path)...)
	require.Equal(t, 0, rc, stderr)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	rgba, ok := img.(*image.RGBA)
	if !ok { // png may decode an opaque RGBA picture as NRGBA: same bytes
		rgba = image.NewRGBA(img.Bounds())
		for y := 0; y < img.Bounds().Dy(); y++ {
			for x := 0; x < img.Bounds().Dx(); x++ {
				rgba.Set(x, y, img.At(x, y))
			}
		}
	}
	return rgba
}

// reference runs the viewer on the same model and photo outside the
// command: what the panels must show.
func reference(t *testing.T, modelPath, photoPath string, short int) *viewer.Result {
	dev, err := gpu.Open()
	require.NoError(t, err)
	t.Cleanup(dev.Close)
	mb, err := os.ReadFile(modelPath)
	require.NoError(t, err)
	m, err := viewer.LoadModel(dev, modelPath, mb)
	require.NoError(t, err)
	t.Cleanup(m.Release)
	ib, err := os.ReadFile(photoPath)
	require.NoError(t, err)
	img, err := viewer.DecodeImage(photoPath, ib)
	require.NoError(t, err)
	r, err := viewer.Run(dev, m, img, short)
	require.NoError(t, err)
	return r
}

// requireSame asserts that shot shows want at r (same size), pixel for pixel.
func requireSame(t *testing.T, name string, shot *image.RGBA, r image.Rectangle, want *image.RGBA) {
	require.Equal(t, r.Size(), want.Rect.Size(), name)
	diff := 0
	for y := 0; y < r.Dy(); y++ {
		for x := 0; x < r.Dx(); x++ {
			if shot.RGBAAt(r.Min.X+x, r.Min.Y+y) != want.RGBAAt(x, y) {
				diff++
			}
		}
	}
	require.Zero(t, diff, "%s: pixels that differ from viewer.Run's arrays drawn by viz", name)
}

// brightestCell returns the grid cell (of a gw x gh grid over r) holding
// the brightest pixel of shot in r.
func brightestCell(shot *image.RGBA, r image.Rectangle, gw, gh int) (col, row int) {
	best := -1
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c := shot.RGBAAt(x, y)
			if l := int(c.R) + int(c.G) + int(c.B); l > best {
				best, col, row = l, (x-r.Min.X)*gw/r.Dx(), (y-r.Min.Y)*gh/r.Dy()
			}
		}
	}
	return col, row
}

// TestScreenshotDefaults: the bundled Fashion-MNIST model on the bundled
// boot at its training size (28 pixels, 7x7 patches of 4). Panels are
// scaled 13x (the first whole factor reaching 360 pixels): 364 pixels, so
// the frame is 6+364+6+364+6 = 746 wide and 6+16+364+6+16+364+6 plus 4
// status lines of 16 = 842 high.
func TestScreenshotDefaults(t *testing.T) {
	shot := takeScreenshot(t, "--patch", "2,5")
	require.Equal(t, image.Rect(0, 0, 746, 842), shot.Rect)
	r := reference(t, fashionModel, bootPhoto, 28)
	require.Equal(t, [2]int{7, 7}, [2]int{r.GH, r.GW})
	input, pca := image.Rect(6, 22, 370, 386), image.Rect(376, 22, 740, 386)
	attn, sim := image.Rect(6, 408, 370, 772), image.Rect(376, 408, 740, 772)

	requireSame(t, "PCA", shot, pca, viz.Upsample(r.PCA.Image(), 364, 364))
	requireSame(t, "mean attention", shot, attn, viz.Upsample(viz.Heat(r.Attn[r.Heads], 7, 7), 364, 364))
	s, err := r.Similarity(5*7 + 2)
	require.NoError(t, err)
	requireSame(t, "similarity", shot, sim, viz.Upsample(viz.Heat(s, 7, 7), 364, 364))
	col, row := brightestCell(shot, sim, 7, 7)
	require.Equal(t, [2]int{2, 5}, [2]int{col, row}, "the similarity map peaks at the chosen patch")

	// The input, with the chosen patch (cells of 52 pixels) outlined in white.
	in := viz.Upsample(r.Input, 364, 364)
	require.Equal(t, color.RGBA{255, 255, 255, 255}, shot.RGBAAt(input.Min.X+2*52, input.Min.Y+5*52+20))
	require.Equal(t, in.RGBAAt(2*52+20, 5*52+20), shot.RGBAAt(input.Min.X+2*52+20, input.Min.Y+5*52+20))
	requireSame(t, "input away from the outline", shot, image.Rect(input.Min.X, input.Min.Y, input.Max.X, input.Min.Y+5*52), in.SubImage(image.Rect(0, 0, 364, 5*52)).(*image.RGBA))
}

// TestScreenshotHeadAndGrid: a model with registers on a photo whose grid
// is not square (212x320 at short side 42: 42x70, 3x5 patches of 14), one
// attention head, the similarity patch in a corner. Panels 9x: 630x378.
func TestScreenshotHeadAndGrid(t *testing.T) {
	shot := takeScreenshot(t, "--model", randomModel, "--image", catPhoto, "--short", "42", "--head", "2", "--patch", "4,0")
	require.Equal(t, image.Rect(0, 0, 6+630+6+630+6, 2*(6+16+378)+6+4*16), shot.Rect)
	r := reference(t, randomModel, catPhoto, 42)
	require.Equal(t, [3]int{3, 5, 4}, [3]int{r.GH, r.GW, r.Registers})
	top := 6 + 16 + 378 + 6 + 16 // the second row of panels
	attn, sim := image.Rect(6, top, 6+630, top+378), image.Rect(6+630+6, top, 6+630+6+630, top+378)
	requireSame(t, "head 2", shot, attn, viz.Upsample(viz.Heat(r.Attn[1], 3, 5), 630, 378))
	col, row := brightestCell(shot, sim, 5, 3)
	require.Equal(t, [2]int{4, 0}, [2]int{col, row})
}

// TestPatchAt: every panel maps a pixel back to its grid cell, so a click
// anywhere picks the same patch; the gaps pick none.
func TestPatchAt(t *testing.T) {
	v := &view{res: &viewer.Result{H: 28, W: 28, GH: 7, GW: 7}, scale: 13}
	for _, p := range [][4]int{{6, 22, 0, 0}, {369, 385, 6, 6}, {376 + 2*52, 22 + 5*52, 2, 5}, {6 + 51, 408 + 52, 0, 1}, {739, 771, 6, 6}} {
		col, row, ok := v.patchAt(p[0], p[1])
		require.True(t, ok, p)
		require.Equal(t, [2]int{p[2], p[3]}, [2]int{col, row}, p)
	}
	for _, p := range [][2]int{{3, 30}, {372, 30}, {100, 390}, {100, 800}} {
		_, _, ok := v.patchAt(p[0], p[1])
		require.False(t, ok, p)
	}
}

func TestHelpAndBadInputs(t *testing.T) {
	rc, out := viewRun(t, "--help")
	require.Equal(t, 0, rc)
	require.Contains(t, out, "usage: view")
	require.Contains(t, out, "--screenshot")

	dir := t.TempDir()
	png := filepath.Join(dir, "x.png")
	for _, c := range []struct {
		args []string
		rc   int
		want string
	}{
		{[]string{"--model", filepath.Join(dir, "missing.msgpack")}, 1, "missing.msgpack: no such file or directory"},
		{[]string{"--image", filepath.Join(dir, "missing.jpg")}, 1, "missing.jpg: no such file or directory"},
		{[]string{"--model", catPhoto}, 1, "chelsea.jpg is not a webdino checkpoint (.msgpack"},
		{[]string{"--image", fashionModel}, 1, "fashion-demo.msgpack: not an image"},
		{[]string{"--short", "30"}, 1, "--short 30 is not a multiple of the patch size 4 of bundled models/fashion-demo.msgpack (try 28)"},
		{[]string{"--short", "-4"}, 2, "must not be negative"},
		{[]string{"--patch", "7,0"}, 1, "--patch: patch 7,0 is outside the 7x7 patch grid"},
		{[]string{"--patch", "1,2,3"}, 2, `--patch "1,2,3": want X,Y`},
		{[]string{"--head", "5"}, 1, "--head 5: the model has 4 heads"},
		{[]string{"--bogus"}, 2, "flag provided but not defined: -bogus"},
	} {
		rc, out := viewRun(t, append(c.args, "--screenshot", png)...)
		require.Equal(t, c.rc, rc, "%v: %s", c.args, out)
		require.Contains(t, out, c.want, c.args)
	}
	rc, out = viewRun(t, "photo.jpg")
	require.Equal(t, 2, rc)
	require.Contains(t, out, `unexpected arguments ["photo.jpg"]`)
	_, err := os.Stat(png)
	require.True(t, os.IsNotExist(err), "no screenshot after an error")

	// Without a display, the window mode says what to do instead of crashing.
	t.Setenv("DISPLAY", "")
	rc, out = viewRun(t)
	require.Equal(t, 1, rc)
	require.Contains(t, out, "no display to open a window on (DISPLAY is not set): use --screenshot FILE.png")
}
