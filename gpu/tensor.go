package gpu

import (
	"fmt"
	"math"
	"strings"

	"github.com/cogentcore/webgpu/wgpu"
)

// Buffer is one GPU allocation. Tensors are views into it.
type Buffer struct {
	dev   *Device
	buf   *wgpu.Buffer
	size  uint64 // bytes (js has no Buffer.GetSize)
	label string
}

// Size is the buffer's size in bytes.
func (b *Buffer) Size() uint64 { return b.size }

// Release frees the GPU memory. Views into the buffer become invalid.
func (b *Buffer) Release() {
	if b.buf != nil {
		b.dev.mu.Lock()
		b.dev.binds.dropBuffer(b)
		b.dev.mu.Unlock()
		b.buf.Destroy()
		b.buf.Release()
		b.buf = nil
		b.dev.mem.free(b)
	}
}

// Tensor is a dense f32 (or u32) array: a shape and a byte offset into a Buffer.
type Tensor struct {
	Buf   *Buffer
	Off   uint64 // byte offset into Buf; a multiple of the storage alignment when bound
	Shape []int
}

// Len is the number of elements.
func (t *Tensor) Len() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Bytes is the tensor's size in bytes (4 per element).
func (t *Tensor) Bytes() uint64 { return uint64(t.Len()) * 4 }

// Dim returns size of axis i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

func (t *Tensor) String() string {
	if t == nil {
		return "<nil>"
	}
	s := make([]string, len(t.Shape))
	for i, v := range t.Shape {
		s[i] = fmt.Sprint(v)
	}
	return "[" + strings.Join(s, "x") + "]"
}

// Reshape returns a view with another shape of the same length.
func (t *Tensor) Reshape(shape ...int) (*Tensor, error) {
	v := &Tensor{Buf: t.Buf, Off: t.Off, Shape: append([]int(nil), shape...)}
	if v.Len() != t.Len() {
		return nil, fmt.Errorf("reshape %s to %s: %d elements vs %d", t, v, t.Len(), v.Len())
	}
	return v, nil
}

// View returns the sub-tensor of the given shape starting at element off.
// Views that kernels bind must start on the device's storage offset
// alignment (256 bytes = 64 floats on most devices).
func (t *Tensor) View(off int, shape ...int) (*Tensor, error) {
	v := &Tensor{Buf: t.Buf, Off: t.Off + uint64(off)*4, Shape: append([]int(nil), shape...)}
	if off < 0 || off+v.Len() > t.Len() {
		return nil, fmt.Errorf("view %s at element %d: outside %s", v, off, t)
	}
	return v, nil
}

func checkShape(op string, shape []int) error {
	n := 1
	for _, s := range shape {
		if s <= 0 {
			return fmt.Errorf("%s: shape %v has a zero or negative dimension", op, shape)
		}
		n *= s
		if n > math.MaxInt32 {
			return fmt.Errorf("%s: shape %v has more than 2^31 elements", op, shape)
		}
	}
	return nil
}

// NewBuffer allocates size bytes of zeroed GPU memory usable as storage, as
// a uniform block and as a copy source and destination.
func (d *Device) NewBuffer(label string, size uint64) (*Buffer, error) {
	if size == 0 {
		return nil, fmt.Errorf("allocate %q: zero-size buffer", label)
	}
	size = (size + 255) &^ 255 // whole 256-byte blocks, the coarsest binding alignment, so a binding may end where the buffer does
	if size > d.limits.MaxBufferSize {
		return nil, fmt.Errorf("allocate %q: %d bytes exceeds the device's max buffer size of %d bytes (%s)",
			label, size, d.limits.MaxBufferSize, d.info.Name)
	}
	b, err := d.dev.CreateBuffer(&wgpu.BufferDescriptor{
		Label: label,
		Size:  size,
		Usage: wgpu.BufferUsageStorage | wgpu.BufferUsageUniform | wgpu.BufferUsageCopySrc | wgpu.BufferUsageCopyDst,
	})
	if err != nil {
		return nil, fmt.Errorf("allocate %q (%d bytes): %w", label, size, err)
	}
	buf := &Buffer{dev: d, buf: b, size: size, label: label}
	d.mem.alloc(buf)
	return buf, nil
}

// NewTensor allocates a zeroed tensor in a buffer of its own.
func (d *Device) NewTensor(label string, shape ...int) (*Tensor, error) {
	if err := checkShape("new tensor "+label, shape); err != nil {
		return nil, err
	}
	t := &Tensor{Shape: append([]int(nil), shape...)}
	b, err := d.NewBuffer(label, t.Bytes())
	if err != nil {
		return nil, err
	}
	t.Buf = b
	return t, nil
}

// Upload allocates a tensor holding data.
func (d *Device) Upload(label string, data []float32, shape ...int) (*Tensor, error) {
	t, err := d.NewTensor(label, shape...)
	if err != nil {
		return nil, err
	}
	if t.Len() != len(data) {
		t.Buf.Release()
		return nil, fmt.Errorf("upload %q: %d values for shape %v", label, len(data), shape)
	}
	if err := d.Write(t, data); err != nil {
		t.Buf.Release()
		return nil, err
	}
	return t, nil
}

// Write copies data into t (queued before any later submission).
func (d *Device) Write(t *Tensor, data []float32) error {
	if len(data) != t.Len() {
		return fmt.Errorf("write %s: %d values", t, len(data))
	}
	return d.WriteBytes(t, wgpu.ToBytes(data))
}

// WriteU32 copies unsigned integers into t.
func (d *Device) WriteU32(t *Tensor, data []uint32) error {
	if len(data) != t.Len() {
		return fmt.Errorf("write %s: %d values", t, len(data))
	}
	return d.WriteBytes(t, wgpu.ToBytes(data))
}

// WriteBytes copies raw bytes to the start of t.
func (d *Device) WriteBytes(t *Tensor, data []byte) error {
	if uint64(len(data)) > t.Bytes() || t.Off+uint64(len(data)) > t.Buf.size {
		return fmt.Errorf("write %s: %d bytes do not fit", t, len(data))
	}
	if err := d.writeBuffer(t.Buf.buf, t.Off, data); err != nil {
		return fmt.Errorf("write %s: %w", t, err)
	}
	return nil
}

// writeBuffer queues a write of data into buf at offset.
func (d *Device) writeBuffer(buf *wgpu.Buffer, offset uint64, data []byte) error {
	if d.jsWrite != nil {
		d.jsWrite(buf, offset, data)
		return nil
	}
	return d.queue.WriteBuffer(buf, offset, data)
}

// Read copies t back to the CPU. It waits for all submitted work.
func (d *Device) Read(t *Tensor) ([]float32, error) {
	b, err := d.ReadBytes(t)
	if err != nil {
		return nil, err
	}
	return words[float32](b), nil
}

// ReadAll copies several tensors back to the CPU through one staging
// buffer: one submission and one wait, where a Read each would wait on
// the device once per tensor (a round trip to the GPU process costs about
// 100 ms in Firefox).
func (d *Device) ReadAll(ts ...*Tensor) ([][]float32, error) {
	out := make([][]float32, len(ts))
	err := d.readMapped(ts, func(i int, b []byte) { out[i] = words[float32](b) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadTopK copies a top-k result back in one readback: the values (f32)
// and their indices (u32), as nn.TopK writes them.
func (d *Device) ReadTopK(values, indices *Tensor) ([]float32, []uint32, error) {
	var v []float32
	var idx []uint32
	err := d.readMapped([]*Tensor{values, indices}, func(i int, b []byte) {
		if i == 0 {
			v = words[float32](b)
		} else {
			idx = words[uint32](b)
		}
	})
	return v, idx, err
}

// ReadU32 copies a tensor of unsigned integers back to the CPU.
func (d *Device) ReadU32(t *Tensor) ([]uint32, error) {
	b, err := d.ReadBytes(t)
	if err != nil {
		return nil, err
	}
	return words[uint32](b), nil
}

// ReadBytes copies t's bytes back through a staging buffer.
func (d *Device) ReadBytes(t *Tensor) ([]byte, error) {
	var out []byte
	err := d.readMapped([]*Tensor{t}, func(_ int, b []byte) { out = append([]byte(nil), b...) })
	return out, err
}

// words copies read-back bytes into 32-bit words.
func words[T float32 | uint32](b []byte) []T {
	out := make([]T, len(b)/4)
	copy(out, wgpu.FromBytes[T](b))
	return out
}

// readMapped copies the tensors' bytes back through one staging buffer,
// each at its own offset, and hands each tensor's mapped bytes to visit,
// which must copy what it keeps: they are unmapped when it returns.
func (d *Device) readMapped(ts []*Tensor, visit func(i int, b []byte)) error {
	name := func() string {
		if len(ts) == 1 {
			return ts[0].String()
		}
		return fmt.Sprintf("%d tensors", len(ts))
	}
	offs := stagingOffsets(ts)
	size := offs[len(ts)]
	if size == 0 {
		for i := range ts {
			visit(i, nil)
		}
		return nil
	}
	staging, done, err := d.readback.get(d, size, wgpu.BufferUsageMapRead|wgpu.BufferUsageCopyDst)
	if err != nil {
		return fmt.Errorf("read %s: %w", name(), err)
	}
	defer done()
	if _, err := d.copyOut(ts, staging, offs); err != nil {
		return fmt.Errorf("read %s: %w", name(), err)
	}
	if err := d.mapStaging(staging, wgpu.MapModeRead, size); err != nil {
		return fmt.Errorf("read %s: %w", name(), err)
	}
	mapped := staging.GetMappedRange(0, uint(size))
	for i := range ts {
		visit(i, mapped[offs[i]:offs[i+1]])
	}
	staging.Unmap()
	return nil
}
