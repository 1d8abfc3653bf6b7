package gpu

import (
	"runtime"
	"slices"
	"sync"
	"time"
)

// loadsProbe holds BroadcastLoads' answer, found once per device.
type loadsProbe struct {
	once      sync.Once
	broadcast bool
}

// BroadcastLoads reports whether a storage load whose address is the same
// for every invocation of a workgroup costs one load rather than one per
// invocation. GPUs serve such loads from cache alike, so it is true there.
// On a CPU it decides which matmul kernels pay: lavapipe up to Mesa 25.0
// loads every address lane by lane, so its products read the operand all
// lanes share from a uniform-buffer window; a later lavapipe asks NIR which
// addresses are uniform and loads those once. The answer is measured, once,
// by timing the two kinds of load (loadCostRatio): a later lavapipe runs
// the uniform one in 0.37-0.53 of the other's time, Mesa 25.0 in
// 0.99-1.07, so the threshold 0.7 is far from both. An error while probing
// answers false, the choice that is right on the older lavapipe.
func (d *Device) BroadcastLoads() bool {
	if !d.info.IsCPU() {
		return true
	}
	if runtime.GOOS == "js" {
		return false // a browser's CPU device (SwiftShader) keeps the kernels it was tuned with
	}
	d.loads.once.Do(func() {
		ratio, err := d.loadCostRatio()
		d.loads.broadcast = err == nil && ratio < broadcastRatio
	})
	return d.loads.broadcast
}

const (
	// broadcastRatio is the uniform loads' share of the per-lane loads'
	// time below which a device broadcasts them.
	broadcastRatio = 0.7
	// Ratios inside [unsureLow, unsureHigh] are too near broadcastRatio
	// to trust: the probe measures on until it leaves the band.
	unsureLow, unsureHigh = 0.55, 0.85
	// probeRounds and maxProbeRounds bound the probe: the rounds it always
	// times and those it may add while unsure.
	probeRounds, maxProbeRounds = 7, 41
)

// loadCostRatio times load_cost with uniform and with per-lane addresses
// in rounds, one of each back to back (in alternating order), and returns
// the median of the rounds' ratios. A busy machine slows a round's two
// runs alike, and the median ignores the rounds a burst hit one of them:
// two test binaries sharing two cores pushed the ratio of the best times
// of each kind from 0.43 to 0.60, near the threshold, and a resumed
// training run that decided otherwise than the run it resumed would take
// other kernels (other rounding). While the median stays between unsureLow
// and unsureHigh the probe adds rounds, up to maxProbeRounds.
func (d *Device) loadCostRatio() (float64, error) {
	const floats = 1 << 14 * 4
	x, err := d.NewTensor("load probe x", floats)
	if err != nil {
		return 0, err
	}
	defer x.Buf.Release()
	y, err := d.NewTensor("load probe y", 64*64*4)
	if err != nil {
		return 0, err
	}
	defer y.Buf.Release()
	run := func(uniform bool) (time.Duration, error) {
		rec := d.Record()
		k := Kernel{Name: "load_cost", Data: struct{ Uniform bool }{uniform}, Access: []Access{Read, ReadWrite}}
		if err := rec.Dispatch(k, [3]uint32{64, 1, 1}, []uint32{2048, floats/4 - 1}, x, y); err != nil {
			return 0, err
		}
		return rec.Run()
	}
	// A first round compiles and warms up both kernels.
	for _, u := range []bool{true, false} {
		if _, err := run(u); err != nil {
			return 0, err
		}
	}
	var ratios []float64
	for round := 0; round < maxProbeRounds; round++ {
		first := round%2 == 0 // uniform first in even rounds
		a, err := run(first)
		if err != nil {
			return 0, err
		}
		b, err := run(!first)
		if err != nil {
			return 0, err
		}
		uniform, lanes := a, b
		if !first {
			uniform, lanes = b, a
		}
		ratios = append(ratios, float64(uniform)/float64(max(lanes, 1)))
		if len(ratios) >= probeRounds && len(ratios)%2 == 1 {
			if m := median(ratios); m < unsureLow || m > unsureHigh {
				return m, nil
			}
		}
	}
	return median(ratios), nil
}

// median of v (the upper one of an even count); v is reordered.
func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}

// LoadsAdvice is a line for a program to print on a CPU device whose loads
// go lane by lane (BroadcastLoads false), saying where a faster lavapipe
// comes from; empty elsewhere.
func (d *Device) LoadsAdvice() string {
	if !d.info.IsCPU() || runtime.GOOS == "js" || d.BroadcastLoads() {
		return ""
	}
	return "note: this lavapipe loads every address lane by lane; Mesa 26's runs webdino about twice as fast: " +
		"make setup (scripts/setup-lavapipe.sh) installs one privately, which webdino's programs then start on (docs/lavapipe.md)"
}
