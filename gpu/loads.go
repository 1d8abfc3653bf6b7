package gpu

import (
	"runtime"
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
// by timing the two kinds of load in a loop (load_cost): a later lavapipe
// ran the uniform one in 0.37-0.53 of the other's time (with both cores
// busy elsewhere too), Mesa 25.0 in 0.99-1.07, so the threshold 0.7 is far
// from both. An error while probing answers false, the choice that is
// right on the older lavapipe.
func (d *Device) BroadcastLoads() bool {
	if !d.info.IsCPU() {
		return true
	}
	if runtime.GOOS == "js" {
		return false // a browser's CPU device (SwiftShader) keeps the kernels it was tuned with
	}
	d.loads.once.Do(func() {
		uniform, lanes, err := d.loadCosts()
		d.loads.broadcast = err == nil && 10*uniform < 7*lanes
	})
	return d.loads.broadcast
}

// loadCosts times load_cost with uniform and with per-lane addresses, in
// turns, and returns the best of five runs of each (after a round that
// compiles and warms up): taking turns, a busy spell slows both alike, and
// the best of five is a run it did not touch.
func (d *Device) loadCosts() (uniform, lanes time.Duration, err error) {
	const floats = 1 << 14 * 4
	x, err := d.NewTensor("load probe x", floats)
	if err != nil {
		return 0, 0, err
	}
	defer x.Buf.Release()
	y, err := d.NewTensor("load probe y", 64*64*4)
	if err != nil {
		return 0, 0, err
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
	uniform, lanes = time.Duration(1<<63-1), time.Duration(1<<63-1)
	for round := range 6 {
		u, err := run(true)
		if err != nil {
			return 0, 0, err
		}
		l, err := run(false)
		if err != nil {
			return 0, 0, err
		}
		if round > 0 {
			uniform, lanes = min(uniform, u), min(lanes, l)
		}
	}
	return uniform, lanes, nil
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
