// Package train is the DINOv2 method: multi-crop plan, masking, schedules,
// losses composition, teacher EMA, the training step and loop.
package train

import "math"

// Schedule is a per-iteration value: linear warmup from WarmupStart to Base
// over Warmup iterations, then a half-cosine from Base to Final at Total.
// Iterations past Total hold Final. With Base == Final and no warmup it is a
// constant; with Cosine false the post-warmup phase is flat at Base (the
// teacher-temperature schedule of DINOv2 is a linear warmup then constant).
type Schedule struct {
	Base, Final, WarmupStart float64
	Warmup, Total            int
	Cosine                   bool
}

// At returns the value at iteration it (0-based).
func (s Schedule) At(it int) float64 {
	if it < s.Warmup {
		return s.WarmupStart + (s.Base-s.WarmupStart)*float64(it)/float64(s.Warmup)
	}
	if !s.Cosine {
		return s.Base
	}
	span := s.Total - s.Warmup
	if span <= 0 || it >= s.Total {
		return s.Final
	}
	p := float64(it-s.Warmup) / float64(span)
	return s.Final + 0.5*(s.Base-s.Final)*(1+math.Cos(math.Pi*p))
}

// Schedules are the per-iteration hyper-parameters of a DINOv2 run.
type Schedules struct {
	LR, WD, Momentum, TeacherTemp Schedule
	// FreezeLastLayer is the number of first iterations during which the
	// prototype layer of the heads gets no update.
	FreezeLastLayer int
}

// RecipeSchedules builds DINOv2's schedules (RECIPE.md "Optimisation") for a
// run of epochs x itersPerEpoch iterations at the given batch size:
// LR = baseLR * sqrt(batch/1024) with warmup then cosine to 1e-6; weight decay
// cosine 0.04 -> 0.4; teacher momentum cosine 0.992 -> 1; teacher temperature
// 0.04 -> 0.07 over 30 epochs, then 0.07; last layer frozen the first epoch.
// Warmups are capped to the run's length so short runs still reach their base.
func RecipeSchedules(baseLR float64, batch, epochs, itersPerEpoch int) Schedules {
	total := epochs * itersPerEpoch
	ep := func(e int) int { return min(e*itersPerEpoch, total/3) }
	return Schedules{
		LR:              Schedule{Base: baseLR * math.Sqrt(float64(batch)/1024), Final: 1e-6, Warmup: ep(10), Total: total, Cosine: true},
		WD:              Schedule{WarmupStart: 0.04, Base: 0.04, Final: 0.4, Total: total, Cosine: true},
		Momentum:        Schedule{WarmupStart: 0.992, Base: 0.992, Final: 1, Total: total, Cosine: true},
		TeacherTemp:     Schedule{WarmupStart: 0.04, Base: 0.07, Final: 0.07, Warmup: ep(30), Total: total},
		FreezeLastLayer: min(itersPerEpoch, total/10),
	}
}
