//go:build !js

package train

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/nn/ref"
)

// tinyConfig is a whole DINOv2 run scaled down to run in seconds on a CPU:
// every loss, both heads' paths, masks, local crops and schedules are on.
func tinyConfig() Config {
	m := nn.ViTConfig{
		PatchSize: 4, InChans: 3, EmbedDim: 64, Depth: 2, Heads: 2, MLPHidden: 96, FFN: nn.FFNMLP,
		Registers: 1, PosGrid: 4, LayerScale: true, QKVBias: true, LNEps: 1e-6, InterpOffset: 0.1,
	}
	c := Recipe(m, 4, 2)
	c.Model = m
	c.Augment.GlobalSize, c.Augment.LocalSize, c.Augment.Locals, c.Augment.Patch = 16, 8, 2, 4
	c.Prototypes, c.HeadHidden, c.Bottleneck = 64, 32, 16
	c.ItersPerEpoch = 3
	c.FreezeLastLayerIters = 1
	return c
}

func testDevice(t *testing.T) *gpu.Device {
	t.Helper()
	dev, err := gpu.Open()
	require.NoError(t, err)
	t.Cleanup(dev.Close)
	return dev
}

// batchFor returns step s's images: random gray and colour pictures of a
// few sizes, the same for every call with the same s.
func batchFor(t *testing.T, dev *gpu.Device, s, n int) *nn.ImageBatch {
	rng := rand.New(rand.NewPCG(uint64(s), 99))
	imgs := make([]nn.Image, n)
	for i := range imgs {
		h, w, c := 16+rng.IntN(9), 16+rng.IntN(9), 1+2*rng.IntN(2)
		pix := make([]byte, h*w*c)
		for j := range pix {
			pix[j] = byte(rng.IntN(256))
		}
		imgs[i] = nn.Image{H: h, W: w, C: c, Pix: pix}
	}
	b, err := nn.UploadImages(dev, imgs)
	require.NoError(t, err)
	t.Cleanup(b.Release)
	return b
}

func run(t *testing.T, tr *Trainer, dev *gpu.Device, steps int) []Losses {
	var out []Losses
	for i := 0; i < steps; i++ {
		lo, err := tr.Step(batchFor(t, dev, tr.StepsDone, tr.Cfg.Batch))
		require.NoError(t, err)
		out = append(out, lo)
	}
	return out
}

func TestStepsAreFiniteAndMoveTheTeacher(t *testing.T) {
	dev := testDevice(t)
	for _, centering := range []string{"centering", "sinkhorn"} {
		t.Run(centering, func(t *testing.T) {
			c := tinyConfig()
			c.Centering = centering
			c.SeparateIBOTHead = centering == "sinkhorn"
			if centering == "sinkhorn" {
				// InfoNCE, with blocks that reach the CLS token from the
				// start: at the recipe's LayerScale 1e-5 every image's CLS
				// is the same and InfoNCE is ln(2B - 1) at any temperature.
				c.NCEWeight, c.NCETemp, c.LayerScaleInit = 0.5, 0.1, 1
			}
			tr, err := NewTrainer(dev, c)
			require.NoError(t, err)
			defer tr.Release()
			before, err := dev.Read(tr.Teacher.Backbone.Params.Get("blocks.0.attn.qkv.weight"))
			require.NoError(t, err)
			losses := run(t, tr, dev, 3)
			for _, lo := range losses {
				for _, v := range []float64{lo.DINO, lo.IBOT, lo.KoLeo} {
					require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "%+v", lo)
				}
				require.Greater(t, lo.MaskedPatches, 0)
				require.Greater(t, lo.GradNorm["backbone"], 0.0)
			}
			checkLossAssembly(t, tr, losses[2])
			after, err := dev.Read(tr.Teacher.Backbone.Params.Get("blocks.0.attn.qkv.weight"))
			require.NoError(t, err)
			require.NotEqual(t, before, after, "the EMA must move the teacher")
		})
	}
}

// With FixedPrototypeNorm the prototype gains of both heads stay exactly 1
// in student and teacher while the directions learn; without it DINOv2's
// gains move.
func TestFixedPrototypeNorm(t *testing.T) {
	dev := testDevice(t)
	for _, fixed := range []bool{true, false} {
		t.Run(fmt.Sprint("fixed=", fixed), func(t *testing.T) {
			c := tinyConfig()
			c.SeparateIBOTHead, c.FixedPrototypeNorm = true, fixed
			tr, err := NewTrainer(dev, c)
			require.NoError(t, err)
			defer tr.Release()
			vBefore, err := dev.Read(tr.Student.Head.Params.Get("last_layer.weight_v"))
			require.NoError(t, err)
			run(t, tr, dev, 3) // the last layer learns from step 2
			for _, m := range []*Model{tr.Student, tr.Teacher} {
				for _, mod := range m.Modules()[1:] {
					g, err := dev.Read(mod.Params.Get(prototypeGain))
					require.NoError(t, err)
					moved := 0
					for _, v := range g {
						if v != 1 {
							moved++
						}
					}
					if fixed {
						require.Zero(t, moved, "%s gains", mod.Name)
					} else {
						require.Greater(t, moved, len(g)/2, "%s gains", mod.Name)
					}
				}
			}
			vAfter, err := dev.Read(tr.Student.Head.Params.Get("last_layer.weight_v"))
			require.NoError(t, err)
			require.NotEqual(t, vBefore, vAfter, "the prototype directions must learn")
		})
	}
}

// A run interrupted after 2 steps and resumed from its checkpoint (through
// the msgpack file format) gives the same losses, bit for bit, as one run
// straight through.
// With every DINOv2 term off, InfoNCE alone must reach the backbone (and
// without it nothing does: the control that the gradient comes from it).
func TestInfoNCEAloneTrainsTheBackbone(t *testing.T) {
	dev := testDevice(t)
	for _, w := range []float64{0, 0.5} {
		c := tinyConfig()
		c.DINOWeight, c.IBOTWeight, c.KoLeoWeight, c.MaskProb = 0, 0, 0, 0
		c.NCEWeight, c.NCETemp, c.LayerScaleInit = w, 0.1, 1
		tr, err := NewTrainer(dev, c)
		require.NoError(t, err)
		lo := run(t, tr, dev, 1)[0]
		tr.Release()
		if w == 0 {
			require.Zero(t, lo.GradNorm["backbone"])
			continue
		}
		require.Greater(t, lo.GradNorm["backbone"], 1e-3)
		require.InDelta(t, w*lo.NCE, lo.Total, 1e-9)
	}
}

func TestResumeIsExact(t *testing.T) {
	dev := testDevice(t)
	c := tinyConfig()
	c.NCEWeight, c.NCETemp = 0.5, 0.1
	straight, err := NewTrainer(dev, c)
	require.NoError(t, err)
	defer straight.Release()
	want := run(t, straight, dev, 4)

	first, err := NewTrainer(dev, c)
	require.NoError(t, err)
	run(t, first, dev, 2)
	snap, err := first.Snapshot()
	require.NoError(t, err)
	first.Release()
	var buf bytes.Buffer
	require.NoError(t, ckpt.Write(&buf, snap))
	loaded, err := ckpt.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.NoError(t, err)

	c2, err := TrainConfig(loaded)
	require.NoError(t, err)
	resumed, err := NewTrainer(dev, c2)
	require.NoError(t, err)
	defer resumed.Release()
	require.NoError(t, resumed.Restore(loaded))
	got := run(t, resumed, dev, 2)
	require.Equal(t, want[2:], got)
}

func TestRestoreRefusesAnotherConfig(t *testing.T) {
	dev := testDevice(t)
	tr, err := NewTrainer(dev, tinyConfig())
	require.NoError(t, err)
	defer tr.Release()
	snap, err := tr.Snapshot()
	require.NoError(t, err)
	c := tinyConfig()
	c.BaseLR = 0.001
	other, err := NewTrainer(dev, c)
	require.NoError(t, err)
	defer other.Release()
	require.ErrorContains(t, other.Restore(snap), "checkpoint was trained with another config")
}

// A NaN in the parameters makes the step fail with ErrNonFinite and leaves
// the parameters untouched.
func TestNonFiniteStopsWithoutUpdate(t *testing.T) {
	dev := testDevice(t)
	tr, err := NewTrainer(dev, tinyConfig())
	require.NoError(t, err)
	defer tr.Release()
	w := tr.Student.Backbone.Params.Get("blocks.1.mlp.fc1.weight")
	v, err := dev.Read(w)
	require.NoError(t, err)
	v[3] = float32(math.NaN())
	require.NoError(t, dev.Write(w, v))
	before, err := dev.Read(tr.Student.Backbone.Params.Get("norm.weight"))
	require.NoError(t, err)
	_, err = tr.Step(batchFor(t, dev, 0, tr.Cfg.Batch))
	require.True(t, errors.Is(err, ErrNonFinite), "%v", err)
	after, err := dev.Read(tr.Student.Backbone.Params.Get("norm.weight"))
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.Equal(t, 0, tr.StepsDone)
}

// checkLossAssembly recomputes the last step's DINO and KoLeo losses on the
// CPU, in float64, from the logits and teacher probabilities the step left
// on the device, following RECIPE.md's pairing literally: student global
// crop 1 against teacher crop 2 and vice versa, every local crop against
// both, each term a batch mean, the sum divided by the number of terms; and
// KoLeo per global crop on the L2-normalised CLS tokens.
func checkLossAssembly(t *testing.T, tr *Trainer, lo Losses) {
	c := tr.Cfg
	B, L, K, D := c.Batch, c.Augment.Locals, c.Prototypes, c.Model.EmbedDim
	read := func(x *gpu.Tensor) []float32 {
		v, err := tr.dev.Read(x)
		require.NoError(t, err)
		return v
	}
	s, tp := read(tr.sHead.Logits), read(tr.tProbs)
	xent := func(teacherRow, studentRow int) float64 {
		st := s[studentRow*K : (studentRow+1)*K]
		m := math.Inf(-1)
		for _, v := range st {
			m = math.Max(m, float64(v)/c.StudentTemp)
		}
		sum := 0.0
		for _, v := range st {
			sum += math.Exp(float64(v)/c.StudentTemp - m)
		}
		lse := m + math.Log(sum)
		loss := 0.0
		for k := 0; k < K; k++ {
			loss -= float64(tp[teacherRow*K+k]) * (float64(st[k])/c.StudentTemp - lse)
		}
		return loss
	}
	total, terms := 0.0, 0
	for sv := 0; sv < 2+L; sv++ {
		for tv := 0; tv < 2; tv++ {
			if sv == tv {
				continue
			}
			term := 0.0
			for b := 0; b < B; b++ {
				term += xent(tv*B+b, sv*B+b)
			}
			total += term / float64(B)
			terms++
		}
	}
	require.InDelta(t, total/float64(terms), lo.DINO, 1e-4*math.Max(1, lo.DINO), "DINO loss assembly")
	// The teacher's mean entropy, from the same probabilities; Gibbs'
	// inequality puts it at most the cross-entropy (KL >= 0) and ln K.
	ent := 0.0
	for _, v := range tp {
		if v > 0 {
			ent -= float64(v) * math.Log(float64(v))
		}
	}
	ent /= float64(2 * B)
	require.InDelta(t, ent, lo.TeacherEntropy, 1e-4*math.Max(1, ent), "teacher entropy")
	require.LessOrEqual(t, lo.TeacherEntropy, lo.DINO+1e-4)
	require.LessOrEqual(t, lo.TeacherEntropy, math.Log(float64(K))+1e-4)

	x := read(tr.sHead.X)
	koleo := 0.0
	for k := 0; k < 2; k++ {
		rows := make([][]float64, B)
		for b := range rows {
			r := x[(k*B+b)*D : (k*B+b+1)*D]
			n := 0.0
			for _, v := range r {
				n += float64(v) * float64(v)
			}
			n = math.Sqrt(n)
			rows[b] = make([]float64, D)
			for i, v := range r {
				rows[b][i] = float64(v) / n
			}
		}
		sum := 0.0
		for i := range rows {
			best, bestDot := -1, math.Inf(-1)
			for j := range rows {
				if j == i {
					continue
				}
				d := 0.0
				for q := range rows[i] {
					d += rows[i][q] * rows[j][q]
				}
				if d > bestDot {
					best, bestDot = j, d
				}
			}
			dist := 0.0
			for q := range rows[i] {
				e := rows[i][q] - rows[best][q]
				dist += e * e
			}
			sum -= math.Log(math.Sqrt(dist) + koleoEps)
		}
		koleo += sum / float64(B)
	}
	require.InDelta(t, koleo, lo.KoLeo, 1e-3*math.Max(1, math.Abs(koleo)), "KoLeo assembly")

	want := c.DINOWeight*lo.DINO + c.IBOTWeight*lo.IBOT + c.KoLeoWeight*lo.KoLeo
	if c.NCEWeight > 0 {
		// InfoNCE of the student's global CLS rows, the two crops of an
		// image B rows apart.
		x64 := make([]float64, 2*B*D)
		for i := range x64 {
			x64[i] = float64(x[i])
		}
		nce := ref.InfoNCE(x64, B, D, c.NCETemp)
		require.InDelta(t, nce, lo.NCE, 1e-4*math.Max(1, nce), "InfoNCE assembly")
		want += c.NCEWeight * lo.NCE
	} else {
		require.Zero(t, lo.NCE)
	}
	require.InDelta(t, want, lo.Total, 1e-9*math.Max(1, want), "total")
}
