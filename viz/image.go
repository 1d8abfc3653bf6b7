package viz

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
)

// FromCHW turns a normalised model input [3, h, w] back into a picture:
// x * std + mean, clamped to [0, 1], scaled to bytes.
func FromCHW(x []float32, h, w int, mean, std [3]float64) (*image.RGBA, error) {
	if h <= 0 || w <= 0 || len(x) != 3*h*w {
		return nil, fmt.Errorf("from_chw: %d values for 3x%dx%d", len(x), h, w)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for xx := 0; xx < w; xx++ {
			o := img.PixOffset(xx, y)
			for c := 0; c < 3; c++ {
				v := float64(x[(c*h+y)*w+xx])*std[c] + mean[c]
				img.Pix[o+c] = uint8(math.Round(255 * math.Max(0, math.Min(1, v))))
			}
			img.Pix[o+3] = 255
		}
	}
	return img, nil
}

// Upsample scales src to w x h by nearest neighbour: each patch stays a
// crisp square, which shows the model's true resolution.
func Upsample(src image.Image, w, h int) *image.RGBA {
	b := src.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		sy := b.Min.Y + y*b.Dy()/h
		for x := 0; x < w; x++ {
			dst.Set(x, y, src.At(b.Min.X+x*b.Dx()/w, sy))
		}
	}
	return dst
}

// Tile lays images out left to right in rows of cols, each cell as large as
// the largest image, gap black pixels between cells; images sit at the
// top-left of their cells.
func Tile(cols, gap int, imgs ...image.Image) *image.RGBA {
	cw, ch := 0, 0
	for _, im := range imgs {
		cw, ch = max(cw, im.Bounds().Dx()), max(ch, im.Bounds().Dy())
	}
	cols = max(1, min(cols, len(imgs)))
	rows := (len(imgs) + cols - 1) / cols
	out := image.NewRGBA(image.Rect(0, 0, cols*cw+(cols-1)*gap, max(0, rows*ch+(rows-1)*gap)))
	draw.Draw(out, out.Bounds(), image.NewUniform(color.Black), image.Point{}, draw.Src)
	for i, im := range imgs {
		at := image.Pt((i%cols)*(cw+gap), (i/cols)*(ch+gap))
		draw.Draw(out, im.Bounds().Sub(im.Bounds().Min).Add(at), im, im.Bounds().Min, draw.Src)
	}
	return out
}

// FigurePicture puts the input picture and the figure, upsampled to the
// picture's size, side by side with a gap.
func FigurePicture(input image.Image, f Figure, gap int) *image.RGBA {
	b := input.Bounds()
	return Tile(2, gap, input, Upsample(f.Image(), b.Dx(), b.Dy()))
}

// heatStops approximate the "magma" colour map at 0, 1/4, 1/2, 3/4 and 1:
// dark for low values, so small attention recedes into black.
var heatStops = [5][3]float64{{0, 0, 4}, {81, 18, 124}, {183, 55, 121}, {252, 137, 97}, {252, 253, 191}}

// heatColor maps v in [0, 1] through heatStops.
func heatColor(v float64) color.RGBA {
	v = math.Max(0, math.Min(1, v)) * float64(len(heatStops)-1)
	i := min(int(v), len(heatStops)-2)
	t := v - float64(i)
	var c [3]uint8
	for k := range c {
		c[k] = uint8(math.Round(heatStops[i][k]*(1-t) + heatStops[i+1][k]*t))
	}
	return color.RGBA{c[0], c[1], c[2], 255}
}

// Heat draws m [gh*gw] as a gw x gh picture, min-max scaled.
func Heat(m []float32, gh, gw int) *image.RGBA {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range m {
		lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
	}
	img := image.NewRGBA(image.Rect(0, 0, gw, gh))
	for q, v := range m {
		t := 0.0
		if hi > lo {
			t = (float64(v) - lo) / (hi - lo)
		}
		img.SetRGBA(q%gw, q/gw, heatColor(t))
	}
	return img
}

// AttnMaps splits one image's CLS attention [heads, T] (nn.Output.Attn0,
// T = 1 + registers + gh*gw) into per-head maps over the patch grid, cls
// and register columns dropped, followed by their mean over heads.
func AttnMaps(attn []float32, heads, registers, gh, gw int) ([][]float32, error) {
	np := gh * gw
	T := 1 + registers + np
	if heads <= 0 || registers < 0 || gh <= 0 || gw <= 0 || len(attn) != heads*T {
		return nil, fmt.Errorf("attn maps: %d values for %d heads of 1 + %d + %dx%d tokens", len(attn), heads, registers, gh, gw)
	}
	maps := make([][]float32, heads+1)
	mean := make([]float32, np)
	for h := 0; h < heads; h++ {
		maps[h] = attn[h*T+1+registers : (h+1)*T]
		for q, v := range maps[h] {
			mean[q] += v / float32(heads)
		}
	}
	maps[heads] = mean
	return maps, nil
}

// AttnPicture tiles the input picture, the mean attention map and each
// head's map (all upsampled to the picture's size) in rows of cols.
func AttnPicture(input image.Image, attn []float32, heads, registers, gh, gw, cols, gap int) (*image.RGBA, error) {
	maps, err := AttnMaps(attn, heads, registers, gh, gw)
	if err != nil {
		return nil, err
	}
	b := input.Bounds()
	tiles := []image.Image{input, Upsample(Heat(maps[heads], gh, gw), b.Dx(), b.Dy())}
	for _, m := range maps[:heads] {
		tiles = append(tiles, Upsample(Heat(m, gh, gw), b.Dx(), b.Dy()))
	}
	return Tile(cols, gap, tiles...), nil
}
