//go:build !js

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
		{1, 1, 1, 8}, {2, 5, 3, 7}, {1, 37, 2, 64}, {2, 70, 1, 12}, {1, 261, 3, 64}, {2, 17, 2, 64},
	}
}

func attnTensors(t *testing.T, c attnCase) AttnTensors {
	return NewAttnTensors(func(shape ...int) *gpu.Tensor { return zeros(t, shape...) }, c.B, c.T, c.H, c.Dh)
}

// cls0 extracts row 0 (the CLS query) of every (batch, head) of probs [B, H, T, T].
func cls0(probs []float64, c attnCase) []float64 {
	var out []float64
	for bh := 0; bh < c.B*c.H; bh++ {
		out = append(out, probs[bh*c.T*c.T:bh*c.T*c.T+c.T]...)
	}
	return out
}

func TestAttentionForwardAndProbs(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range attnCases() {
		t.Run(c.String(), func(t *testing.T) {
			D := c.H * c.Dh
			scale := 1 / math.Sqrt(float64(c.Dh))
			x64, x32 := randn(rng, c.B*c.T*3*D, 1)
			qkv := upload(t, x32, c.B, c.T, 3*D)
			out, a := zeros(t, c.B, c.T, D), attnTensors(t, c)
			rec := dev.Record()
			require.NoError(t, Attention(rec, out, qkv, c.H, float32(scale), a))
			run(t, rec)
			wantOut, _ := ref.Attention(x64, c.B, c.T, c.H, c.Dh, scale)
			requireClose(t, wantOut, read(t, out), attAtol, attRtol, "out")
			requireClose(t, ref.AttentionProbs(x64, c.B, c.T, c.H, c.Dh, 0, scale), cls0(read(t, a.Probs), c), attAtol, attRtol, "attn0")
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
			out, dqkv := zeros(t, c.B, c.T, D), zeros(t, c.B, c.T, 3*D)
			a := attnTensors(t, c)
			g := NewAttnGrads(func(shape ...int) *gpu.Tensor { return zeros(t, shape...) }, c.B, c.T, c.H, c.Dh)
			rec := dev.Record()
			require.NoError(t, Attention(rec, out, qkv, c.H, float32(scale), a))
			require.NoError(t, AttentionBackward(rec, dqkv, dout, qkv, c.H, float32(scale), a, g))
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
	qkv, out := zeros(t, 2, 5, 3*16), zeros(t, 2, 5, 16)
	a := attnTensors(t, attnCase{2, 5, 2, 8})
	wrongQ := a
	wrongQ.Q = zeros(t, 2, 2, 5, 7)
	wrongP := a
	wrongP.Probs = zeros(t, 2, 2, 5, 8)
	wrongS := a
	wrongS.Scores = zeros(t, 2, 2, 5, 8)
	cases := []struct {
		name string
		call func(rec *gpu.Recorder) error
		want string
	}{
		{"nil", func(rec *gpu.Recorder) error { return Attention(rec, out, nil, 2, 1, a) },
			"attention: tensor qkv is nil"},
		{"qkv not 3D", func(rec *gpu.Recorder) error { return Attention(rec, out, zeros(t, 10, 48), 2, 1, a) },
			"attention: qkv [10x48]: want [B, T, 3*D]"},
		{"heads", func(rec *gpu.Recorder) error { return Attention(rec, out, qkv, 3, 1, a) },
			"attention: qkv [2x5x48]: D = 16 is not divisible by 3 heads"},
		{"out", func(rec *gpu.Recorder) error { return Attention(rec, zeros(t, 2, 5, 48), qkv, 2, 1, a) },
			"attention: qkv [2x5x48] -> out [2x5x48]: want [2 5 16]"},
		{"Q", func(rec *gpu.Recorder) error { return Attention(rec, out, qkv, 2, 1, wrongQ) },
			"attention: qkv [2x5x48], 2 heads: Q [2x2x5x7], want [2 2 5 8]"},
		{"Probs", func(rec *gpu.Recorder) error { return Attention(rec, out, qkv, 2, 1, wrongP) },
			"attention: qkv [2x5x48], 2 heads: Probs [2x2x5x8], want [2 2 5 5]"},
		{"dqkv", func(rec *gpu.Recorder) error {
			return AttentionBackward(rec, zeros(t, 2, 5, 16), out, qkv, 2, 1, a, a)
		}, "attention_backward: qkv [2x5x48] -> dqkv [2x5x16]: shapes differ"},
		{"dout", func(rec *gpu.Recorder) error {
			return AttentionBackward(rec, zeros(t, 2, 5, 48), zeros(t, 1, 5, 16), qkv, 2, 1, a, a)
		}, "attention_backward: qkv [2x5x48] -> dout [1x5x16]: want [2 5 16]"},
		{"dScores", func(rec *gpu.Recorder) error {
			return AttentionBackward(rec, zeros(t, 2, 5, 48), out, qkv, 2, 1, a, wrongS)
		}, "attention_backward: qkv [2x5x48], 2 heads: dScores [2x2x5x8], want [2 2 5 5]"},
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
