//go:build !js

package nn_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// fixtureHead loads the head fixture's weights into a new head, released
// when the test ends.
func fixtureHead(t *testing.T) (*gpu.Device, map[string]ckpt.Tensor, nn.HeadConfig, *nn.DINOHead) {
	dev := nn.SharedDevice()
	fx := readSafetensors(t, filepath.Join("testdata", "vit", "head.safetensors"))
	c := nn.HeadConfig{In: 24, Hidden: 40, Bottleneck: 12, Prototypes: 50, Layers: 3}
	h, err := nn.NewDINOHead(dev, c)
	require.NoError(t, err)
	t.Cleanup(h.Release)
	for _, p := range c.ParamShapes() {
		require.Equal(t, fx[p.Name].Shape, p.Shape, p.Name)
		require.NoError(t, dev.Write(h.Params.Get(p.Name), fx[p.Name].Data))
	}
	return dev, fx, c, h
}

// The head fixture (scripts/reference/dinov2_ref.py, head_fixtures): a DINO
// head with torch.nn.utils.weight_norm on 5 random rows. Values are O(1) and
// sums run over at most 50 terms, so float32 rounding stays near 1e-6;
// 1e-4 relative to each tensor's largest entry catches any wrong term.
func TestDINOHeadMatchesPyTorch(t *testing.T) {
	dev, fx, c, h := fixtureHead(t)
	a, err := h.NewActs(5, true, false)
	require.NoError(t, err)
	defer a.Release()
	grads, err := h.NewGrads()
	require.NoError(t, err)
	defer grads.Release()
	require.NoError(t, dev.Write(a.X, fx["x"].Data))
	require.NoError(t, dev.Write(a.DLogits, fx["upstream"].Data))
	rec := dev.Record()
	require.NoError(t, h.Forward(rec, a))
	require.NoError(t, h.Backward(rec, a, grads))
	require.NoError(t, rec.Submit())

	check := func(name string, got []float32) {
		want := fx[name].Data
		scale := 0.0
		for _, v := range want {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		require.Greater(t, scale, 0.0, name)
		d := maxAbsDiff(t, want, got, name)
		require.LessOrEqual(t, d/scale, 1e-4, "%s: max abs error %.3g, largest entry %.3g", name, d, scale)
	}
	logits, err := dev.Read(a.Logits)
	require.NoError(t, err)
	check("logits", logits)
	dx, err := dev.Read(a.DX)
	require.NoError(t, err)
	check("grad.x", dx)
	for _, p := range c.ParamShapes() {
		g, err := dev.Read(grads.Get(p.Name))
		require.NoError(t, err)
		check("grad."+p.Name, g)
	}
}

func TestDINOHeadBadConfig(t *testing.T) {
	_, err := nn.NewDINOHead(nn.SharedDevice(), nn.HeadConfig{In: 8, Hidden: 8, Bottleneck: 0, Prototypes: 4, Layers: 3})
	require.EqualError(t, err, "dino head {In:8 Hidden:8 Bottleneck:0 Prototypes:4 Layers:3}: every size must be positive and layers >= 1")
}

// A teacher's forward-only activations give the fixture's logits and
// refuse a backward pass.
func TestDINOHeadForwardOnlyActs(t *testing.T) {
	dev, fx, _, h := fixtureHead(t)
	a, err := h.NewActs(5, false, true)
	require.NoError(t, err)
	defer a.Release()
	require.Nil(t, a.DLogits)
	require.NoError(t, dev.Write(a.X, fx["x"].Data))
	rec := dev.Record()
	require.NoError(t, h.Forward(rec, a))
	require.NoError(t, rec.Submit())
	logits, err := dev.Read(a.Logits)
	require.NoError(t, err)
	require.LessOrEqual(t, maxAbsDiff(t, fx["logits"].Data, logits, "logits"), 1e-4)
	grads, err := h.NewGrads()
	require.NoError(t, err)
	defer grads.Release()
	require.ErrorContains(t, h.Backward(dev.Record(), a, grads), "without backward tensors")
}
