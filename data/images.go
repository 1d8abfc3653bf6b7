package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	_ "image/gif" // first frame only, like image.Decode
	_ "image/png"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"
)

// RGB is a decoded image: 8-bit RGB, packed row-major as H x W x 3 (HWC),
// the layout a normalising upload to the GPU reads.
type RGB struct {
	H, W int
	Pix  []uint8 // H*W*3
}

// DefaultMaxPixels bounds W*H when DecodeOptions.MaxPixels is 0. A 50 Mpx
// image decodes to 150 MB of RGB (200 MB as RGBA inside image/*), which is
// already far beyond any training resolution; larger headers are almost
// always decompression bombs or mistakes.
const DefaultMaxPixels = 50_000_000

// DecodeOptions are the limits an image must satisfy.
type DecodeOptions struct {
	MinSide   int // reject images whose shorter side is below this (e.g. 14 = one patch); 0 accepts any
	MaxPixels int // reject headers claiming more than W*H pixels; 0 means DefaultMaxPixels
}

// Problem classifies why an image was rejected, so rejects can be counted
// by kind.
type Problem string

const (
	Unreadable  Problem = "unreadable"   // the file could not be read (missing, permissions, I/O)
	Empty       Problem = "empty"        // zero bytes
	NotAnImage  Problem = "not an image" // no known image signature
	Unsupported Problem = "unsupported"  // a known format with a feature the decoder lacks
	Truncated   Problem = "truncated"    // the data ends early
	Corrupt     Problem = "corrupt"      // the decoder rejected the data
	ZeroSized   Problem = "zero-sized"   // width or height is 0
	TooSmall    Problem = "too small"    // shorter side below DecodeOptions.MinSide
	TooLarge    Problem = "too large"    // W*H above DecodeOptions.MaxPixels
)

// ImageError is the error of every failed decode: the file, what kind of
// problem, and the details.
type ImageError struct {
	Path    string
	Problem Problem
	Detail  string
	Err     error // underlying error, if any
}

func (e *ImageError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Path, e.Problem, e.Detail)
}

func (e *ImageError) Unwrap() error { return e.Err }

// LoadImage reads and decodes the image file at path. In the browser there
// is no file system: decode fetched bytes with Decode instead.
func LoadImage(path string, opt DecodeOptions) (*RGB, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &ImageError{path, Unreadable, err.Error(), err}
	}
	return Decode(path, b, opt)
}

// Decode decodes an encoded image (JPEG, PNG, GIF first frame, WebP, BMP,
// TIFF) to RGB. name identifies the image in errors. The header is checked
// against opt before any pixel is decoded, so a decompression bomb costs
// nothing. Transparent pixels are composited over white: dropping alpha
// would expose whatever colour the encoder left under fully transparent
// pixels (often black or garbage), while white is what a viewer shows.
// EXIF orientation is ignored, as in torchvision's PIL loader. A decoder
// panic on hostile data is returned as a Corrupt error.
func Decode(name string, b []byte, opt DecodeOptions) (rgb *RGB, err error) {
	defer func() {
		if p := recover(); p != nil {
			rgb, err = nil, &ImageError{name, Corrupt, fmt.Sprintf("decoder panic: %v", p), nil}
		}
	}()
	fail := func(p Problem, err error, format string, args ...any) (*RGB, error) {
		return nil, &ImageError{name, p, fmt.Sprintf(format, args...), err}
	}
	if len(b) == 0 {
		return fail(Empty, nil, "file has 0 bytes")
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if errors.Is(err, image.ErrFormat) {
		return fail(NotAnImage, err, "%s", sniff(b))
	}
	if err != nil {
		p, detail := classify(err)
		return fail(p, err, "%s header: %s", format, detail)
	}
	if err := checkSize(cfg.Width, cfg.Height, opt); err != nil {
		return fail(err.Problem, nil, "%s %s", format, err.Detail)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil && format == "jpeg" && strings.Contains(err.Error(), "Adobe APP14") {
		img, err = decodeBareCMYK(b)
	}
	if err != nil {
		p, detail := classify(err)
		return fail(p, err, "%s %dx%d: %s", format, cfg.Width, cfg.Height, detail)
	}
	// A GIF's first frame may be smaller than its logical screen.
	r := img.Bounds()
	if err := checkSize(r.Dx(), r.Dy(), opt); err != nil {
		return fail(err.Problem, nil, "%s %s", format, err.Detail)
	}
	// VP8 stores BT.601 limited-range Y'CbCr, but x/image/webp returns it
	// as an image.YCbCr, whose colour model is full-range JFIF.
	return toRGB(img, format == "webp"), nil
}

// checkSize applies opt to a w x h image. The returned ImageError lacks Path.
func checkSize(w, h int, opt DecodeOptions) *ImageError {
	max := int64(opt.MaxPixels)
	if max <= 0 {
		max = DefaultMaxPixels
	}
	switch {
	case w <= 0 || h <= 0:
		return &ImageError{Problem: ZeroSized, Detail: fmt.Sprintf("%dx%d", w, h)}
	case int64(w)*int64(h) > max:
		return &ImageError{Problem: TooLarge, Detail: fmt.Sprintf("%dx%d = %d pixels, limit %d", w, h, int64(w)*int64(h), max)}
	case min(w, h) < opt.MinSide:
		return &ImageError{Problem: TooSmall, Detail: fmt.Sprintf("%dx%d, shorter side below %d", w, h, opt.MinSide)}
	}
	return nil
}

// classify maps a decoder error to a Problem and a short detail. The
// decoders report data that stops early in several ways: io errors, or
// "not enough pixel data" (png) and "short Huffman data" (jpeg).
func classify(err error) (Problem, string) {
	var jpegUnsup jpeg.UnsupportedError
	msg := err.Error()
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		strings.Contains(msg, "not enough pixel data"), strings.Contains(msg, "short Huffman data"):
		return Truncated, "data ends early (" + msg + ")"
	case errors.As(err, &jpegUnsup), strings.Contains(msg, "unsupported"):
		return Unsupported, msg
	}
	return Corrupt, msg
}

// sniff describes bytes that no registered decoder recognised: a known
// non-supported format by its signature, text by its start, else the first
// bytes in hex.
func sniff(b []byte) string {
	if len(b) >= 12 && string(b[4:8]) == "ftyp" {
		switch string(b[8:12]) {
		case "avif", "avis":
			return "AVIF image (unsupported format)"
		case "heic", "heix", "hevc", "mif1", "msf1":
			return "HEIF/HEIC image (unsupported format)"
		}
		return fmt.Sprintf("ISO media file (brand %q)", b[8:12])
	}
	signatures := []struct{ prefix, name string }{
		{"\xff\x0a", "JPEG XL image (unsupported format)"},
		{"\x00\x00\x00\x0cJXL ", "JPEG XL image (unsupported format)"},
		{"%PDF", "PDF document"},
		{"PK\x03\x04", "ZIP archive"},
		{"\x1f\x8b", "gzip data"},
	}
	for _, s := range signatures {
		if bytes.HasPrefix(b, []byte(s.prefix)) {
			return s.name
		}
	}
	if len(b) >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7' {
		return "Netpbm image (unsupported format)"
	}
	head := b[:min(len(b), 32)]
	if utf8.Valid(head) && strings.IndexFunc(string(head), func(r rune) bool {
		return !unicode.IsPrint(r) && !unicode.IsSpace(r)
	}) < 0 {
		return fmt.Sprintf("text starting %q", head)
	}
	return fmt.Sprintf("unknown format, first bytes % x", head)
}

// decodeBareCMYK decodes a 4-component JPEG without an Adobe APP14 segment,
// which image/jpeg refuses. Such files store plain (not inverted) CMYK, as
// libjpeg assumes. We insert an APP14 segment declaring CMYK; image/jpeg then
// treats the samples as Adobe-inverted, so undo that inversion.
func decodeBareCMYK(b []byte) (image.Image, error) {
	if len(b) < 2 {
		return nil, io.ErrUnexpectedEOF
	}
	app14 := []byte{0xff, 0xee, 0, 14, 'A', 'd', 'o', 'b', 'e', 0, 100, 0, 0, 0, 0, 0}
	patched := append(append(append([]byte{}, b[:2]...), app14...), b[2:]...)
	img, err := jpeg.Decode(bytes.NewReader(patched))
	if err != nil {
		return nil, err
	}
	c, ok := img.(*image.CMYK)
	if !ok {
		return nil, fmt.Errorf("jpeg: 4-component image decoded as %T", img)
	}
	for i := range c.Pix {
		c.Pix[i] = 255 - c.Pix[i]
	}
	return c, nil
}

// toRGB converts any image to packed RGB, compositing over white. Every
// fast path computes exactly what the generic path computes from
// Color.RGBA(): premultiplied 16-bit channels plus the white background
// 0xffff-a, keeping the high byte. studio selects limited-range Y'CbCr.
func toRGB(img image.Image, studio bool) *RGB {
	r := img.Bounds()
	w, h := r.Dx(), r.Dy()
	out := &RGB{H: h, W: w, Pix: make([]uint8, w*h*3)}
	p := out.Pix
	ycbcr16 := jfif16
	if studio {
		ycbcr16 = studio16
	}
	switch m := img.(type) {
	case *image.YCbCr:
		hs, vs := chromaShift(m.SubsampleRatio)
		for y := 0; y < h; y++ {
			yi := (y+r.Min.Y-m.Rect.Min.Y)*m.YStride + r.Min.X - m.Rect.Min.X
			ci := ((y+r.Min.Y)>>vs-m.Rect.Min.Y>>vs)*m.CStride - m.Rect.Min.X>>hs
			o := y * w * 3
			for x := 0; x < w; x++ {
				c := ci + (x+r.Min.X)>>hs
				r16, g16, b16 := ycbcr16(m.Y[yi+x], m.Cb[c], m.Cr[c])
				p[o], p[o+1], p[o+2] = uint8(r16>>8), uint8(g16>>8), uint8(b16>>8)
				o += 3
			}
		}
	case *image.NYCbCrA:
		hs, vs := chromaShift(m.SubsampleRatio)
		for y := 0; y < h; y++ {
			yi := (y+r.Min.Y-m.Rect.Min.Y)*m.YStride + r.Min.X - m.Rect.Min.X
			ai := (y+r.Min.Y-m.Rect.Min.Y)*m.AStride + r.Min.X - m.Rect.Min.X
			ci := ((y+r.Min.Y)>>vs-m.Rect.Min.Y>>vs)*m.CStride - m.Rect.Min.X>>hs
			o := y * w * 3
			for x := 0; x < w; x++ {
				c := ci + (x+r.Min.X)>>hs
				r16, g16, b16 := ycbcr16(m.Y[yi+x], m.Cb[c], m.Cr[c])
				a := uint32(m.A[ai+x]) * 0x101
				p[o] = overWhite(r16*a/0xffff, a)
				p[o+1] = overWhite(g16*a/0xffff, a)
				p[o+2] = overWhite(b16*a/0xffff, a)
				o += 3
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := m.Pix[m.PixOffset(r.Min.X, y+r.Min.Y):][:w]
			o := y * w * 3
			for _, v := range row {
				p[o], p[o+1], p[o+2] = v, v, v
				o += 3
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			row := m.Pix[m.PixOffset(r.Min.X, y+r.Min.Y):][:2*w]
			o := y * w * 3
			for x := 0; x < w; x++ {
				v := row[2*x] // big-endian: the high byte
				p[o], p[o+1], p[o+2] = v, v, v
				o += 3
			}
		}
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[m.PixOffset(r.Min.X, y+r.Min.Y):][:4*w]
			o := y * w * 3
			for x := 0; x < w; x++ {
				s := row[4*x : 4*x+4]
				white := 255 - s[3]
				p[o], p[o+1], p[o+2] = s[0]+white, s[1]+white, s[2]+white
				o += 3
			}
		}
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[m.PixOffset(r.Min.X, y+r.Min.Y):][:4*w]
			o := y * w * 3
			for x := 0; x < w; x++ {
				s := row[4*x : 4*x+4]
				if s[3] == 255 {
					p[o], p[o+1], p[o+2] = s[0], s[1], s[2]
				} else {
					a8 := uint32(s[3])
					a := a8 * 0x101
					p[o] = overWhite(uint32(s[0])*0x101*a8/0xff, a)
					p[o+1] = overWhite(uint32(s[1])*0x101*a8/0xff, a)
					p[o+2] = overWhite(uint32(s[2])*0x101*a8/0xff, a)
				}
				o += 3
			}
		}
	case *image.RGBA64:
		for y := 0; y < h; y++ {
			row := m.Pix[m.PixOffset(r.Min.X, y+r.Min.Y):][:8*w]
			o := y * w * 3
			for x := 0; x < w; x++ {
				s := row[8*x : 8*x+8]
				a := be16(s[6:])
				p[o], p[o+1], p[o+2] = overWhite(be16(s), a), overWhite(be16(s[2:]), a), overWhite(be16(s[4:]), a)
				o += 3
			}
		}
	case *image.NRGBA64:
		for y := 0; y < h; y++ {
			row := m.Pix[m.PixOffset(r.Min.X, y+r.Min.Y):][:8*w]
			o := y * w * 3
			for x := 0; x < w; x++ {
				s := row[8*x : 8*x+8]
				a := be16(s[6:])
				p[o] = overWhite(be16(s)*a/0xffff, a)
				p[o+1] = overWhite(be16(s[2:])*a/0xffff, a)
				p[o+2] = overWhite(be16(s[4:])*a/0xffff, a)
				o += 3
			}
		}
	case *image.CMYK:
		for y := 0; y < h; y++ {
			row := m.Pix[m.PixOffset(r.Min.X, y+r.Min.Y):][:4*w]
			o := y * w * 3
			for x := 0; x < w; x++ {
				s := row[4*x : 4*x+4]
				white := 0xffff - uint32(s[3])*0x101
				p[o] = uint8((0xffff - uint32(s[0])*0x101) * white / 0xffff >> 8)
				p[o+1] = uint8((0xffff - uint32(s[1])*0x101) * white / 0xffff >> 8)
				p[o+2] = uint8((0xffff - uint32(s[2])*0x101) * white / 0xffff >> 8)
				o += 3
			}
		}
	case *image.Paletted:
		lut := make([][3]uint8, 256)
		for i, c := range m.Palette {
			lut[i] = colorOverWhite(c)
		}
		for y := 0; y < h; y++ {
			row := m.Pix[m.PixOffset(r.Min.X, y+r.Min.Y):][:w]
			o := y * w * 3
			for _, v := range row {
				c := lut[v]
				p[o], p[o+1], p[o+2] = c[0], c[1], c[2]
				o += 3
			}
		}
	default:
		genericToRGB(img, p)
	}
	return out
}

// genericToRGB is the reference conversion through the color.Color interface.
func genericToRGB(img image.Image, p []uint8) {
	r := img.Bounds()
	o := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c := colorOverWhite(img.At(x, y))
			p[o], p[o+1], p[o+2] = c[0], c[1], c[2]
			o += 3
		}
	}
}

func colorOverWhite(c color.Color) [3]uint8 {
	r, g, b, a := c.RGBA()
	return [3]uint8{overWhite(r, a), overWhite(g, a), overWhite(b, a)}
}

// overWhite composites a premultiplied 16-bit channel over white and keeps
// the high byte.
func overWhite(c, a uint32) uint8 { return uint8((c + 0xffff - a) >> 8) }

func be16(b []byte) uint32 { return uint32(b[0])<<8 | uint32(b[1]) }

// chromaShift returns log2 of the horizontal and vertical chroma subsampling.
func chromaShift(s image.YCbCrSubsampleRatio) (h, v uint) {
	switch s {
	case image.YCbCrSubsampleRatio422:
		return 1, 0
	case image.YCbCrSubsampleRatio420:
		return 1, 1
	case image.YCbCrSubsampleRatio440:
		return 0, 1
	case image.YCbCrSubsampleRatio411:
		return 2, 0
	case image.YCbCrSubsampleRatio410:
		return 2, 1
	}
	return 0, 0
}

// jfif16 converts full-range (JFIF) Y'CbCr to 16-bit RGB with the same
// 16.16 fixed-point constants as color.YCbCr.RGBA, so fast and generic paths
// agree to the bit:
//
//	R = Y + 1.40200 (Cr-128), G = Y - 0.34414 (Cb-128) - 0.71414 (Cr-128),
//	B = Y + 1.77200 (Cb-128).
func jfif16(y, cb, cr uint8) (r, g, b uint32) {
	yy := int32(y) * 0x10101
	cb1, cr1 := int32(cb)-128, int32(cr)-128
	return clamp16(yy + 91881*cr1), clamp16(yy - 22554*cb1 - 46802*cr1), clamp16(yy + 116130*cb1)
}

// studio16 converts BT.601 limited-range Y'CbCr (Y in 16..235, chroma in
// 16..240, as in VP8/WebP) to RGB, in 14-bit fixed point, and returns the
// 8-bit result scaled to 16 bits:
//
//	R = 1.164 (Y-16) + 1.596 (Cr-128), G = 1.164 (Y-16) - 0.392 (Cb-128) - 0.813 (Cr-128),
//	B = 1.164 (Y-16) + 2.017 (Cb-128).
//
// The constants (coefficient*2^14, offsets including the rounding half)
// match libwebp's integer conversion, so results agree with it wherever the
// chroma planes are sampled alike (libwebp interpolates chroma; we repeat
// it, as for JPEG).
func studio16(y, cb, cr uint8) (r, g, b uint32) {
	yy := int32(y) * 19077 >> 8
	u, v := int32(cb), int32(cr)
	return clip14(yy + v*26149>>8 - 14234),
		clip14(yy - u*6419>>8 - v*13320>>8 + 8708),
		clip14(yy + u*33050>>8 - 17685)
}

// clip14 turns a 14-bit fixed-point value into [0, 255], scaled by 0x101.
func clip14(v int32) uint32 {
	v >>= 6
	switch {
	case v < 0:
		return 0
	case v > 255:
		return 0xffff
	}
	return uint32(v) * 0x101
}

// clamp16 turns a 16.16 fixed-point value scaled by 0x101 into [0, 0xffff].
func clamp16(v int32) uint32 {
	switch {
	case v < 0:
		return 0
	case v > 0xff_ffff:
		return 0xffff
	}
	return uint32(v) >> 8
}
