//go:build !js

package train

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Init draws what DINOv2's initialisation draws, tensor by tensor: the
// bound of PyTorch's default uniform is 1/sqrt(fan-in) of the layer (48
// inputs per patch-embedding output here, Bottleneck per prototype), and
// the standard deviations are those of the distributions.
func TestInitMatchesTheReference(t *testing.T) {
	dev := testDevice(t)
	c := Demo()
	m, err := NewModel(dev, c)
	require.NoError(t, err)
	defer m.Release()
	require.NoError(t, m.Init(3, 0.5))
	patchFanIn := float64(c.Model.InChans * c.Model.PatchSize * c.Model.PatchSize)
	checked := 0
	for _, mod := range m.Modules() {
		for _, name := range mod.Params.Layout.Names() {
			v, err := dev.Read(mod.Params.Get(name))
			require.NoError(t, err)
			var sum, sq, largest float64
			for _, x := range v {
				sum += float64(x)
				sq += float64(x) * float64(x)
				largest = math.Max(largest, math.Abs(float64(x)))
			}
			n := float64(len(v))
			std := math.Sqrt(sq/n - (sum/n)*(sum/n))
			uniform := func(fanIn float64) {
				bound := 1 / math.Sqrt(fanIn)
				require.LessOrEqual(t, largest, bound, "%s.%s: U(+-1/sqrt(%g))", mod.Name, name, fanIn)
				if len(v) >= 1000 {
					require.InEpsilon(t, bound/math.Sqrt(3), std, 0.05, "%s.%s: std of U(+-1/sqrt(%g))", mod.Name, name, fanIn)
				}
			}
			constant := func(want float64) {
				require.Equal(t, want, largest, "%s.%s", mod.Name, name)
				require.Zero(t, std, "%s.%s", mod.Name, name)
			}
			switch {
			case name == "patch_embed.proj.weight", name == "patch_embed.proj.bias":
				uniform(patchFanIn)
			case name == "last_layer.weight_v":
				uniform(float64(c.Bottleneck))
			case strings.HasSuffix(name, "gamma"):
				constant(0.5)
			case name == "last_layer.weight_g", strings.Contains(name, "norm") && strings.HasSuffix(name, ".weight"):
				constant(1)
			case strings.HasSuffix(name, ".bias"), name == "mask_token":
				constant(0)
			case name == "cls_token":
				require.Less(t, largest, 1e-5, name)
			default: // positions and linear weights: truncated normal, std 0.02
				require.InEpsilon(t, 0.02, std, 0.05, "%s.%s", mod.Name, name)
			}
			checked++
		}
	}
	require.Greater(t, checked, 50)
}
