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

// attnCases cover both kernels' edges: one token, rows not a multiple of a
// workgroup (8 to 64 rows) or of the fused forward's four keys, two row
// blocks (T 65, 70, 261), heads of 4 to 64 (7 and 3 compose only), and the
// demo's shapes (T 10 and 50, Dh 16).
func attnCases() []attnCase {
	return []attnCase{
		{1, 1, 1, 8}, {2, 5, 3, 7}, {1, 37, 2, 64}, {2, 70, 1, 12}, {1, 261, 3, 64}, {2, 17, 2, 64},
		{3, 10, 4, 16}, {2, 50, 4, 16}, {1, 65, 2, 4},
	}
}

// attnModes are the ways c runs: composed, and fused where heads allow.
func attnModes(c attnCase) []bool {
	if c.Dh%4 == 0 {
		return []bool{false, true}
	}
	return []bool{false}
}

func modeName(fused bool) string {
	if fused {
		return "fused"
	}
	return "composed"
}

func attnTensors(t *testing.T, c attnCase, fused bool) AttnTensors {
	return NewAttnTensors(func(shape ...int) *gpu.Tensor { return zeros(t, shape...) }, c.B, c.T, c.H, c.Dh, fused)
}

// logSumExp is each query row's log sum_j exp(scale q.k_j) of x [B, T, 3D],
// [B, H, T] as the fused forward saves it.
func logSumExp(x []float64, c attnCase, scale float64) []float64 {
	D := c.H * c.Dh
	at := func(b, t, part, h, d int) float64 { return x[(b*c.T+t)*3*D+part*D+h*c.Dh+d] }
	var out []float64
	for b := range c.B {
		for h := range c.H {
			for i := range c.T {
				s := make([]float64, c.T)
				m := math.Inf(-1)
				for j := range s {
					for d := range c.Dh {
						s[j] += at(b, i, 0, h, d) * at(b, j, 1, h, d)
					}
					s[j] *= scale
					m = math.Max(m, s[j])
				}
				sum := 0.0
				for _, v := range s {
					sum += math.Exp(v - m)
				}
				out = append(out, m+math.Log(sum))
			}
		}
	}
	return out
}

// toHeads writes x [B, T, parts*D] as parts tensors [B, H, T, Dh] at
// heads[0], heads[1], ... (the layout of HeadsLayout's split).
func toHeads(t *testing.T, c attnCase, x []float32, heads ...*gpu.Tensor) {
	D := c.H * c.Dh
	for part, h := range heads {
		v := make([]float32, h.Len())
		for i := range v {
			bh, td := i/(c.T*c.Dh), i%(c.T*c.Dh)
			v[i] = x[(bh/c.H*c.T+td/c.Dh)*len(heads)*D+part*D+bh%c.H*c.Dh+td%c.Dh]
		}
		require.NoError(t, dev.Write(h, v))
	}
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
		for _, fused := range attnModes(c) {
			t.Run(c.String()+"/"+modeName(fused), func(t *testing.T) {
				D := c.H * c.Dh
				scale := 1 / math.Sqrt(float64(c.Dh))
				x64, x32 := randn(rng, c.B*c.T*3*D, 1)
				out, a := zeros(t, c.B, c.T, D), attnTensors(t, c, fused)
				toHeads(t, c, x32, a.Q, a.K, a.V)
				rec := dev.Record()
				require.NoError(t, Attention(rec, out, float32(scale), a))
				run(t, rec)
				wantOut, _ := ref.Attention(x64, c.B, c.T, c.H, c.Dh, scale)
				requireClose(t, wantOut, read(t, out), attAtol, attRtol, "out")
				if fused {
					requireClose(t, logSumExp(x64, c, scale), read(t, a.LSE), attAtol, attRtol, "lse")
				} else {
					requireClose(t, ref.AttentionProbs(x64, c.B, c.T, c.H, c.Dh, 0, scale), cls0(read(t, a.Probs), c), attAtol, attRtol, "attn0")
				}
			})
		}
	}
}

func TestAttentionBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, c := range attnCases() {
		for _, fused := range attnModes(c) {
			t.Run(c.String()+"/"+modeName(fused), func(t *testing.T) {
				D := c.H * c.Dh
				scale := 1 / math.Sqrt(float64(c.Dh))
				x64, x32 := randn(rng, c.B*c.T*3*D, 1)
				g64, g32 := randn(rng, c.B*c.T*D, 1)
				out, dqkv := zeros(t, c.B, c.T, D), zeros(t, c.B, c.T, 3*D)
				a := attnTensors(t, c, fused)
				g := NewAttnGrads(func(shape ...int) *gpu.Tensor { return zeros(t, shape...) }, c.B, c.T, c.H, c.Dh, fused)
				toHeads(t, c, x32, a.Q, a.K, a.V)
				toHeads(t, c, g32, g.DOut)
				rec := dev.Record()
				require.NoError(t, Attention(rec, out, float32(scale), a))
				require.NoError(t, AttentionBackward(rec, dqkv, out, float32(scale), a, g))
				run(t, rec)
				want := ref.AttentionBackward(x64, g64, c.B, c.T, c.H, c.Dh, scale)
				requireClose(t, want, read(t, dqkv), attAtol, attRtol, "dqkv")
			})
		}
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
	out, dqkv := zeros(t, 2, 5, 16), zeros(t, 2, 5, 48)
	alloc := func(shape ...int) *gpu.Tensor { return zeros(t, shape...) }
	a, fa := attnTensors(t, attnCase{2, 5, 2, 8}, false), attnTensors(t, attnCase{2, 5, 2, 8}, true)
	g, fg := NewAttnGrads(alloc, 2, 5, 2, 8, false), NewAttnGrads(alloc, 2, 5, 2, 8, true)
	noQ, wrongK, wrongP, wrongDP, wrongLSE, noDelta := a, a, a, g, fa, fg
	noQ.Q = nil
	wrongK.K = zeros(t, 2, 2, 5, 7)
	wrongP.Probs = zeros(t, 2, 2, 5, 8)
	wrongDP.DProbs = zeros(t, 2, 2, 5, 8)
	wrongLSE.LSE = zeros(t, 2, 2, 4)
	noDelta.Delta = nil
	odd := attnCase{2, 5, 2, 6}
	fodd, oddOut := attnTensors(t, odd, true), zeros(t, 2, 5, 12)
	cases := []struct {
		name string
		call func(rec *gpu.Recorder) error
		want string
	}{
		{"nil", func(rec *gpu.Recorder) error { return Attention(rec, out, 1, noQ) },
			"attention: tensor Q is nil"},
		{"K", func(rec *gpu.Recorder) error { return Attention(rec, out, 1, wrongK) },
			"attention: Q [2x2x5x8]: K [2x2x5x7], want [2 2 5 8]"},
		{"Probs", func(rec *gpu.Recorder) error { return Attention(rec, out, 1, wrongP) },
			"attention: Q [2x2x5x8]: Probs [2x2x5x8], want [2 2 5 5]"},
		{"out", func(rec *gpu.Recorder) error { return Attention(rec, dqkv, 1, a) },
			"attention: Q [2x2x5x8]: out [2x5x48], want [2 5 16]"},
		{"scale", func(rec *gpu.Recorder) error { return Attention(rec, out, 0, a) },
			"attention: scale 0: must be positive"},
		{"dqkv", func(rec *gpu.Recorder) error { return AttentionBackward(rec, out, out, 1, a, g) },
			"attention_backward: Q [2x2x5x8]: dqkv [2x5x16], want [2 5 48]"},
		{"DProbs", func(rec *gpu.Recorder) error { return AttentionBackward(rec, dqkv, out, 1, a, wrongDP) },
			"attention_backward: Q [2x2x5x8]: DProbs [2x2x5x8], want [2 2 5 5]"},
		{"LSE", func(rec *gpu.Recorder) error { return Attention(rec, out, 1, wrongLSE) },
			"attention: Q [2x2x5x8]: LSE [2x2x4], want [2 2 5]"},
		{"Delta", func(rec *gpu.Recorder) error { return AttentionBackward(rec, dqkv, out, 1, fa, noDelta) },
			"attention_backward: tensor Delta is nil"},
		{"fused out", func(rec *gpu.Recorder) error { return AttentionBackward(rec, dqkv, dqkv, 1, fa, fg) },
			"attention_backward: Q [2x2x5x8]: out [2x5x48], want [2 5 16]"},
		{"fused Dh", func(rec *gpu.Recorder) error { return Attention(rec, oddOut, 1, fodd) },
			"attention: Q [2x2x5x6]: fused attention needs heads of a multiple of 4 (AttentionFuses)"},
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
