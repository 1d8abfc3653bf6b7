package viz

import (
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// planted returns n rows of width d whose sample covariance (1/n) is
// exactly sum_k sigma_k^2 u_k u_k^T for orthonormal random u_k, around a
// random mean: centred, orthonormalised scores times sqrt(n).
func planted(rng *rand.Rand, n, d int, sigma []float64) (x []float32, mean []float64, u [][]float64) {
	orthonormal := func(vs [][]float64) {
		for i := range vs {
			for j := 0; j < i; j++ {
				dot := 0.0
				for t := range vs[i] {
					dot += vs[i][t] * vs[j][t]
				}
				for t := range vs[i] {
					vs[i][t] -= dot * vs[j][t]
				}
			}
			norm := 0.0
			for _, v := range vs[i] {
				norm += v * v
			}
			for t := range vs[i] {
				vs[i][t] /= math.Sqrt(norm)
			}
		}
	}
	randVecs := func(k, m int, centre bool) [][]float64 {
		vs := make([][]float64, k)
		for i := range vs {
			vs[i] = make([]float64, m)
			s := 0.0
			for t := range vs[i] {
				vs[i][t] = rng.NormFloat64()
				s += vs[i][t]
			}
			for t := range vs[i] {
				if centre {
					vs[i][t] -= s / float64(m)
				}
			}
		}
		return vs
	}
	k := len(sigma)
	u = randVecs(k, d, false)
	orthonormal(u)
	z := randVecs(k, n, true) // centred columns of the scores, as rows here
	orthonormal(z)
	mean = make([]float64, d)
	for j := range mean {
		mean[j] = rng.NormFloat64()
	}
	x = make([]float32, n*d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			v := mean[j]
			for c := 0; c < k; c++ {
				v += z[c][i] * math.Sqrt(float64(n)) * sigma[c] * u[c][j]
			}
			x[i*d+j] = float32(v)
		}
	}
	return x, mean, u
}

func TestFitPCAFindsPlantedDirections(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sigma := []float64{3, 2, 1}
	// n > d uses the covariance, n < d the Gram matrix.
	for _, shape := range [][2]int{{50, 8}, {7, 40}} {
		n, d := shape[0], shape[1]
		x, mean, u := planted(rng, n, d, sigma)
		p, err := FitPCA(x, n, d, 4)
		require.NoError(t, err)
		// The data pass through float32 (relative rounding 6e-8 of values
		// up to ~10), so 1e-4 absolute bounds every comparison.
		const tol = 1e-4
		for j := range mean {
			require.InDelta(t, mean[j], p.Mean[j], tol)
		}
		for c, s := range sigma {
			require.InDelta(t, s*s, p.Variance[c], tol, "n %d d %d variance %d", n, d, c)
			dot := 0.0
			for j := range u[c] {
				dot += u[c][j] * p.Components[c][j]
			}
			require.InDelta(t, 1, math.Abs(dot), tol, "n %d d %d component %d", n, d, c)
		}
		// Rank 3: the fourth component is zero with zero variance.
		require.InDelta(t, 0, p.Variance[3], tol)
		proj := p.Project(x)
		for c, s := range sigma {
			ss := 0.0
			for i := 0; i < n; i++ {
				ss += proj[i*4+c] * proj[i*4+c]
			}
			require.InDelta(t, s*s, ss/float64(n), tol, "projected variance %d", c)
		}
	}
}

func TestFitPCABadInput(t *testing.T) {
	_, err := FitPCA(make([]float32, 5), 2, 3, 1)
	require.EqualError(t, err, "pca: 5 values for 2 rows of 3")
	_, err = FitPCA(make([]float32, 6), 2, 3, 4)
	require.EqualError(t, err, "pca: 4 components of 3-dimensional rows")
}

// objectGrid returns patch features of a g x g grid where the patches in
// the box [lo, hi) x [lo, hi) are near fg and the others near bg; within
// the object, three planted directions vary with position so the second
// PCA has structure to colour.
func objectGrid(rng *rand.Rand, g, lo, hi, d int) (Patches, []bool) {
	p := Patches{GH: g, GW: g, Feat: make([]float32, g*g*d)}
	inside := make([]bool, g*g)
	for y := 0; y < g; y++ {
		for x := 0; x < g; x++ {
			q := y*g + x
			f := p.Feat[q*d : (q+1)*d]
			for j := range f {
				f[j] = float32(0.01 * rng.NormFloat64())
			}
			if y >= lo && y < hi && x >= lo && x < hi {
				inside[q] = true
				f[0] += 5
				f[1] += float32(x)
				f[2] += float32(y)
				f[3] += float32(x * y % 3)
			} else {
				f[0] -= 5
			}
		}
	}
	return p, inside
}

func TestPCAFigureSeparatesCentredObject(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const d = 16
	// A 5x5 object in a 7x7 grid is the majority (25 of 49 patches): the
	// centre rule keeps it, the minority rule picks the border.
	img, inside := objectGrid(rng, 7, 1, 6, d)
	figs, err := PCAFigure([]Patches{img}, d, FigureOpts{})
	require.NoError(t, err)
	require.Equal(t, inside, figs[0].Foreground)
	figs, err = PCAFigure([]Patches{img}, d, FigureOpts{Sign: SignMinority})
	require.NoError(t, err)
	for q, in := range inside {
		require.Equal(t, !in, figs[0].Foreground[q], "patch %d", q)
	}

	// A small centred object: both rules agree.
	small, inside := objectGrid(rng, 6, 2, 4, d)
	for _, rule := range []SignRule{SignCentre, SignMinority} {
		figs, err := PCAFigure([]Patches{small}, d, FigureOpts{Sign: rule})
		require.NoError(t, err)
		require.Equal(t, inside, figs[0].Foreground, "rule %d", rule)
		f := figs[0]
		// Background is black; min-max scaling reaches 0 and 255 in every
		// channel over the foreground.
		var lo, hi [3]uint8
		lo = [3]uint8{255, 255, 255}
		for q, in := range f.Foreground {
			for c := 0; c < 3; c++ {
				v := f.RGB[3*q+c]
				if !in {
					require.Zero(t, v)
					continue
				}
				lo[c], hi[c] = min(lo[c], v), max(hi[c], v)
			}
		}
		require.Equal(t, [3]uint8{}, lo)
		require.Equal(t, [3]uint8{255, 255, 255}, hi)
	}
}

func TestPCAFigureJointColoursMatchAcrossImages(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const d = 12
	a, _ := objectGrid(rng, 6, 1, 5, d)
	b := Patches{GH: 6, GW: 6, Feat: append([]float32(nil), a.Feat...)}
	figs, err := PCAFigure([]Patches{a, b}, d, FigureOpts{})
	require.NoError(t, err)
	require.Equal(t, figs[0].RGB, figs[1].RGB)
	require.Equal(t, figs[0].Foreground, figs[1].Foreground)
	per, err := PCAFigure([]Patches{a, b}, d, FigureOpts{PerImage: true})
	require.NoError(t, err)
	require.Equal(t, figs[0].Foreground, per[0].Foreground)

	_, err = PCAFigure([]Patches{{GH: 2, GW: 2, Feat: make([]float32, 3)}}, d, FigureOpts{})
	require.EqualError(t, err, "pca figure: image 0 has 3 values for a 2x2 grid of 12 features")
}

func TestLayout(t *testing.T) {
	red := image.NewRGBA(image.Rect(0, 0, 3, 2))
	for i := 0; i < len(red.Pix); i += 4 {
		copy(red.Pix[i:], []uint8{255, 0, 0, 255})
	}
	small := image.NewRGBA(image.Rect(0, 0, 1, 1))
	small.SetRGBA(0, 0, color.RGBA{0, 0, 255, 255})
	out := Tile(2, 1, red, small, small)
	// Cells are 3x2; two columns with a 1-pixel gap, two rows.
	require.Equal(t, image.Rect(0, 0, 7, 5), out.Bounds())
	require.Equal(t, color.RGBA{255, 0, 0, 255}, out.RGBAAt(2, 1))
	require.Equal(t, color.RGBA{0, 0, 0, 255}, out.RGBAAt(3, 0)) // gap
	require.Equal(t, color.RGBA{0, 0, 255, 255}, out.RGBAAt(4, 0))
	require.Equal(t, color.RGBA{0, 0, 0, 255}, out.RGBAAt(5, 0)) // rest of the cell
	require.Equal(t, color.RGBA{0, 0, 255, 255}, out.RGBAAt(0, 3))

	f := Figure{GH: 1, GW: 2, Foreground: []bool{true, false}, RGB: []uint8{10, 20, 30, 0, 0, 0}}
	in := image.NewRGBA(image.Rect(0, 0, 28, 14))
	pic := FigurePicture(in, f, 2)
	require.Equal(t, image.Rect(0, 0, 58, 14), pic.Bounds())
	// Nearest upsampling: patch (0, 0) covers pixels 0..13 of the map.
	require.Equal(t, color.RGBA{10, 20, 30, 255}, pic.RGBAAt(30, 13))
	require.Equal(t, color.RGBA{10, 20, 30, 255}, pic.RGBAAt(30+13, 0))
	require.Equal(t, color.RGBA{0, 0, 0, 255}, pic.RGBAAt(30+14, 0))

	// FromCHW inverts the normalisation.
	mean, std := [3]float64{0.5, 0.4, 0.3}, [3]float64{0.2, 0.25, 0.5}
	x := []float32{float32((1 - 0.5) / 0.2), float32((0 - 0.4) / 0.25), float32((0.2 - 0.3) / 0.5)}
	img, err := FromCHW(x, 1, 1, mean, std)
	require.NoError(t, err)
	require.Equal(t, color.RGBA{255, 0, 51, 255}, img.RGBAAt(0, 0))
}

func TestAttnMaps(t *testing.T) {
	// 2 heads, 1 register, a 1x3 grid: T = 5.
	attn := []float32{
		0.5, 0.2, 0.1, 0.1, 0.1,
		0.1, 0.1, 0.0, 0.3, 0.5,
	}
	maps, err := AttnMaps(attn, 2, 1, 1, 3)
	require.NoError(t, err)
	require.Equal(t, []float32{0.1, 0.1, 0.1}, maps[0])
	require.Equal(t, []float32{0.0, 0.3, 0.5}, maps[1])
	require.InDeltaSlice(t, []float32{0.05, 0.2, 0.3}, maps[2], 1e-7)
	h := Heat(maps[1], 1, 3)
	require.Equal(t, heatColor(0), h.RGBAAt(0, 0))
	require.Equal(t, color.RGBA{252, 253, 191, 255}, h.RGBAAt(2, 0))

	pic, err := AttnPicture(image.NewRGBA(image.Rect(0, 0, 6, 2)), attn, 2, 1, 1, 3, 2, 1)
	require.NoError(t, err)
	// input, mean, head 0, head 1 in two rows of two 6x2 cells.
	require.Equal(t, image.Rect(0, 0, 13, 5), pic.Bounds())
	require.Equal(t, color.RGBA{252, 253, 191, 255}, pic.RGBAAt(7+5, 3)) // head 1's largest patch

	_, err = AttnMaps(attn, 2, 0, 1, 3)
	require.EqualError(t, err, "attn maps: 10 values for 2 heads of 1 + 0 + 1x3 tokens")
}
