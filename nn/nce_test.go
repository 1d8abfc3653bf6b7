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

func TestInfoNCE(t *testing.T) {
	rng := rand.New(rand.NewPCG(71, 72))
	for _, c := range []struct {
		B, D int
		tau  float64
	}{{1, 3, 0.1}, {3, 5, 0.05}, {16, 64, 0.05}, {64, 64, 0.2}, {5, 7, 1}} {
		t.Run(fmt.Sprintf("B%d_D%d_tau%g", c.B, c.D, c.tau), func(t *testing.T) {
			R := 2 * c.B
			x64, x32 := randn(rng, R*c.D, 1)
			a64, a32 := randn(rng, R*c.D, 0.1)
			const weight = 0.7
			n, err := NewNCE(dev, c.B, c.D, weight)
			require.NoError(t, err)
			defer n.Release()
			x, dx, dxAcc := upload(t, x32, R, c.D), zeros(t, R, c.D), upload(t, a32, R, c.D)
			rec := dev.Record()
			require.NoError(t, n.Forward(rec, x, float32(c.tau)))
			run(t, rec)
			losses := read(t, n.Loss)
			got := 0.0
			for _, v := range losses {
				got += v / float64(R)
			}
			want := ref.InfoNCE(x64, c.B, c.D, c.tau)
			// Cosines to ~1e-7, divided by tau inside the exponentials.
			require.InDelta(t, want, got, 2e-6/c.tau, "loss")
			rec = dev.Record()
			require.NoError(t, n.Backward(rec, dx, float32(c.tau), false))
			run(t, rec)
			// The backward overwrote C: forward again for the accumulating call.
			rec = dev.Record()
			require.NoError(t, n.Forward(rec, x, float32(c.tau)))
			require.NoError(t, n.Backward(rec, dxAcc, float32(c.tau), true))
			run(t, rec)
			wdx := ref.InfoNCEBackward(x64, c.B, c.D, c.tau, weight)
			scale := 0.0
			for _, v := range wdx {
				scale = math.Max(scale, math.Abs(v))
			}
			requireClose(t, wdx, read(t, dx), 2e-5*scale, 1e-4, "dx")
			for i := range wdx {
				wdx[i] += a64[i]
			}
			requireClose(t, wdx, read(t, dxAcc), 2e-5*scale, 1e-4, "dx accumulated")
			// The reference's gradient is the reference loss's.
			checkGradient(t, func(x []float64) float64 { return weight * ref.InfoNCE(x, c.B, c.D, c.tau) },
				x64, ref.InfoNCEBackward(x64, c.B, c.D, c.tau, weight), "reference")
		})
	}
	_, err := NewNCE(dev, 0, 4, 1)
	require.ErrorContains(t, err, "infonce: 0 images")
}
