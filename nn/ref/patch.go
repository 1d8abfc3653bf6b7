package ref

// Patchify returns patches [B, N, C*P*P] of images [B, C, H, W]: patch n =
// gy*(W/P) + gx holds pixels (c, ky, kx) in that order.
func Patchify(x []float64, B, C, H, W, P int) []float64 {
	GH, GW := H/P, W/P
	F := C * P * P
	out := make([]float64, B*GH*GW*F)
	for b := 0; b < B; b++ {
		for gy := 0; gy < GH; gy++ {
			for gx := 0; gx < GW; gx++ {
				row := out[(b*GH*GW+gy*GW+gx)*F:]
				for c := 0; c < C; c++ {
					for ky := 0; ky < P; ky++ {
						for kx := 0; kx < P; kx++ {
							row[(c*P+ky)*P+kx] = x[((b*C+c)*H+gy*P+ky)*W+gx*P+kx]
						}
					}
				}
			}
		}
	}
	return out
}

// Unpatchify is the adjoint (and inverse) of Patchify.
func Unpatchify(patches []float64, B, C, H, W, P int) []float64 {
	// Patchify is a permutation: apply it to the indices and scatter.
	idx := make([]float64, B*C*H*W)
	for i := range idx {
		idx[i] = float64(i)
	}
	out := make([]float64, len(idx))
	for j, i := range Patchify(idx, B, C, H, W, P) {
		out[int(i)] = patches[j]
	}
	return out
}

// PatchEmbed returns Patchify(x) W^T + bias for weight [D, C*P*P], bias [D]
// (nil for none).
func PatchEmbed(x, w, bias []float64, B, C, H, W, P, D int) []float64 {
	pt := Patchify(x, B, C, H, W, P)
	F := C * P * P
	y := MatMul(pt, w, 1, len(pt)/F, D, F, false, true, true)
	for i := range y {
		if bias != nil {
			y[i] += bias[i%D]
		}
	}
	return y
}

// PatchEmbedBackward returns the gradients of PatchEmbed with respect to the
// images, the weight and the bias, given dy [B, N, D].
func PatchEmbedBackward(dy, x, w []float64, B, C, H, W, P, D int) (dx, dw, db []float64) {
	pt := Patchify(x, B, C, H, W, P)
	F := C * P * P
	BN := len(pt) / F
	dw = MatMul(dy, pt, 1, D, F, BN, true, false, true)
	db = SumRows(dy, D)
	dx = Unpatchify(MatMul(dy, w, 1, BN, F, D, false, false, true), B, C, H, W, P)
	return
}
