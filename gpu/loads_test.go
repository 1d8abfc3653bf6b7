//go:build !js

package gpu

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBroadcastLoadsProbe checks that the probe behind BroadcastLoads gives
// the same verdict every time, far from its threshold (a verdict that
// flipped between runs would change which kernels a resumed run takes), and
// that the answer is kept.
func TestBroadcastLoadsProbe(t *testing.T) {
	first := dev.BroadcastLoads()
	require.Equal(t, first, dev.BroadcastLoads(), "the answer is found once and kept")
	require.Equal(t, !first, dev.LoadsAdvice() != "", "advice where loads go lane by lane: %q", dev.LoadsAdvice())
	if !dev.Info().IsCPU() {
		require.True(t, first, "a GPU broadcasts uniform loads")
		return
	}
	for range 3 {
		uniform, lanes, err := dev.loadCosts()
		require.NoError(t, err)
		ratio := float64(uniform) / float64(lanes)
		t.Logf("%s: uniform-address loads take %.2f of per-lane loads' time (%v, %v)", dev.Info().Name, ratio, uniform, lanes)
		require.Equal(t, first, ratio < 0.7, "verdict at ratio %.2f", ratio)
		require.True(t, ratio < 0.55 || ratio > 0.85, "ratio %.2f too near the threshold 0.7 to be trusted", ratio)
	}
}
