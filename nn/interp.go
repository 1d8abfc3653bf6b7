package nn

import (
	"fmt"
	"math"

	"github.com/webdino/webdino/gpu"
)

// InterpMode selects how DINOv2 resizes its grid of patch position embeddings
// from M to n patches per direction. Parity with released weights depends on
// these details; both match PyTorch's F.interpolate(mode="bicubic",
// align_corners=False) (see nn/testdata/interp.json and
// scripts/reference/interp.py).
type InterpMode int

const (
	// BicubicOffset is the mode of models without registers: antialias=False
	// with scale_factor s = (n + 0.1) / M. PyTorch then maps output i to the
	// source coordinate (i + 0.5) / s - 0.5 (the given s, not n / M), takes
	// the Keys cubic with a = -0.75 on the 4 nearest inputs and clamps
	// indices at the borders. Even for n = M the result is not the identity
	// (PyTorch takes no shortcut; fixture case 5x5 -> 5x7): DINOv2 itself
	// skips the interpolation when the grid already fits a square input.
	BicubicOffset InterpMode = iota
	// BicubicAntialias is the mode of register models: antialias=True with
	// output size n. It is PIL's separable filter: the Keys cubic with
	// a = -0.5, its support widened by M / n when shrinking, evaluated at
	// every input within the support and normalised to sum 1. (Checked
	// against torch 1.13. The torch 2.x releases DINOv2 is used with moved
	// this code (_compute_indices_min_size_weights_aa) but, reading its
	// source, keep the same center, window bounds, filter and normalisation
	// for float inputs; we could not run a newer torch here to confirm.)
	BicubicAntialias
)

func (m InterpMode) String() string {
	switch m {
	case BicubicOffset:
		return "bicubic (scale (n+0.1)/M)"
	case BicubicAntialias:
		return "bicubic antialias"
	}
	return fmt.Sprintf("InterpMode(%d)", int(m))
}

// cubic is the Keys cubic convolution kernel with parameter a.
func cubic(x, a float64) float64 {
	x = math.Abs(x)
	switch {
	case x <= 1:
		return ((a+2)*x-(a+3))*x*x + 1
	case x < 2:
		return ((a*x-5*a)*x+8*a)*x - 4*a
	}
	return 0
}

// InterpWeights returns the dense 1-D resampling matrix [out, in] that
// resizes one axis of in samples to out samples in the given mode:
// y[i] = sum_j W[i*in+j] x[j].
func InterpWeights(in, out int, mode InterpMode) []float64 {
	w := make([]float64, out*in)
	switch mode {
	case BicubicOffset:
		inv := 1 / ((float64(out) + 0.1) / float64(in))
		for i := 0; i < out; i++ {
			src := inv*(float64(i)+0.5) - 0.5
			// PyTorch keeps the base index inside the input and the
			// fraction in [0, 1] before clamping the four taps.
			x0 := min(int(math.Floor(src)), in-1)
			t := min(max(src-float64(x0), 0), 1)
			taps := [4]float64{cubic(t+1, -0.75), cubic(t, -0.75), cubic(1-t, -0.75), cubic(2-t, -0.75)}
			for k, v := range taps {
				j := min(max(x0-1+k, 0), in-1)
				w[i*in+j] += v
			}
		}
	case BicubicAntialias:
		scale := float64(in) / float64(out)
		support, inv := 2.0, 1.0
		if scale >= 1 {
			support, inv = 2*scale, 1/scale
		}
		for i := 0; i < out; i++ {
			center := scale * (float64(i) + 0.5)
			lo := max(int(center-support+0.5), 0) // int() truncates, as PyTorch's cast does
			hi := min(int(center+support+0.5), in)
			var total float64
			for j := lo; j < hi; j++ {
				v := cubic((float64(j)-center+0.5)*inv, -0.5)
				w[i*in+j] = v
				total += v
			}
			if total != 0 {
				for j := lo; j < hi; j++ {
					w[i*in+j] /= total
				}
			}
		}
	}
	return w
}

// packWindows packs a dense [rows, cols] matrix as rows of 1+T floats,
// [start, w_0 .. w_T-1], each covering the row's nonzero span (start as an
// exact small integer). T is the widest span; windows near the end are
// shifted left so start+T <= cols.
func packWindows(dense []float64, rows, cols int) (packed []float32, T int) {
	lo, hi := make([]int, rows), make([]int, rows)
	for r := 0; r < rows; r++ {
		lo[r], hi[r] = cols, 0
		for c := 0; c < cols; c++ {
			if dense[r*cols+c] != 0 {
				lo[r], hi[r] = min(lo[r], c), c+1
			}
		}
		if hi[r] == 0 {
			lo[r], hi[r] = 0, 1
		}
		T = max(T, hi[r]-lo[r])
	}
	packed = make([]float32, rows*(1+T))
	for r := 0; r < rows; r++ {
		start := min(lo[r], cols-T)
		row := packed[r*(1+T):]
		row[0] = float32(start)
		for t := 0; t < T; t++ {
			row[1+t] = float32(dense[r*cols+start+t])
		}
	}
	return packed, T
}

func transpose(a []float64, rows, cols int) []float64 {
	t := make([]float64, len(a))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			t[c*rows+r] = a[r*cols+c]
		}
	}
	return t
}

// PosInterp holds the GPU weight tables that resize a [Mh, Mw, D] grid of
// position embeddings to [H, W, D] and back. Build one per input resolution
// with NewPosInterp and reuse it every step.
type PosInterp struct {
	Mh, Mw, H, W int
	Mode         InterpMode
	// Packed windows (see packWindows): forward rows of Wy, Wx and backward
	// rows of Wy^T, Wx^T.
	fy, fx, by, bx *gpu.Tensor
}

// NewPosInterp computes the 1-D weight tables on the CPU and uploads them.
func NewPosInterp(dev *gpu.Device, Mh, Mw, H, W int, mode InterpMode) (*PosInterp, error) {
	if Mh <= 0 || Mw <= 0 || H <= 0 || W <= 0 || (mode != BicubicOffset && mode != BicubicAntialias) {
		return nil, fmt.Errorf("pos_interp: grid %dx%d -> %dx%d in mode %v: sizes must be positive and the mode known", Mh, Mw, H, W, mode)
	}
	pi := &PosInterp{Mh: Mh, Mw: Mw, H: H, W: W, Mode: mode}
	wy, wx := InterpWeights(Mh, H, mode), InterpWeights(Mw, W, mode)
	tables := []struct {
		dst        **gpu.Tensor
		dense      []float64
		rows, cols int
	}{
		{&pi.fy, wy, H, Mh}, {&pi.fx, wx, W, Mw},
		{&pi.by, transpose(wy, H, Mh), Mh, H}, {&pi.bx, transpose(wx, W, Mw), Mw, W},
	}
	for _, tb := range tables {
		data, T := packWindows(tb.dense, tb.rows, tb.cols)
		t, err := dev.Upload("pos_interp table", data, tb.rows, 1+T)
		if err != nil {
			pi.Release()
			return nil, err
		}
		*tb.dst = t
	}
	return pi, nil
}

// Release frees the tables.
func (pi *PosInterp) Release() {
	for _, t := range []*gpu.Tensor{pi.fy, pi.fx, pi.by, pi.bx} {
		if t != nil {
			t.Buf.Release()
		}
	}
}

// checkGrids checks that x holds pi's source grid [rows, cols, D] (any
// leading shape, last axis D) and y its destination grid with the same D;
// backward swaps the two grids.
func checkGrids(rec *gpu.Recorder, op string, pi *PosInterp, y, x *gpu.Tensor, yName, xName string, backward bool) error {
	if pi == nil {
		return rec.Fail(fmt.Errorf("%s: PosInterp is nil", op))
	}
	if err := notNil(rec, op, []string{yName, xName}, y, x); err != nil {
		return err
	}
	rows, cols, R, C := pi.Mh, pi.Mw, pi.H, pi.W
	if backward {
		rows, cols, R, C = R, C, rows, cols
	}
	D := x.Dim(-1)
	if x.Len() != rows*cols*D || y.Dim(-1) != D || y.Len() != R*C*D {
		return shapeErr(rec, op, "%s %s -> %s %s for a %dx%d -> %dx%d grid: want [%dx%dx%d] -> [%dx%dx%d]",
			xName, x, yName, y, rows, cols, R, C, rows, cols, D, R, C, D)
	}
	return nil
}

// Interp records out [H, W, D] = the bicubic resize of in [Mh, Mw, D] by pi
// (tensors of any leading shape with these lengths and last axis D).
func Interp(rec *gpu.Recorder, out, in *gpu.Tensor, pi *PosInterp) error {
	if err := checkGrids(rec, "interp", pi, out, in, "out", "in", false); err != nil {
		return err
	}
	return resample(rec, out, in, pi.fy, pi.fx, pi.Mw, false)
}

// InterpBackward records dIn (+)= the transpose of Interp applied to dOut,
// the gradient of the position embeddings.
func InterpBackward(rec *gpu.Recorder, dIn, dOut *gpu.Tensor, pi *PosInterp, accumulate bool) error {
	if err := checkGrids(rec, "interp_backward", pi, dIn, dOut, "dIn", "dOut", true); err != nil {
		return err
	}
	return resample(rec, dIn, dOut, pi.by, pi.bx, pi.W, accumulate)
}

// resample records y[i, j, :] (+)= sum_a sum_b Ty[i, a] Tx[j, b] x[a, b, :]
// from packed tables ty [R1, 1+T1], tx [R2, 1+T2]; x has C2 columns.
func resample(rec *gpu.Recorder, y, x, ty, tx *gpu.Tensor, C2 int, accumulate bool) error {
	k := gpu.Kernel{Name: "interp", Data: struct{ Accumulate bool }{accumulate},
		Access: []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}}
	n := y.Len()
	params := []uint32{gpu.U32(n), gpu.U32(tx.Dim(0)), gpu.U32(C2), gpu.U32(x.Dim(-1)), gpu.U32(ty.Dim(1) - 1), gpu.U32(tx.Dim(1) - 1)}
	return rec.Dispatch(k, rec.Groups(n, 256), params, ty, tx, x, y)
}
