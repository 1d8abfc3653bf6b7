//go:build !js

package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn/ref"
)

// teacherProbs returns R rows of K probabilities (a sharp softmax) scaled by
// 0.9, so rows do not sum to one, as after Sinkhorn-Knopp.
func teacherProbs(rng *rand.Rand, R, K int) ([]float64, []float32) {
	l, _ := randn(rng, R*K, 1)
	p := ref.TeacherSoftmax(l, nil, R, K, 0.05)
	p32 := make([]float32, len(p))
	for i := range p {
		p32[i] = float32(0.9 * p[i])
		p[i] = float64(p32[i])
	}
	return p, p32
}

func TestSoftmaxCrossEntropy(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	const tau = 0.1
	// More than 65535 rows take a 2-D grid of row workgroups, but such a case
	// runs for seconds on lavapipe, so it is left out.
	for _, s := range [][2]int{{1, 1}, {1, 65536}, {3, 1000}, {300, 7}, {5, 257}} {
		R, K := s[0], s[1]
		t.Run(fmt.Sprintf("%dx%d", R, K), func(t *testing.T) {
			s64, s32 := randn(rng, R*K, 1)
			t64, t32 := teacherProbs(rng, R, K)
			w64, w32 := randn(rng, R, 1)
			d064, d032 := randn(rng, R*K, 1)
			student, teacher := upload(t, s32, R, K), upload(t, t32, R, K)
			loss, lse, tsum := zeros(t, R), zeros(t, R), zeros(t, R)
			ds := upload(t, d032, R, K)
			rec := dev.Record()
			require.NoError(t, SoftmaxCrossEntropy(rec, loss, lse, tsum, student, teacher, tau))
			require.NoError(t, SoftmaxCrossEntropyBackward(rec, ds, upload(t, w32, R), student, teacher, lse, tsum, tau, true))
			run(t, rec)
			// Logits s/tau reach |40|, so lse and loss are O(50): f32 rounding
			// of z and of K-term sums gives relative errors ~1e-6.
			requireClose(t, ref.SoftmaxCrossEntropy(s64, t64, R, K, tau), read(t, loss), 1e-5, 1e-5, "loss")
			want := ref.SoftmaxCrossEntropyBackward(s64, t64, w64, R, K, tau)
			for i := range want {
				want[i] += d064[i]
			}
			// An lse error of ~5e-6 becomes a relative error of 5e-6 in each
			// softmax term, times |w|/tau ~ 10. A GPU's exp may also be off
			// by 3 + 2|x| ulps (Vulkan's bound; NVIDIA's driver was seen ~1e-5
			// relative at |x| ~ 20), and softmax * tsum - t cancels to ~1% of
			// either term, so the absolute floor is 1e-5 / tau.
			requireClose(t, want, read(t, ds), 1e-5/tau, 1e-4, "dstudent")

			// In place, the gradient (without the accumulated d0) replaces
			// the logits, as the out-of-place kernel computes it.
			fresh := zeros(t, R, K)
			rec = dev.Record()
			require.NoError(t, SoftmaxCrossEntropyBackward(rec, fresh, upload(t, w32, R), student, teacher, lse, tsum, tau, false))
			require.NoError(t, SoftmaxCrossEntropyBackward(rec, student, upload(t, w32, R), student, teacher, lse, tsum, tau, false))
			run(t, rec)
			require.Equal(t, read(t, fresh), read(t, student), "in place")
			err := SoftmaxCrossEntropyBackward(dev.Record(), student, upload(t, w32, R), student, teacher, lse, tsum, tau, true)
			require.ErrorContains(t, err, "in place it cannot accumulate")
		})
	}
}

func TestSoftmaxCrossEntropyReferenceGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	const R, K, tau = 3, 11, 0.1
	s, _ := randn(rng, R*K, 1)
	tp, _ := teacherProbs(rng, R, K)
	w, _ := randn(rng, R, 1)
	checkGradient(t, func(s []float64) float64 { return dot(w, ref.SoftmaxCrossEntropy(s, tp, R, K, tau)) },
		s, ref.SoftmaxCrossEntropyBackward(s, tp, w, R, K, tau), "softmax_xent")
}

func TestTeacherSoftmaxAndCenter(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	const temp, m = 0.04, 0.9
	for _, s := range [][2]int{{1, 1}, {2, 65536}, {130, 33}} {
		R, K := s[0], s[1]
		t.Run(fmt.Sprintf("%dx%d", R, K), func(t *testing.T) {
			l64, l32 := randn(rng, R*K, 1)
			c64, c32 := randn(rng, K, 0.3)
			logits, center := upload(t, l32, R, K), upload(t, c32, K)
			probs, plain := zeros(t, R, K), zeros(t, R, K)
			inPlace := upload(t, l32, R, K) // softmax over its own logits, after the center update (the trainer's order)
			oldCenter := upload(t, c32, K)
			rec := dev.Record()
			require.NoError(t, TeacherSoftmax(rec, probs, logits, center, temp))
			require.NoError(t, TeacherSoftmax(rec, plain, logits, nil, temp))
			require.NoError(t, CenterUpdate(rec, center, logits, m))
			require.NoError(t, TeacherSoftmax(rec, inPlace, inPlace, oldCenter, temp))
			run(t, rec)
			// Logits / 0.04 reach |100|: an f32 rounding of z of 100 * 6e-8
			// is a relative error of ~1e-5 in each probability.
			requireClose(t, ref.TeacherSoftmax(l64, c64, R, K, temp), read(t, probs), 1e-7, 2e-5, "centred")
			requireClose(t, ref.TeacherSoftmax(l64, nil, R, K, temp), read(t, plain), 1e-7, 2e-5, "plain")
			requireClose(t, ref.TeacherSoftmax(l64, c64, R, K, temp), read(t, inPlace), 1e-7, 2e-5, "in place")
			// f32 sum of R <= 130 unit normals.
			requireClose(t, ref.CenterUpdate(c64, l64, R, K, m), read(t, center), 1e-6, 1e-5, "center")
		})
	}
}

func TestRowEntropy(t *testing.T) {
	// Teacher softmaxes (sharp and flat), a uniform row (ln K), a one-hot
	// row with exact zeros (0), against float64.
	rng := rand.New(rand.NewPCG(37, 38))
	const K = 1037
	l64, _ := randn(rng, 3*K, 1)
	q64 := append(ref.TeacherSoftmax(l64[:2*K], nil, 2, K, 0.04), ref.TeacherSoftmax(l64[2*K:], nil, 1, K, 10)...)
	uniform := make([]float64, K)
	oneHot := make([]float64, K)
	for k := range uniform {
		uniform[k] = 1.0 / K
	}
	oneHot[500] = 1
	q64 = append(append(q64, uniform...), oneHot...)
	q32 := make([]float32, len(q64))
	for i, v := range q64 {
		q32[i] = float32(v)
	}
	const R = 5
	want := make([]float64, R)
	for r := range want {
		for _, v := range q64[r*K : (r+1)*K] {
			if v > 0 {
				want[r] -= v * math.Log(v)
			}
		}
	}
	require.InDelta(t, math.Log(K), want[3], 1e-12)
	h := zeros(t, R)
	rec := dev.Record()
	require.NoError(t, RowEntropy(rec, h, upload(t, q32, R, K)))
	run(t, rec)
	// f32 terms q log q summed over 1037 entries: about 1e-6 relative.
	requireClose(t, want, read(t, h), 1e-6, 1e-5, "entropy")
	require.ErrorContains(t, RowEntropy(dev.Record(), zeros(t, 4), zeros(t, R, K)), "row_entropy: q [5x1037] -> h [4]: want 5 rows")
}

func TestLossBadShapes(t *testing.T) {
	rec := dev.Record()
	err := SoftmaxCrossEntropy(rec, zeros(t, 3), zeros(t, 3), zeros(t, 3), zeros(t, 3, 5), zeros(t, 3, 6), 0.1)
	require.ErrorContains(t, err, "softmax_xent: student [3x5], teacher [3x6]: shapes differ")
	require.Error(t, rec.Submit())
	err = SoftmaxCrossEntropy(dev.Record(), zeros(t, 2), zeros(t, 3), zeros(t, 3), zeros(t, 3, 5), zeros(t, 3, 5), 0.1)
	require.ErrorContains(t, err, "softmax_xent: student [3x5] -> loss [2], lse [3], tsum [3]: want 3 rows each")
	err = SoftmaxCrossEntropy(dev.Record(), zeros(t, 3), zeros(t, 3), zeros(t, 3), zeros(t, 3, 5), zeros(t, 3, 5), 0)
	require.ErrorContains(t, err, "softmax_xent: temperature 0 must be positive")
	err = SoftmaxCrossEntropyBackward(dev.Record(), zeros(t, 3, 5), zeros(t, 4), zeros(t, 3, 5), zeros(t, 3, 5), zeros(t, 3), zeros(t, 3), 0.1, false)
	require.ErrorContains(t, err, "softmax_xent_backward: student [3x5] with dLoss [4], lse [3], tsum [3]: want 3 rows each")
	err = TeacherSoftmax(dev.Record(), zeros(t, 2, 7), zeros(t, 2, 7), zeros(t, 8), 0.04)
	require.ErrorContains(t, err, "teacher_softmax: logits [2x7], center [8]: want 7 elements")
	err = CenterUpdate(dev.Record(), zeros(t, 6), zeros(t, 2, 7), 0.9)
	require.ErrorContains(t, err, "center_update: logits [2x7], center [6]: want 7 elements")
}
