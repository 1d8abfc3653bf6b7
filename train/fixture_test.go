//go:build !js

package train

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/nn"
)

// fixtureConfig is the run of scripts/reference/dinov2_train_ref.py.
func fixtureConfig() Config {
	m := nn.ViTConfig{
		PatchSize: 4, InChans: 3, EmbedDim: 64, Depth: 2, Heads: 2, MLPHidden: 96, FFN: nn.FFNMLP,
		Registers: 1, PosGrid: 4, LayerScale: true, QKVBias: true, LNEps: 1e-6, InterpAntialias: true,
	}
	// Six one-step epochs: the recipe's schedules compressed into six steps,
	// the LR peaking at 2e-3 after a two-step warmup.
	c := Recipe(m, 4, 6)
	c.Model = m
	c.BaseLR = 2e-3 / math.Sqrt(4.0/1024)
	c.Augment.GlobalSize, c.Augment.LocalSize, c.Augment.Locals, c.Augment.Patch = 16, 8, 2, 4
	c.Prototypes, c.HeadHidden, c.Bottleneck = 64, 32, 16
	c.ItersPerEpoch = 1
	c.FreezeLastLayerIters = 1
	c.DropPath = 0
	return c
}

// relErr is max |got - want| over max |want| of a tensor (0 when both are 0).
func relErr(want, got []float32) float64 {
	scale, diff := 0.0, 0.0
	for i := range want {
		scale = math.Max(scale, math.Abs(float64(want[i])))
		diff = math.Max(diff, math.Abs(float64(want[i])-float64(got[i])))
	}
	if scale == 0 {
		return diff
	}
	return diff / scale
}

// TestWholeStepMatchesPyTorch replays train/testdata/step.safetensors: the
// same initial weights, crops and masks through six steps, under the
// recipe's schedules (LR, weight decay, teacher momentum and temperature all
// moving, the prototype layer frozen in the first), must give the
// reference's loss terms, first-step gradients (after clipping) and final
// student, teacher and centers.
func TestWholeStepMatchesPyTorch(t *testing.T) {
	dev := testDevice(t)
	f, err := os.Open(filepath.Join("testdata", "step.safetensors"))
	require.NoError(t, err)
	st, _ := f.Stat()
	fx, err := ckpt.ReadSafetensors(f, st.Size())
	f.Close()
	require.NoError(t, err)
	get := func(name string) []float32 {
		v, ok := fx[name]
		require.True(t, ok, "fixture lacks %s", name)
		return v.Data
	}

	tr, err := NewTrainer(dev, fixtureConfig())
	require.NoError(t, err)
	defer tr.Release()
	for _, mod := range tr.Student.Modules() {
		for _, name := range mod.Params.Layout.Names() {
			require.NoError(t, dev.Write(mod.Params.Get(name), get("init."+mod.Name+"."+name)))
		}
	}
	require.NoError(t, tr.copyStudentToTeacher())

	// Losses: float32 sums over at most K = 64 terms per row, through two
	// blocks; rounding stays near 1e-6 relative.
	const lossTol = 1e-4
	for s := 0; s < 6; s++ {
		m := get(fmt.Sprintf("step%d.masks", s))
		N := len(m) / 8
		masks := make([][]bool, 8)
		for i := range masks {
			masks[i] = make([]bool, N)
			for j := range masks[i] {
				masks[i][j] = m[i*N+j] != 0
			}
		}
		lo, err := tr.StepCrops(get(fmt.Sprintf("step%d.global", s)), get(fmt.Sprintf("step%d.local", s)), masks)
		require.NoError(t, err)
		want := get(fmt.Sprintf("step%d.losses", s))
		for i, got := range []float64{lo.DINO, lo.IBOT, lo.KoLeo} {
			require.InDelta(t, float64(want[i]), got, lossTol*math.Abs(float64(want[i])), "step %d loss term %d", s, i)
		}
		t.Logf("step %d: dino %.6f ibot %.6f koleo %.6f (reference %.6f %.6f %.6f)", s, lo.DINO, lo.IBOT, lo.KoLeo, want[0], want[1], want[2])
		if s == 0 {
			worst := 0.0
			for i, mod := range tr.Student.Modules() {
				for _, name := range mod.Params.Layout.Names() {
					g, err := dev.Read(tr.Grads[i].Get(name))
					require.NoError(t, err)
					e := relErr(get("step0.grad."+mod.Name+"."+name), g)
					worst = math.Max(worst, e)
					// Gradients through two blocks and the head: 1e-3 of
					// each tensor's largest entry.
					require.LessOrEqual(t, e, 1e-3, "step 0 gradient of %s.%s", mod.Name, name)
				}
			}
			t.Logf("step 0 gradients: worst error relative to the tensor's largest entry %.3g", worst)
		}
	}
	worst := 0.0
	for _, who := range []struct {
		name string
		m    *Model
	}{{"student", tr.Student}, {"teacher", tr.Teacher}} {
		for _, mod := range who.m.Modules() {
			for _, name := range mod.Params.Layout.Names() {
				got, err := dev.Read(mod.Params.Get(name))
				require.NoError(t, err)
				want := get("final." + who.name + "." + mod.Name + "." + name)
				init := get("init." + mod.Name + "." + name)
				// The key bias has no gradient (it shifts every score of a
				// softmax row by the same amount): both sides hold rounding
				// noise there, which Adam's normalisation turns into
				// LR-sized steps of random sign. Leave it out.
				if strings.HasSuffix(name, "attn.qkv.bias") {
					D := len(want) / 3
					want = append(append([]float32(nil), want[:D]...), want[2*D:]...)
					got = append(append([]float32(nil), got[:D]...), got[2*D:]...)
					init = append(append([]float32(nil), init[:D]...), init[2*D:]...)
				}
				// Compare the change over six steps, not the weights: AdamW's
				// steps are ~LR in size whatever the gradient. The teacher's
				// EMA changes are far smaller than its weights, and each of
				// the six updates rounds to the weight's float32 spacing, in
				// an order that differs between devices (the H100 was 2 ulps
				// off): allow 8 ulps of the largest weight.
				d, step, size := 0.0, 0.0, 0.0
				for i := range want {
					d = math.Max(d, math.Abs(float64(got[i]-want[i])))
					step = math.Max(step, math.Abs(float64(want[i]-init[i])))
					size = math.Max(size, math.Abs(float64(want[i])))
				}
				tol := math.Max(1e-2*step, 8*0x1p-23*size)
				worst = math.Max(worst, d/tol)
				assert.LessOrEqual(t, d, tol, "final %s %s.%s: max error %.3g, largest change %.3g, largest weight %.3g", who.name, mod.Name, name, d, step, size)
			}
		}
	}
	t.Logf("after 6 steps: worst parameter error as a fraction of its tolerance %.3g", worst)
	for _, c := range []string{"center", "ibot_center"} {
		got, err := dev.Read(tr.centers()[c])
		require.NoError(t, err)
		require.LessOrEqual(t, relErr(get("final."+c), got), 1e-4, c)
	}
}
