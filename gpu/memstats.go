package gpu

import "sync/atomic"

// memStats counts the bytes of the buffers NewBuffer allocated and not yet
// released, and the most there ever were, so benchmarks can report a step's
// device memory without driver support. Staging, uniform and query buffers
// are not counted: they are small and short-lived.
type memStats struct{ current, peak atomic.Uint64 }

func (m *memStats) alloc(n uint64) {
	c := m.current.Add(n)
	for p := m.peak.Load(); c > p && !m.peak.CompareAndSwap(p, c); p = m.peak.Load() {
	}
}

func (m *memStats) free(n uint64) { m.current.Add(-n) }

// Allocated returns the bytes of tensor buffers allocated on d now and at
// most since it was opened (or since ResetPeak).
func (d *Device) Allocated() (current, peak uint64) {
	return d.mem.current.Load(), d.mem.peak.Load()
}

// ResetPeak restarts the peak from the current allocation.
func (d *Device) ResetPeak() { d.mem.peak.Store(d.mem.current.Load()) }
