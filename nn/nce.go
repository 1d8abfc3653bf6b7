package nn

import (
	"errors"
	"fmt"

	"github.com/webdino/webdino/gpu"
)

// NCE holds InfoNCE's tensors for 2B rows of width D: the loss of
// contrastive copy-detection training (SimCLR's NT-Xent, which SSCD, the
// copy detector of DINOv2's curation, trains with). Rows i and (i + B) mod
// 2B are two views of one image; every other row is a negative:
//
//	loss = 1/(2B) sum_i -log(exp(c(i, p(i))/tau) / sum_{j != i} exp(c(i, j)/tau))
//
// with c the cosine. It is composed of existing kernels: the rows are
// normalised, their cosines C = Y Y^T land on a constant mask that puts
// -1e4 on the diagonal (self-pairs out of the softmax), and
// SoftmaxCrossEntropy scores each row against a one-hot target.
type NCE struct {
	B, D         int
	Y, Norm      *gpu.Tensor // [2B, D] normalised rows, [2B] their norms
	C            *gpu.Tensor // [2B, 2B] masked cosines; their gradient in the backward
	Loss         *gpu.Tensor // [2B] per-row losses
	lse, tsum    *gpu.Tensor
	mask, target *gpu.Tensor // constants
	weight       *gpu.Tensor // [2B] dLoss per row: weight / 2B
	dY           *gpu.Tensor
	bufs         []*gpu.Tensor
}

// ncePad keeps self-pairs out of the softmax: exp((1 - 1e4)/tau) is 0 in
// float32 for any tau below 100.
const ncePad = -1e4

// NewNCE allocates InfoNCE for B images of two views, rows of width D; the
// loss enters the total with the given weight (the backward's scale).
func NewNCE(dev *gpu.Device, B, D int, weight float64) (*NCE, error) {
	if B < 1 || D < 1 {
		return nil, fmt.Errorf("infonce: %d images of width %d", B, D)
	}
	R := 2 * B
	n := &NCE{B: B, D: D}
	var errs []error
	t := func(shape ...int) *gpu.Tensor {
		x, err := dev.NewTensor("infonce", shape...)
		errs = append(errs, err)
		n.bufs = append(n.bufs, x)
		return x
	}
	n.Y, n.Norm, n.C, n.Loss = t(R, D), t(R), t(R, R), t(R)
	n.lse, n.tsum, n.mask, n.target, n.weight, n.dY = t(R), t(R), t(R, R), t(R, R), t(R), t(R, D)
	if err := errors.Join(errs...); err != nil {
		n.Release()
		return nil, fmt.Errorf("infonce for %d images: %w", B, err)
	}
	mask, target, w := make([]float32, R*R), make([]float32, R*R), make([]float32, R)
	for i := 0; i < R; i++ {
		mask[i*R+i] = ncePad
		target[i*R+(i+B)%R] = 1
		w[i] = float32(weight / float64(R))
	}
	for _, c := range []struct {
		x *gpu.Tensor
		v []float32
	}{{n.mask, mask}, {n.target, target}, {n.weight, w}} {
		if err := dev.Write(c.x, c.v); err != nil {
			n.Release()
			return nil, fmt.Errorf("infonce: %w", err)
		}
	}
	return n, nil
}

// Release frees the tensors.
func (n *NCE) Release() {
	for _, x := range n.bufs {
		if x != nil {
			x.Buf.Release()
		}
	}
	n.bufs = nil
}

// Forward records the per-row losses of x [2B, D] into n.Loss (their mean
// is the loss).
func (n *NCE) Forward(rec *gpu.Recorder, x *gpu.Tensor, tau float32) error {
	if x.Len() != 2*n.B*n.D || x.Dim(-1) != n.D {
		return shapeErr(rec, "infonce", "x %s: want [%d, %d]", x, 2*n.B, n.D)
	}
	L2Normalize(rec, n.Y, n.Norm, x, normEps)
	rec.Copy(n.C, n.mask)
	MatMul(rec, n.C, n.Y, n.Y, MatMulOpts{TransB: true, Accumulate: true})
	return SoftmaxCrossEntropy(rec, n.Loss, n.lse, n.tsum, n.C, n.target, tau)
}

// Backward records weight times the loss's gradient with respect to the x of
// Forward into dx (added with accumulate). It overwrites n.C.
func (n *NCE) Backward(rec *gpu.Recorder, dx *gpu.Tensor, tau float32, accumulate bool) error {
	SoftmaxCrossEntropyBackward(rec, n.C, n.weight, n.C, n.target, n.lse, n.tsum, tau, false)
	// C = Y Y^T: dY = dC Y + dC^T Y.
	MatMul(rec, n.dY, n.C, n.Y, MatMulOpts{})
	MatMul(rec, n.dY, n.C, n.Y, MatMulOpts{TransA: true, Accumulate: true})
	return L2NormalizeBackward(rec, dx, n.dY, n.Y, n.Norm, normEps, accumulate)
}
