//go:build !js

package nn_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/npy"
)

// The fixtures of nn/testdata/vit (see its README) come from
// scripts/reference/dinov2_ref.py: the official architecture in PyTorch,
// float32 on the CPU. Our kernels sum in another order in float32, so
// outputs differ by rounding: |x_prenorm| <= 6.1, and after two blocks the
// observed difference stays below 1e-5; 1e-4 (the bound) leaves
// room for other devices.
const parityTol = 1e-4

// fixtureDir holds the parity fixtures: nn/testdata/vit, or the folder in
// WEBDINO_VIT_FIXTURES (e.g. a full-depth set the reference script wrote
// outside the repository with --depth 12 --dim 384 --heads 6 --out DIR).
func fixtureDir() string {
	if d := os.Getenv("WEBDINO_VIT_FIXTURES"); d != "" {
		return d
	}
	return filepath.Join("testdata", "vit")
}

func loadFixture(t *testing.T, name string) *npy.Array {
	t.Helper()
	a, err := npy.ReadFile(filepath.Join(fixtureDir(), name))
	require.NoError(t, err)
	return a
}

func maxAbsDiff(t *testing.T, want, got []float32, what string) float64 {
	t.Helper()
	require.Equal(t, len(want), len(got), "%s: length", what)
	m := 0.0
	for i := range want {
		d := math.Abs(float64(want[i]) - float64(got[i]))
		if math.IsNaN(d) {
			t.Fatalf("%s: NaN at %d", what, i)
		}
		m = math.Max(m, d)
	}
	return m
}

func TestViTParityWithPyTorch(t *testing.T) {
	dev := nn.SharedDevice()
	models, err := filepath.Glob(filepath.Join(fixtureDir(), "vits14_d*.pth"))
	require.NoError(t, err)
	require.Len(t, models, 2, "want the plain and the registers model in %s", fixtureDir())
	for _, file := range models {
		model := strings.TrimSuffix(filepath.Base(file), ".pth")
		for _, format := range []string{"pth", "safetensors"} {
			m, _ := importViT(t, filepath.Join(fixtureDir(), model+"."+format))
			for _, size := range []string{"224x224", "224x308"} {
				name := fmt.Sprintf("%s.%s %s", model, format, size)
				in := loadFixture(t, "input_"+size+".npy")
				images, err := dev.Upload("images", in.Float32, in.Shape...)
				require.NoError(t, err)
				out, err := m.Forward(images, nn.ForwardOpts{Intermediate: 2})
				images.Buf.Release()
				require.NoError(t, err, name)
				pre := fmt.Sprintf("%s_%s_", model, size)
				checks := []struct {
					file string
					got  []float32
				}{
					{"x_prenorm", out.Prenorm},
					{"x_norm_clstoken", out.ClsToken()},
					{"x_norm_regtokens", out.RegTokens()},
					{"x_norm_patchtokens", out.PatchTokens()},
					{"intermediate_patchtokens", append(out.IntermediatePatchTokens(0), out.IntermediatePatchTokens(1)...)},
					{"intermediate_clstoken", append(out.IntermediateClsToken(0), out.IntermediateClsToken(1)...)},
				}
				worst := 0.0
				for _, ch := range checks {
					d := maxAbsDiff(t, loadFixture(t, pre+ch.file+".npy").Float32, ch.got, name+" "+ch.file)
					require.LessOrEqual(t, d, parityTol, "%s %s: max abs error %.3g", name, ch.file, d)
					worst = math.Max(worst, d)
				}
				t.Logf("%s: max abs error over all outputs %.3g", name, worst)
			}
		}
	}
}
