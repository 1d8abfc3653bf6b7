package train

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestScheduleShape(t *testing.T) {
	s := Schedule{WarmupStart: 0, Base: 1, Final: 0.1, Warmup: 10, Total: 110, Cosine: true}
	require.Equal(t, 0.0, s.At(0))
	require.InDelta(t, 0.5, s.At(5), 1e-12)
	require.Equal(t, 1.0, s.At(10))
	require.InDelta(t, 0.55, s.At(60), 1e-12, "half-way through the cosine is the mid-point")
	require.InDelta(t, 0.1, s.At(110), 1e-12)
	require.InDelta(t, 0.1, s.At(500), 1e-12)
	for it := 11; it < 110; it++ {
		require.Less(t, s.At(it), s.At(it-1), "cosine decreases monotonically")
	}
}

func TestRecipeSchedules(t *testing.T) {
	// 100 epochs of 1250 iterations at batch 1024: the reference run.
	s := RecipeSchedules(0.004, 1024, 100, 1250)
	require.InDelta(t, 0.004, s.LR.At(10*1250), 1e-12, "LR reaches base_lr*sqrt(1024/1024) after 10 epochs")
	require.InDelta(t, 1e-6, s.LR.At(100*1250), 1e-12)
	require.InDelta(t, 0.002, s.LR.At(5*1250), 1e-12)
	require.InDelta(t, 0.04, s.WD.At(0), 1e-12)
	require.InDelta(t, 0.4, s.WD.At(100*1250), 1e-12)
	require.InDelta(t, 0.992, s.Momentum.At(0), 1e-12)
	require.InDelta(t, 1.0, s.Momentum.At(100*1250), 1e-12)
	require.InDelta(t, 0.04, s.TeacherTemp.At(0), 1e-12)
	require.InDelta(t, 0.055, s.TeacherTemp.At(15*1250), 1e-12)
	require.InDelta(t, 0.07, s.TeacherTemp.At(30*1250), 1e-12)
	require.InDelta(t, 0.07, s.TeacherTemp.At(99*1250), 1e-12)
	require.Equal(t, 1250, s.FreezeLastLayer)
	// Batch 64 scales the LR by sqrt(64/1024) = 1/4.
	require.InDelta(t, 0.001, RecipeSchedules(0.004, 64, 100, 1250).LR.At(10*1250), 1e-12)
	require.False(t, math.IsNaN(RecipeSchedules(0.004, 64, 1, 3).LR.At(0)))
}

func TestConfigOverridesSchedules(t *testing.T) {
	c := Recipe(Demo().Model, 64, 4)
	c.ItersPerEpoch = 40
	c.TeacherMomentum, c.TeacherTemp, c.FreezeLastLayerIters = 0.9, 0.05, 7
	s := c.Schedules()
	require.InDelta(t, 0.9, s.Momentum.At(0), 1e-12)
	require.InDelta(t, 0.95, s.Momentum.At(80), 1e-12, "half-way along the cosine to 1")
	require.InDelta(t, 1.0, s.Momentum.At(160), 1e-12)
	require.InDelta(t, 0.04, s.TeacherTemp.At(0), 1e-12)
	require.InDelta(t, 0.05, s.TeacherTemp.At(159), 1e-12)
	require.Equal(t, 7, s.FreezeLastLayer)
}
