//go:build !js

package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

func TestPatchEmbed(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	cases := []struct{ B, C, H, W, P, D int }{
		{1, 3, 14, 28, 14, 5}, {2, 3, 42, 28, 14, 7}, {3, 2, 9, 15, 3, 11}, {1, 1, 1, 1, 1, 1},
	}
	for _, c := range cases {
		name := fmt.Sprintf("b%d_c%d_%dx%d_p%d_d%d", c.B, c.C, c.H, c.W, c.P, c.D)
		t.Run(name, func(t *testing.T) {
			F, N := c.C*c.P*c.P, (c.H/c.P)*(c.W/c.P)
			x64, x32 := randn(rng, c.B*c.C*c.H*c.W, 1)
			w64, w32 := randn(rng, c.D*F, 0.1)
			b64, b32 := randn(rng, c.D, 1)
			g64, g32 := randn(rng, c.B*N*c.D, 1)
			dw0, dw032 := randn(rng, c.D*F, 1)
			db0, db032 := randn(rng, c.D, 1)
			images, weight := upload(t, x32, c.B, c.C, c.H, c.W), upload(t, w32, c.D, c.C, c.P, c.P)
			out, patches := zeros(t, c.B, N, c.D), zeros(t, c.B, N, F)
			dW, dB := upload(t, dw032, c.D, c.C, c.P, c.P), upload(t, db032, c.D)
			dX, dP := zeros(t, c.B, c.C, c.H, c.W), zeros(t, c.B, N, F)
			rec := dev.Record()
			require.NoError(t, PatchEmbed(rec, out, patches, images, weight, upload(t, b32, c.D), c.P))
			require.NoError(t, PatchEmbedBackward(rec, dW, dB, dX, dP, upload(t, g32, c.B, N, c.D), patches, weight, c.P))
			run(t, rec)
			// Patchify is a copy: exact.
			requireClose(t, ref.Patchify(x64, c.B, c.C, c.H, c.W, c.P), read(t, patches), 0, 0, "patches")
			// Matmuls with K <= 147 (forward), B*N <= 30 (dW), D <= 11 (dX): see mmAtol.
			requireClose(t, ref.PatchEmbed(x64, w64, b64, c.B, c.C, c.H, c.W, c.P, c.D), read(t, out), mmAtol, mmRtol, "out")
			dx, dw, db := ref.PatchEmbedBackward(g64, x64, w64, c.B, c.C, c.H, c.W, c.P, c.D)
			for i := range dw {
				dw[i] += dw0[i]
			}
			for i := range db {
				db[i] += db0[i]
			}
			requireClose(t, dw, read(t, dW), mmAtol, mmRtol, "dweight")
			requireClose(t, db, read(t, dB), mmAtol, mmRtol, "dbias")
			requireClose(t, dx, read(t, dX), mmAtol, mmRtol, "dimages")
		})
	}
}

func TestPatchEmbedReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	const B, C, H, W, P, D = 2, 2, 6, 4, 2, 3
	F := C * P * P
	x, _ := randn(rng, B*C*H*W, 1)
	w, _ := randn(rng, D*F, 1)
	bias, _ := randn(rng, D, 1)
	g, _ := randn(rng, B*(H/P)*(W/P)*D, 1)
	dx, dw, db := ref.PatchEmbedBackward(g, x, w, B, C, H, W, P, D)
	checkGradient(t, func(x []float64) float64 { return dot(g, ref.PatchEmbed(x, w, bias, B, C, H, W, P, D)) }, x, dx, "dimages")
	checkGradient(t, func(w []float64) float64 { return dot(g, ref.PatchEmbed(x, w, bias, B, C, H, W, P, D)) }, w, dw, "dweight")
	checkGradient(t, func(b []float64) float64 { return dot(g, ref.PatchEmbed(x, w, b, B, C, H, W, P, D)) }, bias, db, "dbias")
}

func TestPatchBadShapes(t *testing.T) {
	rec := dev.Record()
	err := Patchify(rec, zeros(t, 1, 2, 588), zeros(t, 1, 3, 28, 20), 14)
	require.ErrorContains(t, err, "patchify: images [1x3x28x20]: height 28 and width 20 must be multiples of the patch size 14")
	require.Error(t, rec.Submit())
	err = Patchify(dev.Record(), zeros(t, 1, 2, 587), zeros(t, 1, 3, 28, 14), 14)
	require.ErrorContains(t, err, "patchify: images [1x3x28x14], patch size 14 -> patches [1x2x587]: want [1x2x588]")
	err = Unpatchify(dev.Record(), zeros(t, 3, 28, 14), zeros(t, 1, 2, 588), 14, false)
	require.ErrorContains(t, err, "unpatchify: images [3x28x14], patch size 14: want images [B, C, H, W]")
	err = PatchEmbed(dev.Record(), zeros(t, 1, 2, 5), zeros(t, 1, 2, 12), zeros(t, 1, 3, 4, 2), zeros(t, 6, 12), nil, 2)
	require.ErrorContains(t, err, "patch_embed: images [1x3x4x2], weight [6x12] -> out [1x2x5]: want weight [5x12] and out [1x2x5]")
	err = PatchEmbedBackward(dev.Record(), nil, nil, zeros(t, 1, 3, 4, 2), nil, zeros(t, 1, 2, 5), zeros(t, 1, 2, 12), zeros(t, 5, 12), 2)
	require.ErrorContains(t, err, "patch_embed_backward: dPatches <nil>: the input gradient needs a scratch tensor shaped like patches [1x2x12]")
}

func TestUnpatchifyAccumulate(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	const B, C, H, W, P = 2, 3, 10, 15, 5
	N, F := (H/P)*(W/P), C*P*P
	p64, p32 := randn(rng, B*N*F, 1)
	x64, x32 := randn(rng, B*C*H*W, 1)
	images := upload(t, x32, B, C, H, W)
	rec := dev.Record()
	require.NoError(t, Unpatchify(rec, images, upload(t, p32, B, N, F), P, true))
	run(t, rec)
	want := ref.Unpatchify(p64, B, C, H, W, P)
	for i := range want {
		want[i] += x64[i]
	}
	// One f32 addition per element.
	requireClose(t, want, read(t, images), 1e-6, 1e-6, "unpatchify accumulate")
}
