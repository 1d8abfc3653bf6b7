package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"

	"golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/viz"
)

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

// label draws text with its baseline at (x, y).
func label(img *image.RGBA, x, y int, c color.Color, text string) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(text)
}

// histogram draws the distribution of values in [-1, 1] (100 bins of 0.02
// over the range the values span) with a square-root count axis, so the
// thin tail of high similarities stays visible beside the bulk, and a red
// line at every mark.
func histogram(values []float32, marks []float32, title string) *image.RGBA {
	const W, H, left, right, top, bottom = 720, 400, 60, 20, 30, 40
	lo, hi := float32(1), float32(-1)
	for _, v := range values {
		if !math.IsInf(float64(v), 0) {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	for _, m := range marks {
		lo, hi = min(lo, m), max(hi, m)
	}
	lo = float32(math.Floor(float64(lo)*10) / 10)
	hi = float32(math.Ceil(float64(hi)*10) / 10)
	if hi <= lo {
		hi = lo + 0.1
	}
	const bins = 100
	counts := make([]int, bins)
	peak := 1
	for _, v := range values {
		if math.IsInf(float64(v), 0) {
			continue
		}
		b := min(bins-1, int(float32(bins)*(v-lo)/(hi-lo)))
		counts[b]++
		peak = max(peak, counts[b])
	}
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	pw, ph := W-left-right, H-top-bottom
	x := func(v float32) int { return left + int(float32(pw)*(v-lo)/(hi-lo)) }
	bar := color.RGBA{70, 110, 180, 255}
	for b, c := range counts {
		h := int(float64(ph) * math.Sqrt(float64(c)/float64(peak)))
		r := image.Rect(left+b*pw/bins, top+ph-h, left+(b+1)*pw/bins-1, top+ph)
		draw.Draw(img, r, image.NewUniform(bar), image.Point{}, draw.Src)
	}
	black, grey, red := color.Black, color.Gray{160}, color.RGBA{220, 30, 30, 255}
	for xx := left; xx <= left+pw; xx++ {
		img.Set(xx, top+ph, black)
	}
	for yy := top; yy <= top+ph; yy++ {
		img.Set(left, yy, black)
	}
	for t := lo; t <= hi+1e-6; t += 0.1 {
		img.Set(x(t), top+ph+1, black)
		img.Set(x(t), top+ph+2, black)
		label(img, x(t)-10, top+ph+16, black, fmt.Sprintf("%.1f", t))
	}
	for _, m := range marks {
		for yy := top; yy < top+ph; yy++ {
			img.Set(x(m), yy, red)
		}
		text := fmt.Sprintf("> %g", m)
		at := x(m) + 3
		if at+7*len(text) > W { // keep the label inside: left of the line
			at = x(m) - 3 - 7*len(text)
		}
		label(img, at, top+12, red, text)
	}
	label(img, left, 18, black, fmt.Sprintf("%s: %d images", title, len(values)))
	label(img, left-55, top+10, grey, fmt.Sprint(peak))
	label(img, left-20, top+ph, grey, "0")
	label(img, W/2-90, H-8, black, "similarity (bars: sqrt of count)")
	return img
}

// groupGrid draws each group of image paths as one row of at most cols
// thumbnails of side px (grey when the image cannot be read).
func groupGrid(groups [][]string, cols, px int) *image.RGBA {
	var cells []image.Image
	blank := image.NewRGBA(image.Rect(0, 0, px, px))
	draw.Draw(blank, blank.Bounds(), image.NewUniform(color.Gray{40}), image.Point{}, draw.Src)
	for _, g := range groups {
		for c := range cols {
			if c >= len(g) {
				cells = append(cells, blank)
				continue
			}
			cells = append(cells, thumbnail(g[c], px))
		}
	}
	return viz.Tile(cols, 2, cells...)
}

func thumbnail(path string, px int) image.Image {
	dst := image.NewRGBA(image.Rect(0, 0, px, px))
	im, err := data.LoadImage(path, data.DecodeOptions{})
	if err != nil {
		draw.Draw(dst, dst.Bounds(), image.NewUniform(color.Gray{128}), image.Point{}, draw.Src)
		return dst
	}
	src := image.NewRGBA(image.Rect(0, 0, im.W, im.H))
	for i := range im.W * im.H {
		copy(src.Pix[4*i:4*i+3], im.Pix[3*i:3*i+3])
		src.Pix[4*i+3] = 255
	}
	draw.ApproxBiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	return dst
}
