//go:build wip && !js

package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn/ref"
)

// Inputs have std 1 for q and k scaled by Dh^-0.5, so scores are O(1) and the
// probabilities are spread out: f32 sums of T <= 261 terms of O(1) products
// with rounding ~6e-8 each, plus exp/log (~1e-7 relative on lavapipe), keep
// errors near 1e-5; 2e-4 still catches any wrong index or missing term.
const attAtol, attRtol = 2e-4, 2e-4

type attnCase struct{ B, T, H, Dh int }

func (c attnCase) String() string { return fmt.Sprintf("B%d_T%d_H%d_Dh%d", c.B, c.T, c.H, c.Dh) }

func attnCases() []attnCase {
	return []attnCase{
		{1, 1, 1, 8}, {2, 5, 3, 8}, {1, 37, 2, 64}, {2, 70, 1, 12}, {1, 261, 3, 64}, {2, 17, 2, 64},
	}
}

func TestAttentionForwardAndProbs(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range attnCases() {
		t.Run(c.String(), func(t *testing.T) {
			D := c.H * c.Dh
			scale := 1 / math.Sqrt(float64(c.Dh))
			x64, x32 := randn(rng, c.B*c.T*3*D, 1)
			qkv := upload(t, x32, c.B, c.T, 3*D)
			out, lse, attn0 := zeros(t, c.B, c.T, D), zeros(t, c.B, c.H, c.T), zeros(t, c.B, c.H, c.T)
			rec := dev.Record()
			require.NoError(t, Attention(rec, out, lse, attn0, qkv, c.H, float32(scale)))
			run(t, rec)
			wantOut, wantLse := ref.Attention(x64, c.B, c.T, c.H, c.Dh, scale)
			requireClose(t, wantOut, read(t, out), attAtol, attRtol, "out")
			requireClose(t, wantLse, read(t, lse), attAtol, attRtol, "lse")
			requireClose(t, ref.AttentionProbs(x64, c.B, c.T, c.H, c.Dh, 0, scale), read(t, attn0), attAtol, attRtol, "attn0")
		})
	}
}

func TestAttentionBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, c := range attnCases() {
		t.Run(c.String(), func(t *testing.T) {
			D := c.H * c.Dh
			scale := 1 / math.Sqrt(float64(c.Dh))
			x64, x32 := randn(rng, c.B*c.T*3*D, 1)
			g64, g32 := randn(rng, c.B*c.T*D, 1)
			qkv, dout := upload(t, x32, c.B, c.T, 3*D), upload(t, g32, c.B, c.T, D)
			out, lse := zeros(t, c.B, c.T, D), zeros(t, c.B, c.H, c.T)
			delta, dqkv := zeros(t, c.B, c.H, c.T), zeros(t, c.B, c.T, 3*D)
			rec := dev.Record()
			require.NoError(t, Attention(rec, out, lse, nil, qkv, c.H, float32(scale)))
			require.NoError(t, AttentionBackward(rec, dqkv, delta, qkv, out, lse, dout, c.H, float32(scale)))
			run(t, rec)
			want := ref.AttentionBackward(x64, g64, c.B, c.T, c.H, c.Dh, scale)
			requireClose(t, want, read(t, dqkv), attAtol, attRtol, "dqkv")
		})
	}
}

func TestAttentionReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	const B, T, H, Dh = 2, 5, 2, 3
	scale := 1 / math.Sqrt(Dh)
	x, _ := randn(rng, B*T*3*H*Dh, 1)
	w, _ := randn(rng, B*T*H*Dh, 1)
	f := func(x []float64) float64 {
		out, _ := ref.Attention(x, B, T, H, Dh, scale)
		return dot(w, out)
	}
	checkGradient(t, f, x, ref.AttentionBackward(x, w, B, T, H, Dh, scale), "attention dqkv")
}

func TestAttentionBadShapes(t *testing.T) {
	qkv := zeros(t, 2, 5, 3*16)
	out, lse := zeros(t, 2, 5, 16), zeros(t, 2, 2, 5)
	cases := []struct {
		name string
		call func(rec *gpu.Recorder) error
		want string
	}{
		{"nil", func(rec *gpu.Recorder) error { return Attention(rec, out, nil, nil, qkv, 2, 1) },
			"attention: tensor lse is nil"},
		{"qkv not 3D", func(rec *gpu.Recorder) error { return Attention(rec, out, lse, nil, zeros(t, 10, 48), 2, 1) },
			"attention: qkv [10x48]: want [B, T, 3*D]"},
		{"heads", func(rec *gpu.Recorder) error { return Attention(rec, out, lse, nil, qkv, 3, 1) },
			"attention: qkv [2x5x48]: D = 16 is not divisible by 3 heads"},
		{"head size", func(rec *gpu.Recorder) error { return Attention(rec, out, zeros(t, 2, 8, 5), nil, qkv, 8, 1) },
			"attention: qkv [2x5x48] with 8 heads: head size 2 unsupported (want a multiple of 4 up to 128)"},
		{"out", func(rec *gpu.Recorder) error { return Attention(rec, zeros(t, 2, 5, 48), lse, nil, qkv, 2, 1) },
			"attention: qkv [2x5x48] -> out [2x5x48]: want [2 5 16]"},
		{"lse", func(rec *gpu.Recorder) error { return Attention(rec, out, zeros(t, 2, 5, 2), nil, qkv, 2, 1) },
			"attention: qkv [2x5x48], 2 heads -> lse [2x5x2]: want [2 2 5]"},
		{"attn0", func(rec *gpu.Recorder) error { return Attention(rec, out, lse, zeros(t, 2, 2, 4), qkv, 2, 1) },
			"attention: qkv [2x5x48], 2 heads -> attn0 [2x2x4]: want [2 2 5]"},
		{"dqkv", func(rec *gpu.Recorder) error {
			return AttentionBackward(rec, zeros(t, 2, 5, 16), lse, qkv, out, lse, out, 2, 1)
		}, "attention_backward: qkv [2x5x48] -> dqkv [2x5x16]: shapes differ"},
		{"dout", func(rec *gpu.Recorder) error {
			return AttentionBackward(rec, zeros(t, 2, 5, 48), zeros(t, 2, 2, 5), qkv, out, lse, zeros(t, 1, 5, 16), 2, 1)
		}, "attention_backward: qkv [2x5x48], 2 heads: dout [1x5x16], want [2 5 16]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := dev.Record()
			err := c.call(rec)
			require.EqualError(t, err, c.want)
			require.EqualError(t, rec.Err(), c.want)
		})
	}
}
