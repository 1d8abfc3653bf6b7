//go:build !js

package nn_test

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// The gradient fixture (scripts/reference/dinov2_ref.py, grad_fixtures): the
// registers model, two 56x70 images (a 4x5 grid, so positions go through
// the antialiased interpolation and its backward), iBOT masks on ~40% of the
// patches, loss = sum(upstream * x_norm). Gradients are sums over 2*25
// tokens of products of O(1) activations; float32 summation-order rounding
// relative to each tensor's largest gradient stays near 1e-5, so 1e-3 of
// the tensor's scale flags any missing or wrong term.
const gradRelTol = 1e-3

func readSafetensors(t *testing.T, path string) map[string]ckpt.Tensor {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	ts, err := ckpt.ReadSafetensors(f, st.Size())
	require.NoError(t, err, path)
	return ts
}

// importViT converts an official weight file and loads it on the shared
// device; the model is released when the test ends.
func importViT(t *testing.T, path string) (*nn.ViT, *ckpt.Checkpoint) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	st, _ := f.Stat()
	c, _, err := ckpt.Import(f, st.Size())
	f.Close()
	require.NoError(t, err, path)
	m, err := nn.NewViT(nn.SharedDevice(), c.Config)
	require.NoError(t, err)
	t.Cleanup(m.Release)
	w := map[string][]float32{}
	for k, v := range c.Weights {
		w[k] = v.Data
	}
	require.NoError(t, m.SetWeights(w))
	return m, c
}

// The registers model (GELU MLP) and a ViT-g-style one (SwiGLU MLP, no
// registers).
func TestViTBackwardMatchesPyTorch(t *testing.T) {
	for _, pre := range []string{"vits14_d2_reg4_grad", "swiglu_d2_grad"} {
		t.Run(pre, func(t *testing.T) { testViTBackward(t, pre) })
	}
}

func testViTBackward(t *testing.T, pre string) {
	dev := nn.SharedDevice()
	m, c := importViT(t, filepath.Join("testdata", "vit", pre+"_weights.safetensors"))

	in := loadFixture(t, pre+"_input.npy")
	images, err := dev.Upload("images", in.Float32, in.Shape...)
	require.NoError(t, err)
	defer images.Buf.Release()
	a, err := m.NewActs(2, 56, 70, true, 0)
	require.NoError(t, err)
	defer a.Release()
	var mask []bool
	for _, v := range loadFixture(t, pre+"_mask.npy").Float32 {
		mask = append(mask, v != 0)
	}
	require.NoError(t, a.SetMask(dev, mask))
	require.NoError(t, dev.Write(a.DNormed, loadFixture(t, pre+"_upstream.npy").Float32))
	grads, err := m.NewGrads()
	require.NoError(t, err)
	defer grads.Release()

	// Each span that BackwardNotify reports done is read back at once,
	// while the rest of the pass runs: it must hold its final gradients.
	rec := dev.Record()
	require.NoError(t, m.Encode(rec, a, images, true))
	var done []string
	var early []*gpu.PendingRead
	require.NoError(t, m.BackwardNotify(rec, a, grads, true, func(from string) {
		done = append(done, from)
		require.NoError(t, rec.Submit())
		span, err := grads.Span(from, "")
		require.NoError(t, err)
		p, err := dev.StartRead(span...)
		require.NoError(t, err)
		early = append(early, p)
	}))
	require.NoError(t, rec.Submit())
	require.Equal(t, []string{nn.BlockStart(1), nn.BlockStart(0)}, done)
	for i, from := range done {
		span, err := grads.Span(from, "")
		require.NoError(t, err)
		n := 0
		for _, v := range span {
			n += v.Len()
		}
		final, got := make([]float32, n), make([]float32, n)
		require.NoError(t, dev.ReadInto(final, span...))
		require.NoError(t, early[i].Into(got))
		require.Equal(t, final, got, "gradients from %s on, read when reported done", from)
	}

	normed, err := dev.Read(a.Normed)
	require.NoError(t, err)
	d := maxAbsDiff(t, loadFixture(t, pre+"_x_norm.npy").Float32, normed, "x_norm")
	require.LessOrEqual(t, d, parityTol, "masked forward: max abs error %.3g", d)

	want := readSafetensors(t, filepath.Join("testdata", "vit", pre+".safetensors"))
	require.Len(t, want, len(c.Config.ParamShapes()))
	worst := 0.0
	for _, p := range c.Config.ParamShapes() {
		wt, ok := want[p.Name]
		require.True(t, ok, "fixture lacks %s", p.Name)
		got, err := dev.Read(grads.Get(p.Name))
		require.NoError(t, err)
		scale := 0.0
		for _, v := range wt.Data {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		require.Greater(t, scale, 0.0, "%s: the fixture's gradient is zero, the test would prove nothing", p.Name)
		rel := maxAbsDiff(t, wt.Data, got, p.Name) / scale
		require.LessOrEqual(t, rel, gradRelTol, "%s: max abs error %.3g of the largest gradient %.3g", p.Name, rel*scale, scale)
		worst = math.Max(worst, rel)
	}
	t.Logf("%d parameter gradients: worst max abs error relative to the tensor's largest gradient %.3g", len(want), worst)
}

// Stochastic depth, checked through its two limits on the gradient
// fixture's model: with every branch dropped the blocks are the identity
// and get no gradient; with a rate near 0 nothing changes.
func TestViTDropPath(t *testing.T) {
	dev := nn.SharedDevice()
	const pre = "vits14_d2_reg4_grad"
	m, _ := importViT(t, filepath.Join("testdata", "vit", pre+"_weights.safetensors"))
	in := loadFixture(t, pre+"_input.npy")
	images, err := dev.Upload("images", in.Float32, in.Shape...)
	require.NoError(t, err)
	defer images.Buf.Release()

	pass := func(rate float64) (normed []float32, grads *nn.Flat) {
		a, err := m.NewActs(2, 56, 70, true, 0)
		require.NoError(t, err)
		defer a.Release()
		require.NoError(t, a.SetDropPath(dev, rate, rand.New(rand.NewPCG(1, 2))))
		require.NoError(t, dev.Write(a.DNormed, loadFixture(t, pre+"_upstream.npy").Float32))
		grads, err = m.NewGrads()
		require.NoError(t, err)
		rec := dev.Record()
		require.NoError(t, m.Encode(rec, a, images, false))
		require.NoError(t, m.Backward(rec, a, grads, false))
		require.NoError(t, rec.Submit())
		normed, err = dev.Read(a.Normed)
		require.NoError(t, err)
		return normed, grads
	}
	readGrad := func(g *nn.Flat, name string) []float32 {
		v, err := dev.Read(g.Get(name))
		require.NoError(t, err)
		return v
	}
	base, gBase := pass(0)
	defer gBase.Release()
	near, gNear := pass(1e-9)
	defer gNear.Release()
	// The drop-path pass takes other fused kernels (a row-scale epilogue),
	// whose FMA contraction may differ by a few ulps of |x_norm| <= 8 (1.4e-6
	// seen on an NVIDIA GPU).
	require.LessOrEqual(t, maxAbsDiff(t, base, near, "x_norm"), 4e-6)
	for _, name := range []string{"blocks.1.mlp.fc1.weight", "blocks.0.ls1.gamma", "pos_embed"} {
		require.LessOrEqual(t, maxAbsDiff(t, readGrad(gBase, name), readGrad(gNear, name), name), 1e-4)
	}

	_, gAll := pass(0.999999)
	defer gAll.Release()
	for _, name := range []string{"blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias", "blocks.1.ls2.gamma", "blocks.0.norm1.weight"} {
		for _, v := range readGrad(gAll, name) {
			require.Zero(t, v, "%s gets a gradient through dropped branches", name)
		}
	}
	nonzero := false
	for _, v := range readGrad(gAll, "cls_token") {
		nonzero = nonzero || v != 0
	}
	require.True(t, nonzero, "the tokens still reach the loss through the residual stream")
}

// A model with a tensor larger than the device can bind is refused before
// anything is allocated, with a message naming the tensor and the limit.
func TestViTTooLargeForDevice(t *testing.T) {
	dev := nn.SharedDevice()
	c := nn.ViTConfig{PatchSize: 14, InChans: 3, EmbedDim: 1024, Depth: 1, Heads: 16, FFN: nn.FFNMLP,
		PosGrid: 16, LayerScale: true, QKVBias: true, LNEps: 1e-6, InterpOffset: 0.1}
	// fc1 of hidden H holds 1024 H floats: one more row than a binding holds.
	c.MLPHidden = int(dev.Limits().MaxStorageBinding/4/1024) + 1
	if c.MLPHidden > 1<<18 {
		t.Skipf("the device binds %d bytes, more than any valid config needs", dev.Limits().MaxStorageBinding)
	}
	_, err := nn.NewViT(dev, c)
	require.ErrorContains(t, err, "does not fit this device")
	require.ErrorContains(t, err, `"blocks.0.mlp.fc1.weight"`)
	require.ErrorContains(t, err, "the device's largest storage binding")
}
