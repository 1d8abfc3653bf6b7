package nn

import "github.com/webdino/webdino/gpu"

// patchGrid checks images [B, C, H, W] against patches [B, N, C*P*P] for patch
// size P and returns the patch grid; H and W may differ but must be multiples
// of P.
func patchGrid(rec *gpu.Recorder, op string, images, patches *gpu.Tensor, P int) (B, C, H, W, GW, N int, err error) {
	if err = notNil(rec, op, []string{"images", "patches"}, images, patches); err != nil {
		return
	}
	if len(images.Shape) != 4 || P <= 0 {
		err = shapeErr(rec, op, "images %s, patch size %d: want images [B, C, H, W] and a positive patch size", images, P)
		return
	}
	B, C, H, W = images.Shape[0], images.Shape[1], images.Shape[2], images.Shape[3]
	if H%P != 0 || W%P != 0 {
		err = shapeErr(rec, op, "images %s: height %d and width %d must be multiples of the patch size %d", images, H, W, P)
		return
	}
	GW, N = W/P, (H/P)*(W/P)
	if len(patches.Shape) != 3 || patches.Shape[0] != B || patches.Shape[1] != N || patches.Shape[2] != C*P*P {
		err = shapeErr(rec, op, "images %s, patch size %d -> patches %s: want [%dx%dx%d]", images, P, patches, B, N, C*P*P)
	}
	return
}

// Patchify records patches[b, n, (c, ky, kx)] = images[b, c, gy*P+ky, gx*P+kx]
// for patch n = gy*(W/P) + gx: the input of a conv with kernel = stride = P
// written as a matmul with PyTorch's weight [D, C, P, P] flattened to
// [D, C*P*P]. images is [B, C, H, W], patches [B, (H/P)*(W/P), C*P*P].
func Patchify(rec *gpu.Recorder, patches, images *gpu.Tensor, P int) error {
	return patchPermute(rec, "patchify", images, patches, P, false, false)
}

// Unpatchify records the inverse permutation of Patchify, images = patches
// laid back on the pixel grid (or images += with accumulate): the gradient
// with respect to the images.
func Unpatchify(rec *gpu.Recorder, images, patches *gpu.Tensor, P int, accumulate bool) error {
	return patchPermute(rec, "unpatchify", images, patches, P, true, accumulate)
}

func patchPermute(rec *gpu.Recorder, op string, images, patches *gpu.Tensor, P int, inverse, accumulate bool) error {
	B, C, H, W, GW, N, err := patchGrid(rec, op, images, patches, P)
	if err != nil {
		return err
	}
	if max := int(rec.Device().Limits().MaxWorkgroupsPerDim); C*H > max || B > max {
		return shapeErr(rec, op, "images %s: channels x height %d and batch %d must not exceed %d", images, C*H, B, max)
	}
	k := gpu.Kernel{Name: "patch_permute", Data: struct{ Inverse, Accumulate bool }{inverse, accumulate},
		Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	groups := [3]uint32{uint32((W + 63) / 64), uint32(C * H), uint32(B)}
	params := []uint32{gpu.U32(C), gpu.U32(H), gpu.U32(W), gpu.U32(P), gpu.U32(GW), gpu.U32(N)}
	if inverse {
		return rec.Dispatch(k, groups, params, patches, images)
	}
	return rec.Dispatch(k, groups, params, images, patches)
}

// PatchEmbed records out = Patchify(images) W^T + bias, the patch embedding
// conv. out is [B, N, D]; weight is [D, C, P, P] or [D, C*P*P]; bias [D] or
// nil. patches [B, N, C*P*P] receives the flattened patches, which the
// backward pass needs for the weight gradient.
func PatchEmbed(rec *gpu.Recorder, out, patches, images, weight, bias *gpu.Tensor, P int) error {
	const op = "patch_embed"
	if err := notNil(rec, op, []string{"out", "weight"}, out, weight); err != nil {
		return err
	}
	B, _, _, _, _, N, err := patchGrid(rec, op, images, patches, P)
	if err != nil {
		return err
	}
	F := patches.Dim(-1)
	D := out.Dim(-1)
	if len(out.Shape) != 3 || out.Shape[0] != B || out.Shape[1] != N || weight.Len() != D*F || weight.Shape[0] != D {
		return shapeErr(rec, op, "images %s, weight %s -> out %s: want weight [%dx%d] and out [%dx%dx%d]", images, weight, out, D, F, B, N, D)
	}
	w, err := weight.Reshape(D, F)
	if err != nil {
		return rec.Fail(err)
	}
	if err := Patchify(rec, patches, images, P); err != nil {
		return err
	}
	return MatMul(rec, out, patches, w, MatMulOpts{TransB: true, Bias: bias})
}

// PatchEmbedBackward records the gradients of PatchEmbed from dOut [B, N, D]:
// dWeight += dOut^T patches and dBias += the column sums of dOut (either may
// be nil to skip it). With dImages non-nil it also writes dImages =
// Unpatchify(dOut W), using dPatches [B, N, C*P*P] as scratch; the first layer
// of a network usually needs no input gradient.
func PatchEmbedBackward(rec *gpu.Recorder, dWeight, dBias, dImages, dPatches, dOut, patches, weight *gpu.Tensor, P int) error {
	const op = "patch_embed_backward"
	if err := notNil(rec, op, []string{"dOut", "patches", "weight"}, dOut, patches, weight); err != nil {
		return err
	}
	if len(patches.Shape) != 3 || len(dOut.Shape) != 3 || dOut.Shape[0] != patches.Shape[0] || dOut.Shape[1] != patches.Shape[1] {
		return shapeErr(rec, op, "dOut %s, patches %s: want [B, N, D] and [B, N, C*P*P]", dOut, patches)
	}
	BN, F, D := patches.Shape[0]*patches.Shape[1], patches.Shape[2], dOut.Shape[2]
	if weight.Len() != D*F || weight.Shape[0] != D {
		return shapeErr(rec, op, "weight %s for dOut %s, patches %s: want [%dx%d]", weight, dOut, patches, D, F)
	}
	g, _ := dOut.Reshape(BN, D)
	x, _ := patches.Reshape(BN, F)
	w, _ := weight.Reshape(D, F)
	if dWeight != nil {
		if dWeight.Len() != D*F || dWeight.Shape[0] != D {
			return shapeErr(rec, op, "dWeight %s for weight %s", dWeight, weight)
		}
		dw, _ := dWeight.Reshape(D, F)
		if err := MatMul(rec, dw, g, x, MatMulOpts{TransA: true, Accumulate: true}); err != nil {
			return err
		}
	}
	if dBias != nil {
		if err := SumRows(rec, dBias, g, true); err != nil {
			return err
		}
	}
	if dImages == nil {
		return nil
	}
	if dPatches == nil || dPatches.Len() != BN*F {
		return shapeErr(rec, op, "dPatches %s: the input gradient needs a scratch tensor shaped like patches %s", dPatches, patches)
	}
	dp, _ := dPatches.Reshape(patches.Shape...)
	if err := MatMul(rec, dp, dOut, w, MatMulOpts{}); err != nil {
		return err
	}
	return Unpatchify(rec, dImages, dp, P, false)
}
