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
		ratio, err := dev.loadCostRatio()
		require.NoError(t, err)
		t.Logf("%s: uniform-address loads take %.2f of per-lane loads' time (median of rounds)", dev.Info().Name, ratio)
		require.Equal(t, first, ratio < broadcastRatio, "verdict at ratio %.2f", ratio)
		require.True(t, ratio < unsureLow || ratio > unsureHigh, "ratio %.2f too near the threshold %.2f to be trusted", ratio, broadcastRatio)
	}
}

func TestMedian(t *testing.T) {
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 3.0, median([]float64{4, 1, 3, 2}))
	require.Equal(t, 5.0, median([]float64{5}))
}
