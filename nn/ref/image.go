package ref

import "math"

// PILBicubicWeights returns PIL's antialiased bicubic (a = -0.5) resampling
// matrix [out, in] for one axis, written independently of nn's tables:
// output i is centred at (i + 0.5) * in / out, the filter is widened by
// in / out when shrinking, taps run over [int(c - support + 0.5),
// int(c + support + 0.5)) clipped to the input, and each row sums to 1.
func PILBicubicWeights(in, out int) []float64 {
	cub := func(x float64) float64 {
		const a = -0.5
		x = math.Abs(x)
		if x < 1 {
			return ((a+2)*x-(a+3))*x*x + 1
		}
		if x < 2 {
			return (((x-5)*x+8)*x - 4) * a
		}
		return 0
	}
	scale := float64(in) / float64(out)
	fs := math.Max(scale, 1)
	support := 2 * fs
	w := make([]float64, out*in)
	for i := 0; i < out; i++ {
		c := (float64(i) + 0.5) * scale
		lo := max(int(c-support+0.5), 0)
		hi := min(int(c+support+0.5), in)
		sum := 0.0
		for j := lo; j < hi; j++ {
			w[i*in+j] = cub((float64(j) - c + 0.5) / fs)
			sum += w[i*in+j]
		}
		for j := lo; j < hi && sum != 0; j++ {
			w[i*in+j] /= sum
		}
	}
	return w
}

// quantize is PIL's 8-bit fixed point for filter weights: 22 fraction bits,
// rounded half away from zero.
func quantize(w float64) int64 {
	if w < 0 {
		return int64(-0.5 + w*(1<<22))
	}
	return int64(0.5 + w*(1<<22))
}

// clip8 turns a fixed-point sum (with the rounding half already added) into
// a byte, as PIL does after each pass.
func clip8(s int64) float64 { return float64(min(max(s>>22, 0), 255)) }

// ResizeU8 is PIL's Image.resize(BICUBIC) of the box (top, left, h, w) of an
// 8-bit image src [H, W, C] (row-major, channels interleaved) to rh x rw:
// the horizontal pass first, rounded and clamped to 8 bits, then the
// vertical pass, rounded and clamped again. Afterwards the window
// (oy, ox, oh, ow) of the result is kept, mirrored left-right when flip.
// It returns [oh, ow, C] byte values as float64.
func ResizeU8(src []uint8, W, C, top, left, h, w, rh, rw, oy, ox, oh, ow int, flip bool) []float64 {
	wx, wy := PILBicubicWeights(w, rw), PILBicubicWeights(h, rh)
	mid := make([]float64, h*rw*C) // the box resized horizontally
	for r := 0; r < h; r++ {
		for j := 0; j < rw; j++ {
			for c := 0; c < C; c++ {
				s := int64(1 << 21)
				for b := 0; b < w; b++ {
					s += int64(src[((top+r)*W+left+b)*C+c]) * quantize(wx[j*w+b])
				}
				mid[(r*rw+j)*C+c] = clip8(s)
			}
		}
	}
	out := make([]float64, oh*ow*C)
	for i := 0; i < oh; i++ {
		for j := 0; j < ow; j++ {
			jj := ox + j
			if flip {
				jj = ox + ow - 1 - j
			}
			for c := 0; c < C; c++ {
				s := int64(1 << 21)
				for a := 0; a < h; a++ {
					s += int64(mid[(a*rw+jj)*C+c]) * quantize(wy[(oy+i)*h+a])
				}
				out[(i*ow+j)*C+c] = clip8(s)
			}
		}
	}
	return out
}

// CHW turns [H, W, C] into [3, H, W] scaled by 1/255, repeating a single
// channel three times (gray images read as R = G = B).
func CHW(x []float64, H, W, C int) []float64 {
	y := make([]float64, 3*H*W)
	for c := 0; c < 3; c++ {
		for p := 0; p < H*W; p++ {
			y[c*H*W+p] = x[p*C+min(c, C-1)] / 255
		}
	}
	return y
}

// Normalize returns (x - mean[c]) / std[c] for x [3, H*W].
func Normalize(x []float64, mean, std [3]float64) []float64 {
	n := len(x) / 3
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = (v - mean[i/n]) / std[i/n]
	}
	return y
}

// Gray is the luma PIL's convert("L") uses (ITU-R 601-2).
func Gray(r, g, b float64) float64 { return 0.299*r + 0.587*g + 0.114*b }

// pixels calls f on every pixel of x [3, H*W] and stores what it returns.
func pixels(x []float64, f func(r, g, b float64) (float64, float64, float64)) []float64 {
	n := len(x) / 3
	y := make([]float64, len(x))
	for p := 0; p < n; p++ {
		y[p], y[n+p], y[2*n+p] = f(x[p], x[n+p], x[2*n+p])
	}
	return y
}

func clamp01(v float64) float64 { return math.Min(math.Max(v, 0), 1) }

// Brightness blends x [3, H*W] with black: clamp(f x).
func Brightness(x []float64, f float64) []float64 {
	return pixels(x, func(r, g, b float64) (float64, float64, float64) {
		return clamp01(f * r), clamp01(f * g), clamp01(f * b)
	})
}

// Contrast blends x with the mean of its grayscale image:
// clamp(f x + (1 - f) mean).
func Contrast(x []float64, f float64) []float64 {
	n := len(x) / 3
	mean := 0.0
	for p := 0; p < n; p++ {
		mean += Gray(x[p], x[n+p], x[2*n+p])
	}
	mean /= float64(n)
	m := (1 - f) * mean
	return pixels(x, func(r, g, b float64) (float64, float64, float64) {
		return clamp01(f*r + m), clamp01(f*g + m), clamp01(f*b + m)
	})
}

// Saturation blends each pixel with its gray value: clamp(f x + (1 - f) gray).
func Saturation(x []float64, f float64) []float64 {
	return pixels(x, func(r, g, b float64) (float64, float64, float64) {
		m := (1 - f) * Gray(r, g, b)
		return clamp01(f*r + m), clamp01(f*g + m), clamp01(f*b + m)
	})
}

// Hue rotates each pixel's hue by f turns (f in [-0.5, 0.5]) in HSV,
// keeping saturation and value.
func Hue(x []float64, f float64) []float64 {
	return pixels(x, func(r, g, b float64) (float64, float64, float64) {
		v := math.Max(r, math.Max(g, b))
		d := v - math.Min(r, math.Min(g, b))
		if d == 0 {
			return r, g, b // gray: no hue
		}
		var h float64 // in sixths of a turn
		switch v {
		case r:
			h = (g - b) / d
		case g:
			h = 2 + (b-r)/d
		default:
			h = 4 + (r-g)/d
		}
		h = math.Mod(h/6+f+2, 1) * 6
		s := d / v
		ch := func(n float64) float64 {
			k := math.Mod(n+h, 6)
			return v - v*s*math.Max(0, math.Min(math.Min(k, 4-k), 1))
		}
		return ch(5), ch(3), ch(1)
	})
}

// Grayscale replaces each pixel by its gray value in all three channels.
func Grayscale(x []float64) []float64 {
	return pixels(x, func(r, g, b float64) (float64, float64, float64) {
		y := Gray(r, g, b)
		return y, y, y
	})
}

// GaussianKernel returns the 9 normalised taps exp(-k^2 / (2 sigma^2)),
// k = -4..4, of torchvision's GaussianBlur(kernel_size=9).
func GaussianKernel(sigma float64) [9]float64 {
	var k [9]float64
	sum := 0.0
	for i := range k {
		x := float64(i-4) / sigma
		k[i] = math.Exp(-0.5 * x * x)
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	return k
}

// Blur convolves each channel of x [3, H, W] with the 9x9 Gaussian of sigma
// (the outer product of GaussianKernel with itself), mirroring the image at
// its borders without repeating the edge (reflect padding; H, W >= 5).
func Blur(x []float64, H, W int, sigma float64) []float64 {
	k := GaussianKernel(sigma)
	reflect := func(i, n int) int {
		if i < 0 {
			return -i
		}
		if i >= n {
			return 2*n - 2 - i
		}
		return i
	}
	y := make([]float64, len(x))
	for c := 0; c < 3; c++ {
		for i := 0; i < H; i++ {
			for j := 0; j < W; j++ {
				s := 0.0
				for a := 0; a < 9; a++ {
					for b := 0; b < 9; b++ {
						s += k[a] * k[b] * x[(c*H+reflect(i+a-4, H))*W+reflect(j+b-4, W)]
					}
				}
				y[(c*H+i)*W+j] = s
			}
		}
	}
	return y
}

// SolarizeThreshold is PIL's threshold 128 on values in [0, 1]: a value v
// is inverted when v >= 127.5 / 255, i.e. when it would round to 128 or
// more as a byte.
const SolarizeThreshold = 127.5 / 255

// Solarize replaces every value v >= SolarizeThreshold by 1 - v.
func Solarize(x []float64) []float64 {
	return Map(x, func(v float64) float64 {
		if v >= SolarizeThreshold {
			return 1 - v
		}
		return v
	})
}
