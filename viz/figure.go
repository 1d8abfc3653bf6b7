package viz

import (
	"fmt"
	"image"
	"image/color"
	"math"
)

// Patches are one image's patch features [GH*GW, D], row-major over the
// patch grid (nn.Output.PatchTokens of one image).
type Patches struct {
	Feat   []float32
	GH, GW int
}

// SignRule decides which side of the first component is the foreground.
type SignRule int

const (
	// SignCentre takes the side whose patches lie closer to the image
	// centre on average (mean squared distance of patch centres, in units
	// of the image size, so rectangular grids weigh both axes alike):
	// photos frame their subject. It falls back to SignMinority when a
	// side is empty.
	SignCentre SignRule = iota
	// SignMinority takes the side with fewer patches: objects are usually
	// smaller than their background.
	SignMinority
)

// FigureOpts configure PCAFigure.
type FigureOpts struct {
	// PerImage fits each image's PCA on its own patches; by default one PCA
	// is fitted jointly on all images' patches, as the paper does for the
	// images of a set, so that colours match across images.
	PerImage bool
	Sign     SignRule
	// Threshold on the first component in units of its standard deviation:
	// a patch is foreground when its signed coordinate exceeds it. 0 splits
	// at the mean.
	Threshold float64
}

// Figure is the colouring of one image's patch grid.
type Figure struct {
	GH, GW     int
	Foreground []bool  // [GH*GW]
	RGB        []uint8 // [GH*GW*3], background black
}

// PCAFigure makes the pictures of the DINOv2 paper's Figure 1: a PCA of the
// patch features whose first component, thresholded, separates foreground
// from background (the side is chosen by o.Sign), then a second PCA of the
// foreground patches alone whose first three components, each min-max
// scaled to [0, 1] over the fitted patches, are the red, green and blue of
// the foreground; the background is black. d is the feature width.
func PCAFigure(images []Patches, d int, o FigureOpts) ([]Figure, error) {
	if len(images) == 0 {
		return nil, fmt.Errorf("pca figure: no images")
	}
	for i, im := range images {
		if im.GH <= 0 || im.GW <= 0 || len(im.Feat) != im.GH*im.GW*d {
			return nil, fmt.Errorf("pca figure: image %d has %d values for a %dx%d grid of %d features", i, len(im.Feat), im.GH, im.GW, d)
		}
	}
	figs := make([]Figure, len(images))
	groups := [][]int{}
	if o.PerImage {
		for i := range images {
			groups = append(groups, []int{i})
		}
	} else {
		all := make([]int, len(images))
		for i := range all {
			all[i] = i
		}
		groups = append(groups, all)
	}
	for _, g := range groups {
		if err := figureGroup(images, g, d, o, figs); err != nil {
			return nil, err
		}
	}
	return figs, nil
}

// figureGroup colours the images of one PCA fit.
func figureGroup(images []Patches, group []int, d int, o FigureOpts, figs []Figure) error {
	var x []float32
	for _, i := range group {
		x = append(x, images[i].Feat...)
	}
	n := len(x) / d
	first, err := FitPCA(x, n, d, 1)
	if err != nil {
		return err
	}
	p1 := first.Project(x)
	thr := o.Threshold * math.Sqrt(first.Variance[0])
	sign := chooseSign(images, group, p1, thr, o.Sign)
	fg := make([]bool, n)
	var fx []float32
	for r, v := range p1 {
		if sign*v > thr {
			fg[r] = true
			fx = append(fx, x[r*d:(r+1)*d]...)
		}
	}
	var rgb [][3]float64
	if nf := len(fx) / d; nf > 0 {
		second, err := FitPCA(fx, nf, d, min(3, d))
		if err != nil {
			return err
		}
		rgb = minMaxRGB(second.Project(fx), len(second.Components))
	}
	r, f := 0, 0
	for _, i := range group {
		im := images[i]
		np := im.GH * im.GW
		fig := Figure{GH: im.GH, GW: im.GW, Foreground: fg[r : r+np], RGB: make([]uint8, 3*np)}
		for q := 0; q < np; q++ {
			if fig.Foreground[q] {
				for c := 0; c < 3; c++ {
					fig.RGB[3*q+c] = uint8(math.Round(255 * rgb[f][c]))
				}
				f++
			}
		}
		figs[i] = fig
		r += np
	}
	return nil
}

// chooseSign returns +1 or -1: the multiplier of the first component that
// makes the foreground side the one rule picks.
func chooseSign(images []Patches, group []int, p1 []float64, thr float64, rule SignRule) float64 {
	var count [2]int          // patches above thr with sign +1, -1
	var centreDist [2]float64 // their summed squared distance to the centre
	r := 0
	for _, i := range group {
		im := images[i]
		for y := 0; y < im.GH; y++ {
			for x := 0; x < im.GW; x++ {
				dy := (float64(y)+0.5)/float64(im.GH) - 0.5
				dx := (float64(x)+0.5)/float64(im.GW) - 0.5
				for s, sign := range [2]float64{1, -1} {
					if sign*p1[r] > thr {
						count[s]++
						centreDist[s] += dx*dx + dy*dy
					}
				}
				r++
			}
		}
	}
	if rule == SignCentre && count[0] > 0 && count[1] > 0 {
		if centreDist[1]/float64(count[1]) < centreDist[0]/float64(count[0]) {
			return -1
		}
		return 1
	}
	// Minority, among the non-empty sides.
	if count[1] > 0 && (count[0] == 0 || count[1] < count[0]) {
		return -1
	}
	return 1
}

// minMaxRGB scales each of the k (<= 3) columns of proj [n, k] to [0, 1]
// over its n values; a constant column (or a missing one) becomes 0.5.
func minMaxRGB(proj []float64, k int) [][3]float64 {
	n := len(proj) / k
	out := make([][3]float64, n)
	for c := 0; c < 3; c++ {
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := 0; c < k && i < n; i++ {
			lo, hi = math.Min(lo, proj[i*k+c]), math.Max(hi, proj[i*k+c])
		}
		for i := range out {
			out[i][c] = 0.5
			if c < k && hi > lo {
				out[i][c] = (proj[i*k+c] - lo) / (hi - lo)
			}
		}
	}
	return out
}

// Image returns the figure as a GW x GH picture, one pixel per patch.
func (f Figure) Image() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, f.GW, f.GH))
	for q := 0; q < f.GH*f.GW; q++ {
		img.SetRGBA(q%f.GW, q/f.GW, color.RGBA{f.RGB[3*q], f.RGB[3*q+1], f.RGB[3*q+2], 255})
	}
	return img
}
