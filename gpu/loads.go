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
// ran the uniform one in 0.40-0.41 of the other's time, Mesa 25.0 in
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
		uniform, err1 := d.loadCost(true)
		lanes, err2 := d.loadCost(false)
		d.loads.broadcast = err1 == nil && err2 == nil && 10*uniform < 7*lanes
	})
	return d.loads.broadcast
}

// loadCost is the best of three timed runs of load_cost (after one that
// compiles and warms up).
func (d *Device) loadCost(uniform bool) (time.Duration, error) {
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
	k := Kernel{Name: "load_cost", Data: struct{ Uniform bool }{uniform}, Access: []Access{Read, ReadWrite}}
	best := time.Duration(1<<63 - 1)
	for i := range 4 {
		rec := d.Record()
		if err := rec.Dispatch(k, [3]uint32{64, 1, 1}, []uint32{2048, floats/4 - 1}, x, y); err != nil {
			return 0, err
		}
		t, err := rec.Run()
		if err != nil {
			return 0, err
		}
		if i > 0 {
			best = min(best, t)
		}
	}
	return best, nil
}

// LoadsAdvice is a line for a program to print on a CPU device whose loads
// go lane by lane (BroadcastLoads false), saying where a faster lavapipe
// comes from; empty elsewhere.
func (d *Device) LoadsAdvice() string {
	if !d.info.IsCPU() || runtime.GOOS == "js" || d.BroadcastLoads() {
		return ""
	}
	return "note: this lavapipe loads every address lane by lane; Mesa 26's runs webdino about twice as fast: " +
		"bash scripts/setup-lavapipe.sh, then run programs through scripts/lavapipe-exec (docs/lavapipe.md)"
}
