//go:build !js

package data

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

func encodePNG(t *testing.T, img image.Image) []byte {
	var b bytes.Buffer
	require.NoError(t, png.Encode(&b, img))
	return b.Bytes()
}

func encodeJPEG(t *testing.T, img image.Image) []byte {
	var b bytes.Buffer
	require.NoError(t, jpeg.Encode(&b, img, &jpeg.Options{Quality: 100}))
	return b.Bytes()
}

func fill(img interface{ Set(x, y int, c color.Color) }, r image.Rectangle, c color.Color) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.Set(x, y, c)
		}
	}
}

// pixel returns the RGB of (x, y).
func pixel(m *RGB, x, y int) [3]int {
	o := (y*m.W + x) * 3
	return [3]int{int(m.Pix[o]), int(m.Pix[o+1]), int(m.Pix[o+2])}
}

// assertPixel checks (x, y) against want within tol per channel.
func assertPixel(t *testing.T, m *RGB, x, y int, want [3]int, tol int, msg string) {
	t.Helper()
	got := pixel(m, x, y)
	for c := range 3 {
		if d := got[c] - want[c]; d > tol || d < -tol {
			t.Errorf("%s: pixel (%d,%d) = %v, want %v ±%d", msg, x, y, got, want, tol)
			return
		}
	}
}

func decodeOK(t *testing.T, name string, b []byte) *RGB {
	t.Helper()
	m, err := Decode(name, b, DecodeOptions{})
	require.NoError(t, err)
	require.Len(t, m.Pix, m.H*m.W*3)
	return m
}

func TestDecodeKnownPixels(t *testing.T) {
	t.Run("png nrgba alpha over white", func(t *testing.T) {
		img := image.NewNRGBA(image.Rect(0, 0, 3, 2))
		img.Set(0, 0, color.NRGBA{255, 0, 0, 255})
		img.Set(1, 0, color.NRGBA{0, 0, 255, 128}) // half blue over white
		img.Set(2, 0, color.NRGBA{10, 20, 30, 0})  // hidden colour must not show
		m := decodeOK(t, "a.png", encodePNG(t, img))
		assert.Equal(t, 3, m.W)
		assert.Equal(t, 2, m.H)
		assertPixel(t, m, 0, 0, [3]int{255, 0, 0}, 0, "opaque")
		assertPixel(t, m, 1, 0, [3]int{127, 127, 255}, 0, "half alpha")
		assertPixel(t, m, 2, 0, [3]int{255, 255, 255}, 0, "transparent")
		assertPixel(t, m, 0, 1, [3]int{255, 255, 255}, 0, "zero NRGBA")
	})
	t.Run("png 16-bit", func(t *testing.T) {
		img := image.NewNRGBA64(image.Rect(0, 0, 2, 1))
		img.Set(0, 0, color.NRGBA64{0x1234, 0xabcd, 0xff00, 0xffff})
		img.Set(1, 0, color.NRGBA64{0, 0, 0, 0x8000})
		m := decodeOK(t, "a.png", encodePNG(t, img))
		assertPixel(t, m, 0, 0, [3]int{0x12, 0xab, 0xff}, 0, "opaque 16-bit")
		assertPixel(t, m, 1, 0, [3]int{127, 127, 127}, 0, "half black")
	})
	t.Run("png gray 8 and 16", func(t *testing.T) {
		g := image.NewGray(image.Rect(0, 0, 2, 2))
		g.SetGray(1, 1, color.Gray{77})
		m := decodeOK(t, "g.png", encodePNG(t, g))
		assertPixel(t, m, 1, 1, [3]int{77, 77, 77}, 0, "gray8")
		g16 := image.NewGray16(image.Rect(0, 0, 2, 2))
		g16.SetGray16(0, 1, color.Gray16{0x8001})
		m = decodeOK(t, "g16.png", encodePNG(t, g16))
		assertPixel(t, m, 0, 1, [3]int{0x80, 0x80, 0x80}, 0, "gray16")
	})
	t.Run("png paletted with transparency", func(t *testing.T) {
		p := image.NewPaletted(image.Rect(0, 0, 2, 1), color.Palette{color.NRGBA{0, 200, 0, 255}, color.NRGBA{0, 0, 0, 0}})
		p.SetColorIndex(1, 0, 1)
		m := decodeOK(t, "p.png", encodePNG(t, p))
		assertPixel(t, m, 0, 0, [3]int{0, 200, 0}, 0, "palette")
		assertPixel(t, m, 1, 0, [3]int{255, 255, 255}, 0, "transparent index")
	})
	t.Run("jpeg gray and rgb", func(t *testing.T) {
		// Flat 8x8 blocks at quality 100 keep their value up to rounding;
		// colour adds the RGB->YCbCr->RGB round trip and 4:2:0 chroma: ±2.
		g := image.NewGray(image.Rect(0, 0, 16, 16))
		fill(g, g.Rect, color.Gray{100})
		m := decodeOK(t, "g.jpg", encodeJPEG(t, g))
		assertPixel(t, m, 5, 9, [3]int{100, 100, 100}, 1, "gray jpeg")
		c := image.NewRGBA(image.Rect(0, 0, 16, 16))
		fill(c, c.Rect, color.RGBA{200, 100, 50, 255})
		m = decodeOK(t, "c.jpg", encodeJPEG(t, c))
		assertPixel(t, m, 15, 15, [3]int{200, 100, 50}, 2, "rgb jpeg")
	})
	// cmyk.jpg (Pillow: Adobe APP14 transform 0, inverted CMYK) and ycck.jpg
	// (ImageMagick: transform 2) hold 8x8 quadrants of CMYK red, blue, 50%
	// black and white, quality 100, no subsampling: ±3 for JPEG rounding.
	for _, name := range []string{"cmyk.jpg", "ycck.jpg"} {
		t.Run(name, func(t *testing.T) {
			m, err := LoadImage(filepath.Join("testdata", name), DecodeOptions{})
			require.NoError(t, err)
			assertPixel(t, m, 3, 3, [3]int{255, 0, 0}, 3, "red")
			assertPixel(t, m, 12, 3, [3]int{0, 0, 255}, 3, "blue")
			assertPixel(t, m, 3, 12, [3]int{127, 127, 127}, 3, "gray")
			assertPixel(t, m, 12, 12, [3]int{255, 255, 255}, 3, "white")
		})
	}
	t.Run("cmyk jpeg without Adobe marker is plain CMYK", func(t *testing.T) {
		b, err := os.ReadFile("testdata/cmyk.jpg")
		require.NoError(t, err)
		// The APP14 segment directly follows SOI: ff ee, length 14.
		require.Equal(t, []byte{0xff, 0xee, 0, 14}, b[2:6])
		bare := append(append([]byte{}, b[:2]...), b[2+2+14:]...)
		adobe, err := jpeg.Decode(bytes.NewReader(b))
		require.NoError(t, err)
		// Stored samples are the Adobe-decoded inks inverted; bare files
		// mean them as plain inks.
		inv := adobe.(*image.CMYK)
		for i := range inv.Pix {
			inv.Pix[i] = 255 - inv.Pix[i]
		}
		m := decodeOK(t, "bare.jpg", bare)
		assert.Equal(t, genericRGB(inv).Pix, m.Pix)
	})
	t.Run("webp", func(t *testing.T) {
		m := decodeOK(t, "l.webp", readFixture(t, "lossless.webp"))
		assertPixel(t, m, 0, 0, [3]int{255, 0, 0}, 0, "lossless red")
		assertPixel(t, m, 3, 0, [3]int{0, 0, 255}, 0, "lossless blue")
		assertPixel(t, m, 0, 3, [3]int{128, 128, 128}, 0, "lossless gray")
		assertPixel(t, m, 3, 3, [3]int{255, 255, 255}, 0, "lossless white")
		m = decodeOK(t, "a.webp", readFixture(t, "alpha.webp"))
		assertPixel(t, m, 3, 0, [3]int{127, 127, 255}, 1, "half blue") // alpha 0.5 is stored as 127 or 128
		assertPixel(t, m, 3, 3, [3]int{255, 255, 255}, 0, "transparent")
		// Lossy VP8 of a flat colour, limited-range YUV: ±3 for the 8-bit
		// YUV quantisation (Y steps are 1.16 RGB levels, chroma 1.6-2).
		m = decodeOK(t, "y.webp", readFixture(t, "lossy.webp"))
		assertPixel(t, m, 7, 7, [3]int{200, 100, 50}, 3, "lossy")
		m = decodeOK(t, "ya.webp", readFixture(t, "lossy_alpha.webp"))
		assertPixel(t, m, 2, 5, [3]int{200, 100, 50}, 3, "lossy alpha opaque half")
		assertPixel(t, m, 13, 5, [3]int{255, 255, 255}, 0, "lossy alpha transparent half")
	})
	t.Run("gif first frame, bmp, tiff", func(t *testing.T) {
		pal := color.Palette{color.RGBA{10, 20, 30, 255}, color.RGBA{200, 210, 220, 255}}
		f1, f2 := image.NewPaletted(image.Rect(0, 0, 4, 4), pal), image.NewPaletted(image.Rect(0, 0, 4, 4), pal)
		fill(f2, f2.Rect, pal[1])
		var b bytes.Buffer
		require.NoError(t, gif.EncodeAll(&b, &gif.GIF{Image: []*image.Paletted{f1, f2}, Delay: []int{1, 1}}))
		m := decodeOK(t, "a.gif", b.Bytes())
		assertPixel(t, m, 2, 2, [3]int{10, 20, 30}, 0, "gif frame 0")

		img := image.NewRGBA(image.Rect(0, 0, 5, 3))
		fill(img, img.Rect, color.RGBA{1, 2, 3, 255})
		img.Set(4, 2, color.RGBA{250, 128, 7, 255})
		b.Reset()
		require.NoError(t, bmp.Encode(&b, img))
		m = decodeOK(t, "a.bmp", b.Bytes())
		assertPixel(t, m, 0, 0, [3]int{1, 2, 3}, 0, "bmp")
		assertPixel(t, m, 4, 2, [3]int{250, 128, 7}, 0, "bmp corner")
		b.Reset()
		require.NoError(t, tiff.Encode(&b, img, &tiff.Options{Compression: tiff.Deflate}))
		m = decodeOK(t, "a.tif", b.Bytes())
		assertPixel(t, m, 4, 2, [3]int{250, 128, 7}, 0, "tiff corner")
	})
}

func readFixture(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func genericRGB(img image.Image) *RGB {
	r := img.Bounds()
	m := &RGB{H: r.Dy(), W: r.Dx(), Pix: make([]uint8, r.Dx()*r.Dy()*3)}
	genericToRGB(img, m.Pix)
	return m
}

// TestFastPathsMatchGeneric checks every concrete-type fast path against the
// color.Color reference bit for bit, on random pixels and on sub-images with
// odd offsets (which exercise chroma indexing).
func TestFastPathsMatchGeneric(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rect := image.Rect(0, 0, 13, 11)
	randBytes := func(p []uint8) {
		for i := range p {
			p[i] = uint8(rng.IntN(256))
		}
	}
	// premultiplied returns random valid premultiplied RGBA bytes (c <= a).
	premultiplied := func(p []uint8) {
		for i := 0; i < len(p); i += 4 {
			a := rng.IntN(256)
			if i%12 == 0 {
				a = 255
			}
			p[i], p[i+1], p[i+2], p[i+3] = uint8(rng.IntN(a+1)), uint8(rng.IntN(a+1)), uint8(rng.IntN(a+1)), uint8(a)
		}
	}
	images := map[string]image.Image{}
	for _, ratio := range []image.YCbCrSubsampleRatio{
		image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422, image.YCbCrSubsampleRatio420,
		image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410,
	} {
		y := image.NewYCbCr(rect, ratio)
		randBytes(y.Y)
		randBytes(y.Cb)
		randBytes(y.Cr)
		images["ycbcr "+ratio.String()] = y
		a := image.NewNYCbCrA(rect, ratio)
		randBytes(a.Y)
		randBytes(a.Cb)
		randBytes(a.Cr)
		randBytes(a.A)
		images["nycbcra "+ratio.String()] = a
	}
	g := image.NewGray(rect)
	randBytes(g.Pix)
	images["gray"] = g
	g16 := image.NewGray16(rect)
	randBytes(g16.Pix)
	images["gray16"] = g16
	rgba := image.NewRGBA(rect)
	premultiplied(rgba.Pix)
	images["rgba"] = rgba
	nrgba := image.NewNRGBA(rect)
	randBytes(nrgba.Pix)
	images["nrgba"] = nrgba
	rgba64 := image.NewRGBA64(rect)
	for y := range rect.Dy() {
		for x := range rect.Dx() {
			a := uint16(rng.IntN(0x10000))
			rgba64.SetRGBA64(x, y, color.RGBA64{uint16(rng.IntN(int(a) + 1)), uint16(rng.IntN(int(a) + 1)), uint16(rng.IntN(int(a) + 1)), a})
		}
	}
	images["rgba64"] = rgba64
	nrgba64 := image.NewNRGBA64(rect)
	randBytes(nrgba64.Pix)
	images["nrgba64"] = nrgba64
	cmyk := image.NewCMYK(rect)
	randBytes(cmyk.Pix)
	images["cmyk"] = cmyk
	pal := make(color.Palette, 200)
	for i := range pal {
		pal[i] = color.NRGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256))}
	}
	p := image.NewPaletted(rect, pal)
	for i := range p.Pix {
		p.Pix[i] = uint8(rng.IntN(len(pal)))
	}
	images["paletted"] = p

	for name, img := range images {
		sub := img.(interface {
			SubImage(image.Rectangle) image.Image
		}).SubImage(image.Rect(3, 1, 12, 10))
		for _, m := range []image.Image{img, sub} {
			want := genericRGB(m)
			got := toRGB(m, false)
			assert.Equal(t, want.H, got.H, name)
			assert.Equal(t, want.W, got.W, name)
			assert.Equal(t, want.Pix, got.Pix, "%s %v", name, m.Bounds())
		}
	}
}

// pngHeader returns a PNG signature and a valid IHDR chunk claiming w x h
// (8-bit RGB), with no pixel data.
func pngHeader(w, h uint32) []byte {
	ihdr := make([]byte, 4+13)
	copy(ihdr, "IHDR")
	binary.BigEndian.PutUint32(ihdr[4:], w)
	binary.BigEndian.PutUint32(ihdr[8:], h)
	ihdr[12], ihdr[13] = 8, 2 // bit depth, colour type RGB
	b := []byte("\x89PNG\r\n\x1a\n")
	b = binary.BigEndian.AppendUint32(b, 13)
	b = append(b, ihdr...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(ihdr))
}

func TestDecodeErrors(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	pngBytes, jpegBytes := encodePNG(t, img), encodeJPEG(t, img)
	tiny := encodePNG(t, image.NewGray(image.Rect(0, 0, 1, 1)))
	heic := append([]byte("\x00\x00\x00\x18ftypheic"), make([]byte, 16)...)
	zeroGIF := []byte("GIF89a\x00\x00\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x02D\x01\x00;")
	cases := []struct {
		name    string
		data    []byte
		opt     DecodeOptions
		problem Problem
		msg     string
	}{
		{"empty.jpg", nil, DecodeOptions{}, Empty, "empty.jpg: empty: file has 0 bytes"},
		{"text.jpg", []byte("hello, this is not a JPEG\n"), DecodeOptions{}, NotAnImage, `text.jpg: not an image: text starting "hello, this is not a JPEG\n"`},
		{"bin.png", []byte{0, 1, 2, 0xfe, 0xff}, DecodeOptions{}, NotAnImage, "bin.png: not an image: unknown format, first bytes 00 01 02 fe ff"},
		{"photo.jpg", heic, DecodeOptions{}, NotAnImage, "photo.jpg: not an image: HEIF/HEIC image (unsupported format)"},
		{"trunc.png", pngBytes[:len(pngBytes)/2], DecodeOptions{}, Truncated, "trunc.png: truncated: png 40x30: data ends early"},
		{"trunc.jpg", jpegBytes[:len(jpegBytes)-100], DecodeOptions{}, Truncated, "trunc.jpg: truncated: jpeg 40x30: data ends early"},
		{"head.png", pngBytes[:20], DecodeOptions{}, Truncated, "head.png: truncated: png header: data ends early"},
		{"tiny.png", tiny, DecodeOptions{MinSide: 14}, TooSmall, "tiny.png: too small: png 1x1, shorter side below 14"},
		{"bomb.png", pngHeader(100000, 100000), DecodeOptions{}, TooLarge, "bomb.png: too large: png 100000x100000 = 10000000000 pixels, limit 50000000"},
		{"big.png", pngBytes, DecodeOptions{MaxPixels: 1000}, TooLarge, "big.png: too large: png 40x30 = 1200 pixels, limit 1000"},
		{"zero.gif", zeroGIF, DecodeOptions{}, ZeroSized, "zero.gif: zero-sized: gif 0x0"},
	}
	for _, c := range cases {
		_, err := Decode(c.name, c.data, c.opt)
		require.Error(t, err, c.name)
		var ie *ImageError
		require.ErrorAs(t, err, &ie, c.name)
		assert.Equal(t, c.problem, ie.Problem, c.name)
		assert.Equal(t, c.name, ie.Path)
		assert.Contains(t, err.Error(), c.msg)
	}
	// The limits accept what they should.
	_, err := Decode("ok.png", pngBytes, DecodeOptions{MinSide: 30, MaxPixels: 1200})
	assert.NoError(t, err)

	_, err = LoadImage(filepath.Join(t.TempDir(), "missing.png"), DecodeOptions{})
	var ie *ImageError
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, Unreadable, ie.Problem)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestStudioRange checks the fixed-point limited-range conversion against
// the BT.601 formula in float64: within 1 (the fixed point rounds the
// products separately).
func TestStudioRange(t *testing.T) {
	clamp := func(v float64) int { return int(min(max(math.Round(v), 0), 255)) }
	for y := 0; y < 256; y += 3 {
		for cb := 0; cb < 256; cb += 5 {
			for cr := 0; cr < 256; cr += 7 {
				yy, u, v := 1.164383*float64(y-16), float64(cb-128), float64(cr-128)
				want := [3]int{clamp(yy + 1.596027*v), clamp(yy - 0.391762*u - 0.812968*v), clamp(yy + 2.017232*u)}
				r, g, b := studio16(uint8(y), uint8(cb), uint8(cr))
				got := [3]int{int(r >> 8), int(g >> 8), int(b >> 8)}
				for c := range 3 {
					if d := got[c] - want[c]; d > 1 || d < -1 {
						t.Fatalf("studio16(%d,%d,%d) = %v, want %v", y, cb, cr, got, want)
					}
				}
			}
		}
	}
}
