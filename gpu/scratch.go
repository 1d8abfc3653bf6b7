package gpu

import "fmt"

// scratch holds the buffers Scratch hands out, by purpose, and those that
// larger requests superseded.
type scratch struct {
	bufs    map[string]*Buffer
	retired []*Buffer
}

// Scratch returns a tensor of n floats in a buffer the device keeps for the
// named purpose, so that an op needing temporary space between two of its
// dispatches (split-K partial products) does not allocate on every call.
// Ops recorded one after another may share it: the dispatches of a
// recording run in order. The buffer grows to the largest request, in
// powers of two; one it outgrows stays allocated until Close, since work
// already recorded may still bind it.
func (d *Device) Scratch(name string, n int) (*Tensor, error) {
	if err := checkShape("scratch "+name, []int{n}); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.scratch.bufs == nil {
		d.scratch.bufs = map[string]*Buffer{}
	}
	need := uint64(n) * 4
	b := d.scratch.bufs[name]
	if b == nil || b.size < need {
		size := uint64(1024)
		for size < need {
			size *= 2
		}
		nb, err := d.NewBuffer("scratch "+name, min(size, max(need, d.limits.MaxBufferSize&^255)))
		if err != nil {
			return nil, fmt.Errorf("scratch %s of %d floats: %w", name, n, err)
		}
		if b != nil {
			d.scratch.retired = append(d.scratch.retired, b)
		}
		b = nb
		d.scratch.bufs[name] = b
	}
	return &Tensor{Buf: b, Shape: []int{n}}, nil
}

// releaseScratch frees every scratch buffer (Close).
func (d *Device) releaseScratch() {
	for _, b := range d.scratch.bufs {
		b.Release()
	}
	for _, b := range d.scratch.retired {
		b.Release()
	}
	d.scratch = scratch{}
}
