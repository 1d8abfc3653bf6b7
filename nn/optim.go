package nn

import (
	"math"

	"github.com/webdino/webdino/gpu"
)

// AdamWOpts are one parameter tensor's AdamW hyperparameters for one step.
// LR and WeightDecay carry the tensor's own multipliers (layer-wise LR decay,
// the patch embedding's 0.2, no decay on biases, norms and LayerScale).
// Zero Beta1, Beta2 and Eps mean PyTorch's defaults 0.9, 0.999 and 1e-8.
type AdamWOpts struct {
	LR, WeightDecay   float32
	Beta1, Beta2, Eps float32
	Step              int // 1 for the first step; drives the bias corrections
}

// AdamW records one decoupled-weight-decay Adam step (torch.optim.AdamW) on
// param with grad and moments m, v, all of one length. param, m and v are
// written, so each must live in a buffer of its own among the four.
func AdamW(rec *gpu.Recorder, param, grad, m, v *gpu.Tensor, o AdamWOpts) error {
	const op = "adamw"
	if err := notNil(rec, op, []string{"param", "grad", "m", "v"}, param, grad, m, v); err != nil {
		return err
	}
	n := param.Len()
	if grad.Len() != n || m.Len() != n || v.Len() != n {
		return shapeErr(rec, op, "param %s, grad %s, m %s, v %s: lengths differ", param, grad, m, v)
	}
	if o.Step < 1 {
		return shapeErr(rec, op, "step %d: steps count from 1", o.Step)
	}
	b1, b2, eps := float64(o.Beta1), float64(o.Beta2), float64(o.Eps)
	if b1 == 0 {
		b1 = 0.9
	}
	if b2 == 0 {
		b2 = 0.999
	}
	if eps == 0 {
		eps = 1e-8
	}
	// Host-side scalars in float64, as PyTorch computes them in double.
	lr, t := float64(o.LR), float64(o.Step)
	f := func(x float64) uint32 { return gpu.F32(float32(x)) }
	params := []uint32{gpu.U32(n), f(b1), f(1 - b1), f(b2), f(1 - b2), f(1 - lr*float64(o.WeightDecay)),
		f(lr / (1 - math.Pow(b1, t))), f(math.Sqrt(1 - math.Pow(b2, t))), f(eps)}
	k := gpu.Kernel{Name: "adamw", Access: []gpu.Access{gpu.ReadWrite, gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(n, 256), params, param, grad, m, v)
}

// EMA records teacher = momentum teacher + (1 - momentum) student.
func EMA(rec *gpu.Recorder, teacher, student *gpu.Tensor, momentum float32) error {
	const op = "ema"
	if err := notNil(rec, op, []string{"teacher", "student"}, teacher, student); err != nil {
		return err
	}
	if teacher.Len() != student.Len() {
		return shapeErr(rec, op, "teacher %s, student %s: lengths differ", teacher, student)
	}
	n := teacher.Len()
	k := gpu.Kernel{Name: "ema", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(n, 256), []uint32{gpu.U32(n), gpu.F32(momentum)}, student, teacher)
}

// Reductions over views go in chunks of chunkItems*256 elements per workgroup.
const chunkItems = 16

func chunks(n int) int { return (n + chunkItems*256 - 1) / (chunkItems * 256) }

// NormPartials is the length of the partials scratch tensor GradNorm needs
// for these views: one per invocation, 256 per started chunk of 4096
// elements (a workgroup-wide reduction instead needs barriers, which made
// the pass 9x slower on lavapipe).
func NormPartials(views ...*gpu.Tensor) int {
	n := 0
	for _, v := range views {
		if v != nil {
			n += chunks(v.Len()) * 256
		}
	}
	return n
}

// GradNorm records norm[0] = sqrt(sum over views of sum x^2), the global L2
// norm of a list of gradient views, without leaving the GPU: every
// invocation writes the sum of squares of its 16 elements to partials (at
// least NormPartials(views...) long), then one workgroup adds them up. norm
// and partials are written, so neither may share a buffer with the views.
func GradNorm(rec *gpu.Recorder, norm, partials *gpu.Tensor, views ...*gpu.Tensor) error {
	const op = "grad_norm"
	if err := notNil(rec, op, []string{"norm", "partials"}, norm, partials); err != nil {
		return err
	}
	if norm.Len() != 1 {
		return shapeErr(rec, op, "norm %s: want 1 element", norm)
	}
	if len(views) == 0 {
		return shapeErr(rec, op, "no views")
	}
	for _, v := range views {
		if v == nil {
			return shapeErr(rec, op, "a view is nil")
		}
	}
	if need := NormPartials(views...); partials.Len() < need {
		return shapeErr(rec, op, "partials %s for %d views: want at least %d elements", partials, len(views), need)
	}
	k := gpu.Kernel{Name: "sumsq_partial", Data: struct{ Items int }{chunkItems}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	off := 0
	for _, v := range views {
		c := chunks(v.Len())
		if err := rec.Dispatch(k, rec.Groups(c, 1), []uint32{gpu.U32(v.Len()), gpu.U32(off)}, v, partials); err != nil {
			return err
		}
		off += c * 256
	}
	f := gpu.Kernel{Name: "norm_final", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(f, [3]uint32{1, 1, 1}, []uint32{gpu.U32(off)}, partials, norm)
}

// ClipGradNorm records views *= min(1, maxNorm / (norm[0] + 1e-6)) for the
// norm GradNorm computed (torch.nn.utils.clip_grad_norm_), reading the norm
// on the GPU so no step waits for a readback. norm must not share a buffer
// with the views. A non-finite norm leaves the gradients undefined: check
// them with CheckFinite and skip such a step.
func ClipGradNorm(rec *gpu.Recorder, norm *gpu.Tensor, maxNorm float32, views ...*gpu.Tensor) error {
	const op = "clip_grad_norm"
	if err := notNil(rec, op, []string{"norm"}, norm); err != nil {
		return err
	}
	if norm.Len() != 1 {
		return shapeErr(rec, op, "norm %s: want 1 element", norm)
	}
	if !(maxNorm > 0) {
		return shapeErr(rec, op, "max norm %g must be positive", maxNorm)
	}
	k := gpu.Kernel{Name: "clip_scale", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	for _, v := range views {
		if v == nil {
			return shapeErr(rec, op, "a view is nil")
		}
		if err := rec.Dispatch(k, rec.Groups(v.Len(), 256), []uint32{gpu.U32(v.Len()), gpu.F32(maxNorm)}, norm, v); err != nil {
			return err
		}
	}
	return nil
}

// CheckFinite records flag[0] = 1 if any element of the views is NaN or
// infinite and 0 otherwise; training reads the flag once per step to skip a
// bad update.
func CheckFinite(rec *gpu.Recorder, flag *gpu.Tensor, views ...*gpu.Tensor) error {
	const op = "check_finite"
	if err := notNil(rec, op, []string{"flag"}, flag); err != nil {
		return err
	}
	if flag.Len() != 1 {
		return shapeErr(rec, op, "flag %s: want 1 element", flag)
	}
	if err := Fill(rec, flag, 0); err != nil {
		return err
	}
	k := gpu.Kernel{Name: "nonfinite", Data: struct{ Items int }{chunkItems}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	for _, v := range views {
		if v == nil {
			return shapeErr(rec, op, "a view is nil")
		}
		if err := rec.Dispatch(k, rec.Groups(chunks(v.Len()), 1), []uint32{gpu.U32(v.Len())}, v, flag); err != nil {
			return err
		}
	}
	return nil
}
