package nn

import (
	"fmt"
	"sort"
	"strings"

	"github.com/webdino/webdino/gpu"
)

// paramAlign is the element alignment of every view in a flat buffer: 64
// floats = 256 bytes, the largest storage-offset alignment WebGPU allows, so
// any view can be bound by a kernel on any device.
const paramAlign = 64

// Layout places named tensors (parameters, or their gradients and optimizer
// moments, which share the layout) in flat buffers. Views never straddle two
// buffers; a new buffer starts when the current one would pass the chunk
// size, so models larger than one binding still fit (most fit in one).
type Layout struct {
	names   []string
	entries map[string]*entry
	chunks  []int // length in elements of each chunk
	chunk   int   // max elements per chunk
}

type entry struct {
	shape []int
	chunk int
	off   int // element offset in its chunk
	n     int
}

// NewLayout returns an empty layout whose buffers hold at most chunkBytes
// (use the device's max storage binding size, so a whole chunk can be bound).
func NewLayout(chunkBytes uint64) *Layout {
	return &Layout{entries: map[string]*entry{}, chunk: int(chunkBytes / 4)}
}

// Add places a tensor named name with the given shape after the previous ones.
func (l *Layout) Add(name string, shape ...int) error {
	if _, dup := l.entries[name]; dup {
		return fmt.Errorf("layout: %q added twice", name)
	}
	n := 1
	for _, s := range shape {
		if s <= 0 {
			return fmt.Errorf("layout: %q has shape %v", name, shape)
		}
		n *= s
	}
	padded := (n + paramAlign - 1) / paramAlign * paramAlign
	if padded > l.chunk {
		return fmt.Errorf("layout: %q (%d elements, %.0f MiB) is larger than one buffer of %d elements (%.0f MiB, the device's largest storage binding)",
			name, n, float64(n)*4/(1<<20), l.chunk, float64(l.chunk)*4/(1<<20))
	}
	if len(l.chunks) == 0 || l.chunks[len(l.chunks)-1]+padded > l.chunk {
		l.chunks = append(l.chunks, 0)
	}
	c := len(l.chunks) - 1
	l.entries[name] = &entry{shape: append([]int(nil), shape...), chunk: c, off: l.chunks[c], n: n}
	l.chunks[c] += padded
	l.names = append(l.names, name)
	return nil
}

// Names lists the tensors in layout order.
func (l *Layout) Names() []string { return append([]string(nil), l.names...) }

// Shape returns the shape of name, or nil.
func (l *Layout) Shape(name string) []int {
	if e, ok := l.entries[name]; ok {
		return append([]int(nil), e.shape...)
	}
	return nil
}

// Count is the number of elements, not counting alignment padding.
func (l *Layout) Count() int {
	n := 0
	for _, e := range l.entries {
		n += e.n
	}
	return n
}

// position is where name starts in the layout (chunk, element offset in
// it); for "" with end, the end of the last chunk, else the start of the
// first.
func (l *Layout) position(name string, end bool) (chunk, off int, err error) {
	if name == "" {
		if end && len(l.chunks) > 0 {
			return len(l.chunks) - 1, l.chunks[len(l.chunks)-1], nil
		}
		return 0, 0, nil
	}
	e, ok := l.entries[name]
	if !ok {
		return 0, 0, fmt.Errorf("layout: no tensor %q", name)
	}
	return e.chunk, e.off, nil
}

// Offset is the element offset where name starts when the chunks are laid
// end to end, padding included (as a copy of every chunk in order holds
// the tensors); for "", the length of all the chunks.
func (l *Layout) Offset(name string) (int, error) {
	c, off, err := l.position(name, true)
	for _, n := range l.chunks[:c] {
		off += n
	}
	return off, err
}

// Flat is a Layout allocated on a device: one buffer per chunk (usually one)
// and a view per name.
type Flat struct {
	Layout *Layout
	Chunks []*gpu.Tensor // each whole chunk, for ops over every element (EMA, all-reduce)
	views  map[string]*gpu.Tensor
}

// Alloc allocates zeroed buffers for the layout.
func (l *Layout) Alloc(dev *gpu.Device, label string) (*Flat, error) {
	f := &Flat{Layout: l, views: map[string]*gpu.Tensor{}}
	for i, n := range l.chunks {
		t, err := dev.NewTensor(fmt.Sprintf("%s/%d", label, i), n)
		if err != nil {
			f.Release()
			return nil, fmt.Errorf("allocate %s: %w", label, err)
		}
		f.Chunks = append(f.Chunks, t)
	}
	for _, name := range l.names {
		e := l.entries[name]
		v, err := f.Chunks[e.chunk].View(e.off, e.shape...)
		if err != nil {
			f.Release()
			return nil, err
		}
		f.views[name] = v
	}
	return f, nil
}

// Get returns the view of name; it panics on an unknown name, which is a
// programming error (names come from the model definition).
func (f *Flat) Get(name string) *gpu.Tensor {
	v, ok := f.views[name]
	if !ok {
		panic(fmt.Sprintf("flat buffer: no tensor %q", name))
	}
	return v
}

// Match returns the views whose names start with prefix, sorted by name:
// e.g. every tensor of one module for per-module gradient clipping.
func (f *Flat) Match(prefix string) []*gpu.Tensor {
	var names []string
	for n := range f.views {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]*gpu.Tensor, len(names))
	for i, n := range names {
		out[i] = f.views[n]
	}
	return out
}

// Span returns views that cover the layout from tensor from up to tensor
// to ("": from the start, or to the end), padding included, one per chunk
// it touches: a data-parallel trainer reads back the gradients of the
// layers whose backward pass is done while the GPU computes the others'.
func (f *Flat) Span(from, to string) ([]*gpu.Tensor, error) {
	c0, o0, err := f.Layout.position(from, false)
	if err != nil {
		return nil, err
	}
	c1, o1, err := f.Layout.position(to, true)
	if err != nil {
		return nil, err
	}
	if c1 < c0 || c1 == c0 && o1 < o0 {
		return nil, fmt.Errorf("flat buffer: span from %q to %q runs backwards", from, to)
	}
	var views []*gpu.Tensor
	for c := c0; c <= c1 && c < len(f.Chunks); c++ {
		lo, hi := 0, f.Layout.chunks[c]
		if c == c0 {
			lo = o0
		}
		if c == c1 {
			hi = o1
		}
		if hi == lo {
			continue
		}
		v, err := f.Chunks[c].View(lo, hi-lo)
		if err != nil {
			return nil, err
		}
		views = append(views, v)
	}
	return views, nil
}

// Release frees the buffers.
func (f *Flat) Release() {
	for _, c := range f.Chunks {
		c.Buf.Release()
	}
	f.Chunks = nil
}
