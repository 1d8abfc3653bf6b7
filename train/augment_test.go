//go:build !js

package train

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/nn/ref"
)

func TestRandomResizedCropRanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	c := DINOv2Augment()
	for _, tc := range []struct {
		h, w  int
		scale [2]float64
	}{{300, 451, c.GlobalScale}, {300, 451, c.LocalScale}, {28, 28, c.GlobalScale}, {28, 28, c.LocalScale}} {
		for i := 0; i < 2000; i++ {
			top, left, h, w := RandomResizedCrop(rng, tc.h, tc.w, tc.scale, c.Ratio)
			require.True(t, top >= 0 && left >= 0 && h > 0 && w > 0 && top+h <= tc.h && left+w <= tc.w, "box %d %d %d %d", top, left, h, w)
			// Each side is rounded by at most half a pixel, so area and
			// ratio may leave their ranges by that much.
			area := float64(h*w) / float64(tc.h*tc.w)
			slack := (float64(h+w)/2 + 0.25) / float64(tc.h*tc.w)
			require.True(t, area >= tc.scale[0]-slack && area <= tc.scale[1]+slack, "area %.4f outside %v", area, tc.scale)
			ar := float64(w) / float64(h)
			require.True(t, ar >= c.Ratio[0]*float64(w)/(float64(w)+0.5)*(float64(h)-0.5)/float64(h) &&
				ar <= c.Ratio[1]*(float64(w)+0.5)/float64(w)*float64(h)/(float64(h)-0.5), "ratio %.4f", ar)
		}
	}
	// The fallback: no box with a ratio in range fits a 10 x 1000 strip, so
	// the centred box of ratio 4/3 is taken (round(13.33) = 13 wide).
	top, left, h, w := RandomResizedCrop(rng, 10, 1000, c.GlobalScale, c.Ratio)
	require.Equal(t, []int{0, 493, 10, 13}, []int{top, left, h, w})
	top, left, h, w = RandomResizedCrop(rng, 1000, 10, c.GlobalScale, c.Ratio)
	require.Equal(t, []int{493, 0, 13, 10}, []int{top, left, h, w})
}

func TestSampleStatistics(t *testing.T) {
	a, err := NewAugmenter(DINOv2Augment(), 7)
	require.NoError(t, err)
	const B = 2500
	sizes := make([][2]int, B)
	for i := range sizes {
		sizes[i] = [2]int{200 + i%97, 300 - i%53}
	}
	global, local := a.Sample(sizes)
	require.Len(t, global, 2*B)
	require.Len(t, local, 8*B)
	rate := func(crops []nn.Crop, f func(nn.Crop) bool) float64 {
		n := 0
		for _, c := range crops {
			if f(c) {
				n++
			}
		}
		return float64(n) / float64(len(crops))
	}
	g1, g2 := global[:B], global[B:]
	all := append(append([]nn.Crop(nil), global...), local...)
	// Binomial standard deviations are at most sqrt(0.25/2500) = 0.01 for
	// one global crop column and 0.0035 over all 25000 crops: tolerances
	// of 0.04 and 0.015 are about 4 standard deviations.
	require.InDelta(t, 0.5, rate(all, func(c nn.Crop) bool { return c.Flip }), 0.015, "flip")
	require.InDelta(t, 0.8, rate(all, func(c nn.Crop) bool { return len(c.Photo.Jitter) == 4 }), 0.015, "jitter")
	require.InDelta(t, 0.2, rate(all, func(c nn.Crop) bool { return c.Photo.Gray }), 0.015, "gray")
	blur := func(c nn.Crop) bool { return c.Photo.Sigma > 0 }
	require.Equal(t, 1.0, rate(g1, blur), "blur global 1")
	require.InDelta(t, 0.1, rate(g2, blur), 0.04, "blur global 2")
	require.InDelta(t, 0.5, rate(local, blur), 0.015, "blur local")
	sol := func(c nn.Crop) bool { return c.Photo.Solarize }
	require.InDelta(t, 0.2, rate(g2, sol), 0.04, "solarize global 2")
	require.Zero(t, rate(g1, sol)+rate(local, sol), "solarize elsewhere")
	for i, c := range all {
		b := c.Image
		require.Equal(t, i%B, b, "crop-major order")
		size := 224
		if i >= 2*B {
			size = 98
		}
		require.True(t, c.RH == size && c.RW == size && c.OY == 0 && c.OX == 0)
		require.True(t, c.Top+c.H <= sizes[b][0] && c.Left+c.W <= sizes[b][1])
		ph := c.Photo
		if ph.Sigma > 0 {
			require.True(t, ph.Sigma >= 0.1 && ph.Sigma <= 2)
		}
		if len(ph.Jitter) > 0 {
			require.True(t, ph.Brightness >= 0.6 && ph.Brightness <= 1.4 && ph.Contrast >= 0.6 && ph.Contrast <= 1.4 &&
				ph.Saturation >= 0.8 && ph.Saturation <= 1.2 && math.Abs(ph.Hue) <= 0.1, "%+v", ph)
		}
	}
	// The random order of jitter ops: each op comes first about a quarter
	// of the time (sd 0.003 over 20000 jittered crops).
	first := [4]int{}
	n := 0
	for _, c := range all {
		if len(c.Photo.Jitter) > 0 {
			first[c.Photo.Jitter[0]]++
			n++
		}
	}
	for op, k := range first {
		require.InDelta(t, 0.25, float64(k)/float64(n), 0.015, "op %d first", op)
	}
	// Area fractions span the configured scales.
	lo, hi := 1.0, 0.0
	for i, c := range local {
		s := sizes[i%B]
		f := float64(c.H*c.W) / float64(s[0]*s[1])
		lo, hi = math.Min(lo, f), math.Max(hi, f)
	}
	require.True(t, lo < 0.06 && hi > 0.30, "local areas span [%.3f, %.3f]", lo, hi)
}

func TestAugmentConfigErrors(t *testing.T) {
	c := DINOv2Augment()
	c.LocalSize = 96
	_, err := NewAugmenter(c, 1)
	require.ErrorContains(t, err, "augment: crop sizes 224 and 96 must be positive multiples of the patch size 14")
	c = DINOv2Augment()
	c.GlobalScale = [2]float64{0.5, 1.2}
	_, err = NewAugmenter(c, 1)
	require.ErrorContains(t, err, "augment: scales")
	c = DINOv2Augment()
	c.JitterP = 1.5
	_, err = NewAugmenter(c, 1)
	require.ErrorContains(t, err, "augment: probabilities must lie in [0, 1]")
	c = DINOv2Augment()
	c.Patch, c.GlobalSize, c.LocalSize = 2, 4, 4
	_, err = NewAugmenter(c, 1)
	require.ErrorContains(t, err, "the 9-tap blur needs at least 5")
}

// photoBatch returns n random-ish smooth RGB images of h x w (gradients plus
// noise, so every op changes something).
func photoBatch(rng *rand.Rand, n, h, w int) []nn.Image {
	imgs := make([]nn.Image, n)
	for i := range imgs {
		im := nn.Image{H: h, W: w, C: 3, Pix: make([]byte, h*w*3)}
		for p := 0; p < h*w; p++ {
			y, x := p/w, p%w
			for c := 0; c < 3; c++ {
				v := 128 + 100*math.Sin(float64(x*(c+1)+i)/17+float64(y)/(11+float64(c))) + float64(rng.IntN(21)-10)
				im.Pix[p*3+c] = byte(min(max(v, 0), 255))
			}
		}
		imgs[i] = im
	}
	return imgs
}

func openDevice(t testing.TB) *gpu.Device {
	d, err := gpu.Open()
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d
}

// run records one augmentation step and reads the crops back.
func augmentStep(t testing.TB, d *gpu.Device, a *Augmenter, b *nn.ImageBatch, global, local *gpu.Tensor) ([]float32, []float32) {
	rec := d.Record()
	require.NoError(t, a.Record(rec, global, local, b))
	_, err := rec.Run()
	require.NoError(t, err)
	g, err := d.Read(global)
	require.NoError(t, err)
	l, err := d.Read(local)
	require.NoError(t, err)
	return g, l
}

func TestAugmenterDeterministic(t *testing.T) {
	d := openDevice(t)
	rng := rand.New(rand.NewPCG(3, 4))
	b, err := nn.UploadImages(d, append(photoBatch(rng, 2, 45, 38), nn.Image{H: 28, W: 28, C: 1, Pix: photoBatch(rng, 1, 28, 28)[0].Pix[:28*28]}))
	require.NoError(t, err)
	defer b.Release()
	cfg := DINOv2Augment()
	cfg.GlobalSize, cfg.LocalSize, cfg.Locals, cfg.Patch = 28, 14, 3, 7
	global, err := d.NewTensor("global", 2*3, 3, 28, 28)
	require.NoError(t, err)
	local, err := d.NewTensor("local", 3*3, 3, 14, 14)
	require.NoError(t, err)
	steps := func(seed uint64, state []byte) (g, l [][]float32, saved []byte) {
		a, err := NewAugmenter(cfg, seed)
		require.NoError(t, err)
		defer a.Release()
		if state != nil {
			require.NoError(t, a.UnmarshalBinary(state))
		}
		for s := 0; s < 2; s++ {
			if s == 1 {
				saved, err = a.MarshalBinary()
				require.NoError(t, err)
			}
			gs, ls := augmentStep(t, d, a, b, global, local)
			g, l = append(g, gs), append(l, ls)
		}
		return g, l, saved
	}
	g1, l1, saved := steps(11, nil)
	g2, l2, _ := steps(11, nil)
	require.Equal(t, g1, g2, "same seed: identical global crops")
	require.Equal(t, l1, l2, "same seed: identical local crops")
	require.NotEqual(t, g1[0], g1[1], "two steps differ")
	g3, l3, _ := steps(12, nil)
	require.NotEqual(t, g1[0], g3[0], "another seed gives other crops")
	require.NotEqual(t, l1[0], l3[0])
	// Resuming from the state saved before step 2 replays step 2.
	g4, l4, _ := steps(99, saved)
	require.Equal(t, g1[1], g4[0], "resumed global crops")
	require.Equal(t, l1[1], l4[0], "resumed local crops")
	for _, v := range g1[0] {
		require.False(t, math.IsNaN(float64(v)) || math.Abs(float64(v)) > 3, "normalised values stay within [-2.2, 2.7]")
	}
}

// TestAugmentMatchesReference runs sampled multi-crop parameters through the
// GPU and through the float64 reference (nn/ref) and compares.
func TestAugmentMatchesReference(t *testing.T) {
	d := openDevice(t)
	rng := rand.New(rand.NewPCG(8, 9))
	imgs := append(photoBatch(rng, 2, 41, 57), nn.Image{H: 30, W: 26, C: 1, Pix: make([]byte, 30*26)})
	for i := range imgs[2].Pix {
		imgs[2].Pix[i] = byte(i * 7 % 251)
	}
	b, err := nn.UploadImages(d, imgs)
	require.NoError(t, err)
	defer b.Release()
	cfg := DINOv2Augment()
	cfg.GlobalSize, cfg.LocalSize, cfg.Locals, cfg.Patch = 21, 14, 4, 7
	a, err := NewAugmenter(cfg, 5)
	require.NoError(t, err)
	gc, lc := a.Sample([][2]int{{41, 57}, {41, 57}, {30, 26}})
	for _, set := range []struct {
		crops []nn.Crop
		S     int
	}{{gc, 21}, {lc, 14}} {
		p, err := nn.NewCropPlan(d, b, set.crops, set.S, set.S)
		require.NoError(t, err)
		out, err := d.NewTensor("out", len(set.crops), 3, set.S, set.S)
		require.NoError(t, err)
		rec := d.Record()
		require.NoError(t, nn.Augment(rec, out, b, p, cfg.Norm))
		_, err = rec.Run()
		require.NoError(t, err)
		got, err := d.Read(out)
		require.NoError(t, err)
		p.Release()
		out.Buf.Release()
		S, bad, worst := set.S, 0, 0.0
		for i, c := range set.crops {
			im := imgs[c.Image]
			x := ref.CHW(ref.ResizeU8(im.Pix, im.W, im.C, c.Top, c.Left, c.H, c.W, c.RH, c.RW, 0, 0, S, S, c.Flip), S, S, im.C)
			x = refPhoto(x, c.Photo, S)
			x = ref.Normalize(x, cfg.Norm.Mean, cfg.Norm.Std)
			for k, v := range x {
				e := math.Abs(float64(got[i*3*S*S+k]) - v)
				// f32 colour arithmetic on [0, 1] values, times 1/std <= 4.5.
				if e > 1e-4 {
					bad++
				} else {
					worst = math.Max(worst, e)
				}
			}
		}
		// Solarize is a step: a value within f32 rounding of its threshold
		// may land on the other side. Allow a handful of such elements.
		t.Logf("%d crops of %d: %d elements off by more than 1e-4, max error of the others %.2g", len(set.crops), S, bad, worst)
		require.LessOrEqual(t, bad, 3, "elements off by more than 1e-4")
	}
}

// refPhoto applies ph to x [3, S*S] with the reference ops.
func refPhoto(x []float64, ph nn.Photo, S int) []float64 {
	for _, op := range ph.Jitter {
		switch op {
		case nn.JitterBrightness:
			x = ref.Brightness(x, ph.Brightness)
		case nn.JitterContrast:
			x = ref.Contrast(x, ph.Contrast)
		case nn.JitterSaturation:
			x = ref.Saturation(x, ph.Saturation)
		case nn.JitterHue:
			x = ref.Hue(x, ph.Hue)
		}
	}
	if ph.Gray {
		x = ref.Grayscale(x)
	}
	if ph.Sigma > 0 {
		x = ref.Blur(x, S, S, ph.Sigma)
	}
	if ph.Solarize {
		x = ref.Solarize(x)
	}
	return x
}

// TestAugmentThroughput measures crops/s of DINOv2's multi-crop (2 global
// of 224 + 8 local of 98 per image) for a batch of 32 images of 224 x 224:
// sampling on the CPU, table upload and the GPU work. Run with
// WEBDINO_BENCH=1.
func TestAugmentThroughput(t *testing.T) {
	if os.Getenv("WEBDINO_BENCH") == "" {
		t.Skip("set WEBDINO_BENCH=1 to measure")
	}
	d := openDevice(t)
	rng := rand.New(rand.NewPCG(5, 6))
	const B = 32
	b, err := nn.UploadImages(d, photoBatch(rng, B, 224, 224))
	require.NoError(t, err)
	defer b.Release()
	a, err := NewAugmenter(DINOv2Augment(), 1)
	require.NoError(t, err)
	defer a.Release()
	global, err := d.NewTensor("global", 2*B, 3, 224, 224)
	require.NoError(t, err)
	local, err := d.NewTensor("local", 8*B, 3, 98, 98)
	require.NoError(t, err)
	augmentStep(t, d, a, b, global, local) // compile kernels, allocate plans
	const steps = 3
	start := time.Now()
	for s := 0; s < steps; s++ {
		rec := d.Record()
		require.NoError(t, a.Record(rec, global, local, b))
		_, err := rec.Run()
		require.NoError(t, err)
	}
	el := time.Since(start) / steps
	t.Logf("%s: %d crops (%d global 224 + %d local 98) in %v per batch: %.0f crops/s",
		d.Info().Name, 10*B, 2*B, 8*B, el, float64(10*B)/el.Seconds())
}
