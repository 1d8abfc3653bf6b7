package gpu

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// memStats counts the bytes of the buffers NewBuffer allocated and not yet
// released, and the most there ever were, so benchmarks can report a step's
// device memory without driver support. Staging, uniform and query buffers
// are not counted: they are small and short-lived.
type memStats struct {
	current, peak atomic.Uint64
	mu            sync.Mutex
	live          map[*Buffer]struct{}
}

func (m *memStats) alloc(b *Buffer) {
	c := m.current.Add(b.size)
	for p := m.peak.Load(); c > p && !m.peak.CompareAndSwap(p, c); p = m.peak.Load() {
	}
	m.mu.Lock()
	if m.live == nil {
		m.live = map[*Buffer]struct{}{}
	}
	m.live[b] = struct{}{}
	m.mu.Unlock()
}

func (m *memStats) free(b *Buffer) {
	m.current.Add(-b.size)
	m.mu.Lock()
	delete(m.live, b)
	m.mu.Unlock()
}

// LiveBuffer is one allocated buffer: its label and bytes.
type LiveBuffer struct {
	Label string
	Bytes uint64
}

// LiveBuffers lists the tensor buffers allocated on d now, largest first:
// where a step's memory goes.
func (d *Device) LiveBuffers() []LiveBuffer {
	d.mem.mu.Lock()
	s := make([]LiveBuffer, 0, len(d.mem.live))
	for b := range d.mem.live {
		s = append(s, LiveBuffer{b.label, b.size})
	}
	d.mem.mu.Unlock()
	slices.SortFunc(s, func(a, b LiveBuffer) int { return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(a.Label, b.Label)) })
	return s
}

// Allocated returns the bytes of tensor buffers allocated on d now and at
// most since it was opened (or since ResetPeak).
func (d *Device) Allocated() (current, peak uint64) {
	return d.mem.current.Load(), d.mem.peak.Load()
}

// ResetPeak restarts the peak from the current allocation.
func (d *Device) ResetPeak() { d.mem.peak.Store(d.mem.current.Load()) }
