package nn

import "github.com/webdino/webdino/gpu"

// KoLeo records DINOv2's KoLeo regulariser of a batch of L2-normalised rows x
// [B, D] (normalise with L2Normalize first):
//
//	loss[0] = -1/B sum_i log(||x_i - x_nn(i)|| + eps)
//
// where nn(i) is the nearest other row (the first one on ties), saved into
// nnIdx [B] (a u32 tensor) for KoLeoBackward. Neighbours and distances come
// from differences, not from dot products as in the reference: for close
// rows (an untrained model's CLS tokens) f32 dot products of normalised rows
// all round to 1, which makes the reference's choice of neighbour noise and
// sqrt(2 - 2 dot) lose every digit. The recipe's eps is 1e-8; it keeps duplicate rows (distance 0)
// finite. A batch of one row has no neighbour: its loss is 0 and its gradient
// 0. The reference's PairwiseDistance also adds 1e-8 to the difference before
// the norm; that shifts distances by ~1e-8 and is left out.
func KoLeo(rec *gpu.Recorder, loss, nnIdx, x *gpu.Tensor, eps float32) error {
	const op = "koleo"
	if err := notNil(rec, op, []string{"loss", "nnIdx", "x"}, loss, nnIdx, x); err != nil {
		return err
	}
	B, D, err := koleoArgs(rec, op, x, nnIdx, eps)
	if err != nil {
		return err
	}
	if loss.Len() != 1 {
		return shapeErr(rec, op, "loss %s: want a single element", loss)
	}
	vec4 := D%4 == 0
	k := gpu.Kernel{Name: "koleo_nn", Data: struct{ Vec4 bool }{vec4}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	if err := rec.Dispatch(k, rec.Groups(B, 64), []uint32{gpu.U32(B), gpu.U32(D)}, x, nnIdx); err != nil {
		return err
	}
	k = gpu.Kernel{Name: "koleo_loss", Data: rowKernel{WG: sumWG, Lanes: sumWG, Vec4: vec4}, Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, [3]uint32{1, 1, 1}, []uint32{gpu.U32(B), gpu.U32(D), gpu.F32(eps)}, x, nnIdx, loss)
}

// KoLeoBackward records dx (+)= dLoss[0] d loss / d x from the forward's x and
// nnIdx. A term reaches both x_i and its neighbour; each row gathers the
// terms of the rows whose neighbour it is (O(B^2) index checks, no atomics).
// Where two rows coincide the distance has no gradient and gets 0.
func KoLeoBackward(rec *gpu.Recorder, dx, dLoss, nnIdx, x *gpu.Tensor, eps float32, accumulate bool) error {
	const op = "koleo_backward"
	if err := notNil(rec, op, []string{"dx", "dLoss", "nnIdx", "x"}, dx, dLoss, nnIdx, x); err != nil {
		return err
	}
	B, D, err := koleoArgs(rec, op, x, nnIdx, eps)
	if err != nil {
		return err
	}
	if dx.Len() != x.Len() || dx.Dim(-1) != D || dLoss.Len() != 1 {
		return shapeErr(rec, op, "x %s, dx %s, dLoss %s: dx must match x and dLoss hold one element", x, dx, dLoss)
	}
	k := gpu.Kernel{Name: "koleo_backward", Data: rowKernel{Vec4: D%4 == 0, Accumulate: accumulate},
		Access: []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, rec.Groups(B, 64), []uint32{gpu.U32(B), gpu.U32(D), gpu.F32(eps)}, x, nnIdx, dLoss, dx)
}

func koleoArgs(rec *gpu.Recorder, op string, x, nnIdx *gpu.Tensor, eps float32) (B, D int, err error) {
	B, D = rowsOf(x)
	if nnIdx.Len() != B {
		return 0, 0, shapeErr(rec, op, "x %s, nnIdx %s: want %d indices, one per row", x, nnIdx, B)
	}
	if !(eps > 0) {
		return 0, 0, shapeErr(rec, op, "eps %g must be positive (it keeps duplicate rows finite)", eps)
	}
	return B, D, nil
}
