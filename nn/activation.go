package nn

import "github.com/webdino/webdino/gpu"

// maxEltGroups caps the workgroups of the elementwise kernels, which loop
// over the elements with a grid stride: 1024 workgroups of 256 fill a large
// GPU, and lavapipe pays per workgroup (Scale of 3.2M floats: 6 ms capped,
// 14-21 ms with one workgroup per 256 elements).
var maxEltGroups = 1024

// eltGroups is the grid of an elementwise kernel over n elements.
func eltGroups(n int) [3]uint32 {
	return [3]uint32{uint32(min((n+255)/256, maxEltGroups)), 1, 1}
}

// eltwise dispatches a 1-D elementwise kernel over n elements. With inPlace
// the output (bufs[0]) is also the input and is bound once.
func eltwise(rec *gpu.Recorder, name string, n int, inPlace bool, params []uint32, access []gpu.Access, bufs ...*gpu.Tensor) error {
	k := gpu.Kernel{Name: name, Data: struct{ InPlace bool }{inPlace}, Access: access}
	return rec.Dispatch(k, eltGroups(n), append([]uint32{gpu.U32(n)}, params...), bufs...)
}

// sameLen fails unless every tensor has as many elements as the first.
func sameLen(rec *gpu.Recorder, op string, names []string, ts ...*gpu.Tensor) error {
	if err := notNil(rec, op, names, ts...); err != nil {
		return err
	}
	for i, t := range ts[1:] {
		if t.Len() != ts[0].Len() {
			return shapeErr(rec, op, "%s %s, %s %s: sizes differ", names[0], ts[0], names[i+1], t)
		}
	}
	return nil
}

// actArgs checks the activation and the tensor sizes of Activate and
// ActivateBackward.
func actArgs(rec *gpu.Recorder, op string, act Activation, names []string, ts ...*gpu.Tensor) error {
	if act != GELU {
		return shapeErr(rec, op, "unsupported activation %q", act)
	}
	return sameLen(rec, op, names, ts...)
}

// Activate records y = act(x) elementwise; y may be x. GELU is the exact
// (erf) GELU. MatMul fuses activations into its epilogue; this op serves the
// rest.
func Activate(rec *gpu.Recorder, y, x *gpu.Tensor, act Activation) error {
	const op = "activate"
	if err := actArgs(rec, op, act, []string{"y", "x"}, y, x); err != nil {
		return err
	}
	if same(y, x) {
		return eltwise(rec, string(act), y.Len(), true, nil, []gpu.Access{gpu.ReadWrite}, y)
	}
	return eltwise(rec, string(act), y.Len(), false, nil, []gpu.Access{gpu.ReadWrite, gpu.Read}, y, x)
}

// ActivateBackward records dx = dy * act'(h) for the pre-activation h (what
// MatMulOpts.PreAct saves). dx may be dy, computing the gradient in place.
func ActivateBackward(rec *gpu.Recorder, dx, dy, h *gpu.Tensor, act Activation) error {
	const op = "activate_backward"
	if err := actArgs(rec, op, act, []string{"dx", "dy", "h"}, dx, dy, h); err != nil {
		return err
	}
	name := string(act) + "_backward"
	if same(dx, dy) {
		return eltwise(rec, name, dx.Len(), true, nil, []gpu.Access{gpu.ReadWrite, gpu.Read}, dx, h)
	}
	return eltwise(rec, name, dx.Len(), false, nil, []gpu.Access{gpu.ReadWrite, gpu.Read, gpu.Read}, dx, h, dy)
}

// swigluArgs checks x [..., 2H] against y [..., H] and returns H.
func swigluArgs(rec *gpu.Recorder, op string, x, y *gpu.Tensor, xName, yName string) (int, error) {
	if err := notNil(rec, op, []string{xName, yName}, x, y); err != nil {
		return 0, err
	}
	H := y.Dim(-1)
	if x.Dim(-1) != 2*H || x.Len() != 2*y.Len() {
		return 0, shapeErr(rec, op, "%s %s, %s %s: %s must be [..., 2H] for %s [..., H]", xName, x, yName, y, xName, yName)
	}
	return H, nil
}

// SwiGLU records y = silu(x1) * x2 where x = [x1 | x2] along the last axis:
// x is [..., 2H], y is [..., H] (the ViT-g MLP, x = w12 applied to the input).
func SwiGLU(rec *gpu.Recorder, y, x *gpu.Tensor) error {
	const op = "swiglu"
	H, err := swigluArgs(rec, op, x, y, "x", "y")
	if err != nil {
		return err
	}
	return eltwise(rec, op, y.Len(), false, []uint32{gpu.U32(H)}, []gpu.Access{gpu.Read, gpu.ReadWrite}, x, y)
}

// SwiGLUBackward records dx = [dy * x2 * silu'(x1) | dy * silu(x1)], the
// [..., 2H] gradient of SwiGLU, from dy [..., H] and the forward's input x.
func SwiGLUBackward(rec *gpu.Recorder, dx, dy, x *gpu.Tensor) error {
	const op = "swiglu_backward"
	H, err := swigluArgs(rec, op, x, dy, "x", "dy")
	if err != nil {
		return err
	}
	if err := sameLen(rec, op, []string{"x", "dx"}, x, dx); err != nil {
		return err
	}
	return eltwise(rec, op, dy.Len(), false, []uint32{gpu.U32(H)}, []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}, dy, x, dx)
}

// Scale records y = a * x; y may be x.
func Scale(rec *gpu.Recorder, y, x *gpu.Tensor, a float32) error {
	const op = "scale"
	if err := sameLen(rec, op, []string{"y", "x"}, y, x); err != nil {
		return err
	}
	return scaleRows(rec, y, x, nil, a, 1)
}

// ScaleRows records y[r, :] = s[r] x[r, :] for the rows of x (last axis
// D): stochastic depth's per-sample keep factors, expanded to tokens. y may
// be x (in place).
func ScaleRows(rec *gpu.Recorder, y, x, s *gpu.Tensor) error {
	const op = "scale_rows"
	if err := sameLen(rec, op, []string{"y", "x"}, y, x); err != nil {
		return err
	}
	if err := notNil(rec, op, []string{"s"}, s); err != nil {
		return err
	}
	D := x.Dim(-1)
	if s.Len()*D != x.Len() {
		return shapeErr(rec, op, "x %s, s %s: want one factor per row of %d", x, s, D)
	}
	return scaleRows(rec, y, x, s, 1, D)
}

// scaleRows dispatches the scale kernel: y = a * x, times s[row] when s is set.
func scaleRows(rec *gpu.Recorder, y, x, s *gpu.Tensor, a float32, D int) error {
	data := struct{ InPlace, Rows bool }{same(y, x), s != nil}
	bufs, access := []*gpu.Tensor{y}, []gpu.Access{gpu.ReadWrite}
	if !data.InPlace {
		bufs, access = append(bufs, x), append(access, gpu.Read)
	}
	if s != nil {
		bufs, access = append(bufs, s), append(access, gpu.Read)
	}
	k := gpu.Kernel{Name: "scale", Data: data, Access: access}
	return rec.Dispatch(k, eltGroups(x.Len()), []uint32{gpu.U32(x.Len()), gpu.F32(a), gpu.U32(D)}, bufs...)
}

// Add records y = x + h; with y the same tensor as x it adds h in place
// (accumulating a gradient, a residual).
func Add(rec *gpu.Recorder, y, x, h *gpu.Tensor) error {
	const op = "add"
	if err := sameLen(rec, op, []string{"y", "x", "h"}, y, x, h); err != nil {
		return err
	}
	return add(rec, y, x, h, nil, h.Len())
}

// LayerScale records the residual y = x + gamma * h with one gamma per
// channel of the last axis; with y the same tensor as x it adds in place.
func LayerScale(rec *gpu.Recorder, y, x, h, gamma *gpu.Tensor) error {
	const op = "layerscale"
	if err := sameLen(rec, op, []string{"y", "x", "h"}, y, x, h); err != nil {
		return err
	}
	if err := notNil(rec, op, []string{"gamma"}, gamma); err != nil {
		return err
	}
	D := h.Dim(-1)
	if gamma.Len() != D {
		return shapeErr(rec, op, "h %s, gamma %s: gamma must have %d elements", h, gamma, D)
	}
	return add(rec, y, x, h, gamma, D)
}

func add(rec *gpu.Recorder, y, x, h, gamma *gpu.Tensor, D int) error {
	access := []gpu.Access{gpu.ReadWrite, gpu.Read}
	bufs := []*gpu.Tensor{y, h}
	if gamma != nil {
		access = append(access, gpu.Read)
		bufs = append(bufs, gamma)
	}
	inPlace := same(y, x)
	if !inPlace {
		access = append(access, gpu.Read)
		bufs = append(bufs, x)
	}
	k := gpu.Kernel{Name: "add", Data: struct{ InPlace, Gamma bool }{inPlace, gamma != nil}, Access: access}
	n := y.Len()
	return rec.Dispatch(k, eltGroups(n), []uint32{gpu.U32(n), gpu.U32(D)}, bufs...)
}

// LayerScaleBackward records the gradients of y = x + gamma * h: dh = gamma *
// dy and dgamma (+)= sum over rows of dy * h. The gradient of x is dy itself,
// so the caller records nothing for it: it keeps using dy's tensor as the
// residual stream's gradient, and the branch's backward adds into it.
// scratch holds ScratchLen(device, D) floats for the per-chunk column sums. dh may
// be dy itself (then dy is overwritten).
func LayerScaleBackward(rec *gpu.Recorder, dh, dgamma, dy, h, gamma, scratch *gpu.Tensor, accumulate bool) error {
	const op = "layerscale_backward"
	if err := sameLen(rec, op, []string{"h", "dy", "dh"}, h, dy, dh); err != nil {
		return err
	}
	names := []string{"gamma", "dgamma", "scratch"}
	if err := notNil(rec, op, names, gamma, dgamma, scratch); err != nil {
		return err
	}
	rows, err := rowArgs(rec, op, h, names[:2], []*gpu.Tensor{gamma, dgamma}, []bool{false, false})
	if err != nil {
		return err
	}
	D := h.Dim(-1)
	if need := ScratchLen(rec.Device(), D); scratch.Len() < need {
		return shapeErr(rec, op, "scratch %s: want at least %d elements for D = %d", scratch, need, D)
	}
	parts := partials(rec.Device(), D)
	rpw, groups := rowGrid(rows, parts, 1)
	type data struct {
		rowKernel
		InPlace bool
	}
	access := []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite}
	bufs := []*gpu.Tensor{dy, h, gamma, dh, scratch}
	inPlace := same(dh, dy)
	if inPlace {
		access = []gpu.Access{gpu.ReadWrite, gpu.Read, gpu.Read, gpu.ReadWrite}
		bufs = []*gpu.Tensor{dy, h, gamma, scratch}
	}
	k := gpu.Kernel{Name: op, Data: data{rowKernel{WG: colWG, Vec4: D%4 == 0}, inPlace}, Access: access}
	params := []uint32{gpu.U32(rows), gpu.U32(D), gpu.U32(rpw)}
	if err := rec.Dispatch(k, colGroups(D, groups), params, bufs...); err != nil {
		return err
	}
	return sumPartials(rec, scratch, parts, groups, D, accumulate, dgamma)
}

// Fill records y = v in every element (zeroing gradients, constant upstream
// gradients).
func Fill(rec *gpu.Recorder, y *gpu.Tensor, v float32) error {
	if err := notNil(rec, "fill", []string{"y"}, y); err != nil {
		return err
	}
	k := gpu.Kernel{Name: "fill", Access: []gpu.Access{gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(y.Len(), 256), []uint32{gpu.U32(y.Len()), gpu.F32(v)}, y)
}
