//go:build !js

package nn

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

// uploadImages puts imgs on the device and releases them when the test ends.
func uploadImages(t *testing.T, imgs ...Image) *ImageBatch {
	t.Helper()
	b, err := UploadImages(dev, imgs)
	require.NoError(t, err)
	t.Cleanup(b.Release)
	return b
}

func newPlan(t *testing.T, b *ImageBatch, crops []Crop, oh, ow int) *CropPlan {
	t.Helper()
	p, err := NewCropPlan(dev, b, crops, oh, ow)
	require.NoError(t, err)
	t.Cleanup(p.Release)
	return p
}

func randImage(rng *rand.Rand, h, w, c int) Image {
	im := Image{H: h, W: w, C: c, Pix: make([]byte, h*w*c)}
	for i := range im.Pix {
		im.Pix[i] = byte(rng.IntN(256))
	}
	return im
}

// refCrop is the reference of one crop: PIL's resize, as [3, OH*OW] in [0, 1].
func refCrop(im Image, c Crop, oh, ow int) []float64 {
	u8 := ref.ResizeU8(im.Pix, im.W, im.C, c.Top, c.Left, c.H, c.W, c.RH, c.RW, c.OY, c.OX, oh, ow, c.Flip)
	return ref.CHW(u8, oh, ow, im.C)
}

// TestResampleMatchesPIL runs DINOv2's evaluation transforms on crops of
// real photos (nn/testdata/image.json.gz, written by
// scripts/reference/image.py with PIL 9.4) and compares with PIL's bytes.
func TestResampleMatchesPIL(t *testing.T) {
	f, err := os.Open("testdata/image.json.gz")
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	var fx struct {
		Cases []struct {
			Photo, Mode     string
			H, W, C         int
			Src, Out        []byte
			Short, Crop     int
			Resized, Offset []int
			OutH            int `json:"out_h"`
			OutW            int `json:"out_w"`
		}
	}
	require.NoError(t, json.NewDecoder(zr).Decode(&fx))
	require.Len(t, fx.Cases, 5)
	for _, c := range fx.Cases {
		b := uploadImages(t, Image{H: c.H, W: c.W, C: c.C, Pix: c.Src})
		var p *CropPlan
		oh, ow := c.OutH, c.OutW
		if c.Mode == "center" {
			box, err := CenterCropBox(c.H, c.W, c.Short, c.Crop)
			require.NoError(t, err)
			require.Equal(t, c.Resized, []int{box.RH, box.RW}, "%s: torchvision's resized size", c.Photo)
			require.Equal(t, c.Offset, []int{box.OY, box.OX}, "%s: torchvision's crop offset", c.Photo)
			p, err = NewCenterCropPlan(dev, b, c.Short, c.Crop)
			require.NoError(t, err)
			oh, ow = c.Crop, c.Crop
		} else {
			p, err = NewResizePlan(dev, b, oh, ow)
			require.NoError(t, err)
		}
		t.Cleanup(p.Release)
		want := ref.CHW(byteFloats(c.Out), oh, ow, c.C)
		// The reference, written independently of nn's tables, matches too.
		cr := Crop{RH: oh, RW: ow}
		if c.Mode == "center" {
			cr, _ = CenterCropBox(c.H, c.W, c.Short, c.Crop)
		}
		requireClose(t, byteFloats(c.Out), ref.ResizeU8(c.Src, c.W, c.C, 0, 0, c.H, c.W, cr.RH, cr.RW, cr.OY, cr.OX, oh, ow, false), 1e-9, 0, c.Photo+" reference")
		for _, norm := range []Norm{Unit, ImageNetNorm} {
			out := zeros(t, 1, 3, oh, ow)
			rec := dev.Record()
			require.NoError(t, Resample(rec, out, b, p, norm))
			run(t, rec)
			got := read(t, out)
			what := fmt.Sprintf("%s %s %dx%d -> %dx%d", c.Photo, c.Mode, c.H, c.W, oh, ow)
			if norm == Unit {
				// The 8-bit arithmetic is PIL's, integer for integer: the
				// bytes must be equal (max abs error 0).
				requireClose(t, scale(want, 255), scale(got, 255), 1e-3, 0, what+" bytes")
			} else {
				// One f32 fma of a byte: a few ulps of values up to 2.7.
				requireClose(t, ref.Normalize(want, norm.Mean, norm.Std), got, 2e-6, 0, what+" normalised")
			}
		}
	}
}

func byteFloats(b []byte) []float64 {
	out := make([]float64, len(b))
	for i, v := range b {
		out[i] = float64(v)
	}
	return out
}

func scale(x []float64, s float64) []float64 {
	return ref.Map(x, func(v float64) float64 { return v * s })
}

// TestResampleOddSizes compares random crops (up- and downscaling, windows,
// mirroring, gray and RGB sources) with the reference resize.
func TestResampleOddSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	imgs := []Image{randImage(rng, 37, 53, 3), randImage(rng, 19, 11, 1), randImage(rng, 1, 7, 3)}
	b := uploadImages(t, imgs...)
	const oh, ow = 9, 13
	crops := []Crop{
		{Image: 0, H: 37, W: 53, RH: 9, RW: 13},                                  // shrink whole image
		{Image: 0, Top: 3, Left: 5, H: 31, W: 40, RH: 20, RW: 30, OY: 6, OX: 11}, // shrink, window
		{Image: 0, Top: 10, Left: 20, H: 5, W: 4, RH: 9, RW: 13, Flip: true},     // enlarge, mirrored
		{Image: 1, Top: 2, Left: 1, H: 17, W: 10, RH: 11, RW: 13, OY: 1},         // gray source
		{Image: 1, H: 19, W: 11, RH: 9, RW: 13, Flip: true},
		{Image: 2, H: 1, W: 7, RH: 9, RW: 13},                    // one row
		{Image: 0, Top: 36, Left: 52, H: 1, W: 1, RH: 9, RW: 13}, // one pixel
	}
	p := newPlan(t, b, crops, oh, ow)
	out := zeros(t, len(crops), 3, oh, ow)
	rec := dev.Record()
	require.NoError(t, Resample(rec, out, b, p, Unit))
	run(t, rec)
	got := read(t, out)
	for i, c := range crops {
		// Integer arithmetic on both sides: equal bytes.
		requireClose(t, scale(refCrop(imgs[c.Image], c, oh, ow), 255), scale(got[i*3*oh*ow:(i+1)*3*oh*ow], 255), 1e-3, 0, fmt.Sprintf("crop %d %+v", i, c))
	}
}

// TestAugmentOps applies each photometric op alone and in fixed orders to
// crops of an odd size and compares with the float64 reference.
func TestAugmentOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	im := randImage(rng, 29, 23, 3)
	b := uploadImages(t, im)
	const oh, ow = 13, 17
	base := Crop{Top: 2, Left: 1, H: 25, W: 21, RH: oh, RW: ow}
	all := []JitterOp{JitterHue, JitterContrast, JitterBrightness, JitterSaturation}
	photos := []Photo{
		{},
		{Jitter: []JitterOp{JitterBrightness}, Brightness: 1.3},
		{Jitter: []JitterOp{JitterBrightness}, Brightness: 0.65},
		{Jitter: []JitterOp{JitterContrast}, Contrast: 1.35},
		{Jitter: []JitterOp{JitterContrast}, Contrast: 0.62},
		{Jitter: []JitterOp{JitterSaturation}, Saturation: 1.18},
		{Jitter: []JitterOp{JitterSaturation}, Saturation: 0.83},
		{Jitter: []JitterOp{JitterHue}, Hue: 0.093},
		{Jitter: []JitterOp{JitterHue}, Hue: -0.07},
		{Gray: true},
		{Sigma: 0.1},
		{Sigma: 1.37},
		{Sigma: 2.0},
		{Solarize: true},
		{Jitter: all, Brightness: 1.21, Contrast: 0.7, Saturation: 1.1, Hue: -0.04},
		{Jitter: []JitterOp{JitterBrightness, JitterSaturation, JitterContrast, JitterHue}, Brightness: 0.8, Contrast: 1.3, Saturation: 0.9, Hue: 0.08, Gray: true},
		{Jitter: []JitterOp{JitterSaturation, JitterContrast}, Contrast: 1.2, Saturation: 0.85, Sigma: 0.9},
	}
	crops := make([]Crop, len(photos))
	for i, ph := range photos {
		crops[i] = base
		crops[i].Photo = ph
		crops[i].Flip = i%2 == 1
	}
	p := newPlan(t, b, crops, oh, ow)
	for _, norm := range []Norm{Unit, ImageNetNorm} {
		out := zeros(t, len(crops), 3, oh, ow)
		rec := dev.Record()
		require.NoError(t, Augment(rec, out, b, p, norm))
		run(t, rec)
		got := read(t, out)
		for i, c := range crops {
			want := refPhoto(refCrop(im, c, oh, ow), c.Photo, oh, ow)
			want = ref.Normalize(want, norm.Mean, norm.Std)
			// f32 colour arithmetic (hue divides by the channel range) on
			// values in [0, 1], then at most a x4.5 normalisation.
			requireClose(t, want, got[i*3*oh*ow:(i+1)*3*oh*ow], 2e-5, 0, fmt.Sprintf("photo %+v norm %v", c.Photo, norm))
		}
	}
}

// refPhoto applies ph to x [3, H*W] with the reference ops.
func refPhoto(x []float64, ph Photo, H, W int) []float64 {
	for _, op := range ph.Jitter {
		switch op {
		case JitterBrightness:
			x = ref.Brightness(x, ph.Brightness)
		case JitterContrast:
			x = ref.Contrast(x, ph.Contrast)
		case JitterSaturation:
			x = ref.Saturation(x, ph.Saturation)
		case JitterHue:
			x = ref.Hue(x, ph.Hue)
		}
	}
	if ph.Gray {
		x = ref.Grayscale(x)
	}
	if ph.Sigma > 0 {
		x = ref.Blur(x, H, W, ph.Sigma)
	}
	if ph.Solarize {
		x = ref.Solarize(x)
	}
	return x
}

func TestHueRoundTrip(t *testing.T) {
	// A full turn, and opposite half turns, give the colour back: checks
	// the reference's HSV arithmetic on its own.
	x := []float64{0.9, 0.2, 0.5, 0.1, 0.3, 0.7, 0.4, 0.8, 0.1}
	requireClose(t, x, ref.Hue(ref.Hue(x, 0.5), -0.5), 1e-12, 0, "hue +-0.5")
	requireClose(t, x, ref.Hue(ref.Hue(x, 0.3), -0.3), 1e-12, 0, "hue +-0.3")
	// Pure red turned by a third of a turn is pure green.
	requireClose(t, []float64{0, 1, 0}, ref.Hue([]float64{1, 0, 0}, 1.0/3), 1e-12, 0, "red -> green")
}

func TestPatchAlignedSize(t *testing.T) {
	for _, c := range [][6]int{
		{480, 640, 224, 14, 224, 294}, // 298.7 -> 21 patches
		{640, 480, 224, 14, 294, 224},
		{500, 500, 518, 14, 518, 518},
		{28, 28, 28, 14, 28, 28},
		{10, 1000, 14, 14, 14, 1400},
	} {
		h, w, err := PatchAlignedSize(c[0], c[1], c[2], c[3])
		require.NoError(t, err)
		require.Equal(t, []int{c[4], c[5]}, []int{h, w}, "%v", c)
	}
	_, _, err := PatchAlignedSize(480, 640, 230, 14)
	require.ErrorContains(t, err, "patch_aligned_size: image 480x640, short side 230, patch 14")
}

func TestImageBadInputs(t *testing.T) {
	_, err := UploadImages(dev, []Image{{H: 0, W: 4, C: 3}})
	require.ErrorContains(t, err, "upload_images: image 0 is 0x4: zero-size image")
	_, err = UploadImages(dev, []Image{{H: 2, W: 2, C: 4, Pix: make([]byte, 16)}})
	require.ErrorContains(t, err, "upload_images: image 0 has 4 channels: want 3 (RGB) or 1 (gray)")
	_, err = UploadImages(dev, []Image{{H: 2, W: 2, C: 3, Pix: make([]byte, 11)}})
	require.ErrorContains(t, err, "upload_images: image 0 is 2x2x3 but has 11 bytes")
	_, err = UploadImages(dev, nil)
	require.ErrorContains(t, err, "upload_images: no images")

	_, err = CenterCropBox(100, 80, 64, 70)
	require.ErrorContains(t, err, "center_crop: image 100x80, resize 64, crop 70")

	rng := rand.New(rand.NewPCG(1, 2))
	b := uploadImages(t, randImage(rng, 10, 12, 3))
	_, err = NewCropPlan(dev, b, []Crop{{H: 11, W: 12, RH: 8, RW: 8}}, 8, 8)
	require.ErrorContains(t, err, "crop_plan: crop 0: box 11x12 at (0, 0) does not fit in the 10x12 image 0")
	_, err = NewCropPlan(dev, b, []Crop{{H: 10, W: 12, RH: 8, RW: 8, OX: 1}}, 8, 8)
	require.ErrorContains(t, err, "crop_plan: crop 0: output window 8x8 at (0, 1) is larger than the 8x8 resized box")
	_, err = NewCropPlan(dev, b, []Crop{{Image: 1, H: 10, W: 12, RH: 8, RW: 8}}, 8, 8)
	require.ErrorContains(t, err, "crop_plan: crop 0: image 1 of a batch of 1")
	_, err = NewCropPlan(dev, b, []Crop{{H: 10, W: 12, RH: 4, RW: 4, Photo: Photo{Sigma: 1}}}, 4, 4)
	require.ErrorContains(t, err, "crop_plan: crop 0: blur of a 4x4 crop: reflect borders need crops of at least 5x5")
	_, err = NewCropPlan(dev, b, []Crop{{H: 10, W: 12, RH: 8, RW: 8, Photo: Photo{Jitter: []JitterOp{JitterHue, JitterHue}}}}, 8, 8)
	require.ErrorContains(t, err, "each of 0..3 at most once")
	_, err = NewCropPlan(dev, b, nil, 8, 8)
	require.ErrorContains(t, err, "crop_plan: 0 crops of 8x8")
	_, err = NewCenterCropPlan(dev, b, 256, 224)
	require.NoError(t, err) // small images are enlarged

	p := newPlan(t, b, []Crop{{H: 10, W: 12, RH: 8, RW: 8}}, 8, 8)
	rec := dev.Record()
	require.ErrorContains(t, Resample(rec, zeros(t, 1, 3, 8, 7), b, p, Unit), "resample: out [1x3x8x7]: want [1x3x8x8]")
	rec = dev.Record()
	other := uploadImages(t, randImage(rng, 10, 12, 3))
	require.ErrorContains(t, Augment(rec, zeros(t, 1, 3, 8, 8), other, p, Unit), "augment: the plan was built for another batch")
	rec = dev.Record()
	require.ErrorContains(t, Resample(rec, nil, b, p, Unit), "resample: tensor out is nil")
}
