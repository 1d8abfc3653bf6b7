package gpu

import (
	"fmt"
	"slices"

	"github.com/cogentcore/webgpu/wgpu"
)

// ReadInto copies the tensors back into dst, one after another, as ReadAll
// does but without allocating: for readbacks of tens of millions of values
// every step, where fresh memory costs more than the copy (page faults).
func (d *Device) ReadInto(dst []float32, ts ...*Tensor) error {
	offs := stagingOffsets(ts)
	if n := offs[len(ts)] / 4; n != uint64(len(dst)) {
		return fmt.Errorf("read %d tensors of %d values into %d", len(ts), n, len(dst))
	}
	return d.readMapped(ts, func(i int, b []byte) {
		copy(dst[offs[i]/4:], wgpu.FromBytes[float32](b))
	})
}

// WriteAll copies src into the tensors, one after another: the reverse of
// ReadInto, through one staging buffer and one submission, where a Write
// each would go through wgpu's own staging memory tensor by tensor. It
// waits for the work submitted before (the staging buffer is reused).
func (d *Device) WriteAll(src []float32, ts ...*Tensor) error {
	offs := stagingOffsets(ts)
	size := offs[len(ts)]
	if size != 4*uint64(len(src)) {
		return fmt.Errorf("write %d values into %d tensors of %d", len(src), len(ts), size/4)
	}
	if size == 0 {
		return nil
	}
	if d.jsWrite != nil {
		// The browser's writeBuffer is the one copy there is.
		for _, t := range ts {
			if err := d.Write(t, src[:t.Len()]); err != nil {
				return err
			}
			src = src[t.Len():]
		}
		return nil
	}
	staging, done, err := d.upload.get(d, size, wgpu.BufferUsageMapWrite|wgpu.BufferUsageCopySrc)
	if err != nil {
		return fmt.Errorf("write %d tensors: %w", len(ts), err)
	}
	defer done()
	if err := d.mapStaging(staging, wgpu.MapModeWrite, size); err != nil {
		return fmt.Errorf("write %d tensors: %w", len(ts), err)
	}
	copy(wgpu.FromBytes[float32](staging.GetMappedRange(0, uint(size))), src)
	staging.Unmap()
	enc, err := d.dev.CreateCommandEncoder(nil)
	if err != nil {
		return fmt.Errorf("write %d tensors: %w", len(ts), err)
	}
	defer enc.Release()
	for i, t := range ts {
		if t.Bytes() == 0 {
			continue
		}
		if err := enc.CopyBufferToBuffer(staging, offs[i], t.Buf.buf, t.Off, t.Bytes()); err != nil {
			return fmt.Errorf("write %s: %w", t, err)
		}
	}
	cmd, err := enc.Finish(nil)
	if err != nil {
		return fmt.Errorf("write %d tensors: %w", len(ts), err)
	}
	defer cmd.Release()
	d.queue.Submit(cmd)
	return nil
}

// StartRead starts copying the tensors back and returns at once: the copy
// runs after the work submitted so far, and Into collects it while later
// work runs. Data-parallel training reads its gradients so, part by part,
// while the GPU computes the rest. Several reads may be in flight at once,
// each in a staging buffer of its own (kept for the next ones once Into or
// Discard gives it back); calls from several goroutines must be serialised.
func (d *Device) StartRead(ts ...*Tensor) (*PendingRead, error) {
	p := &PendingRead{d: d, ts: ts, offs: stagingOffsets(ts)}
	size := p.offs[len(ts)]
	if size == 0 {
		return p, nil
	}
	staging, done, err := d.pending.get(d, size, wgpu.BufferUsageMapRead|wgpu.BufferUsageCopyDst)
	if err != nil {
		return nil, fmt.Errorf("start reading %d tensors: %w", len(ts), err)
	}
	if p.index, err = d.copyOut(ts, staging, p.offs); err != nil {
		done()
		return nil, fmt.Errorf("start reading %d tensors: %w", len(ts), err)
	}
	p.staging, p.done = staging, done
	return p, nil
}

// stagingOffsets are the byte offsets of the tensors packed one after
// another, and their total at the end.
func stagingOffsets(ts []*Tensor) []uint64 {
	offs := make([]uint64, len(ts)+1)
	for i, t := range ts {
		offs[i+1] = offs[i] + t.Bytes() // float32 and uint32: multiples of 4, as copies need
	}
	return offs
}

// copyOut submits copies of the tensors into staging at offs and returns
// the submission's index.
func (d *Device) copyOut(ts []*Tensor, staging *wgpu.Buffer, offs []uint64) (wgpu.SubmissionIndex, error) {
	enc, err := d.dev.CreateCommandEncoder(nil)
	if err != nil {
		return 0, err
	}
	defer enc.Release()
	for i, t := range ts {
		if t.Bytes() == 0 {
			continue
		}
		if err := enc.CopyBufferToBuffer(t.Buf.buf, t.Off, staging, offs[i], t.Bytes()); err != nil {
			return 0, fmt.Errorf("%s: %w", t, err)
		}
	}
	cmd, err := enc.Finish(nil)
	if err != nil {
		return 0, err
	}
	defer cmd.Release()
	return d.submitIndexed(cmd), nil
}

// PendingRead is a readback in flight (StartRead).
type PendingRead struct {
	d       *Device
	ts      []*Tensor
	offs    []uint64
	staging *wgpu.Buffer
	done    func()
	index   wgpu.SubmissionIndex // of the copy
	mapped  bool                 // Wait has mapped staging
	err     error                // Wait's
}

// Wait waits for the copy, not for work submitted after StartRead.
//
// The buffer is mapped only once the copy is done: cogentcore/webgpu
// passes the map callback's handle as a pointer into memory that nothing
// keeps alive, so a map left pending while the garbage collector runs
// calls back through a freed handle (seen with two replicas in one process).
func (p *PendingRead) Wait() error {
	if p.staging == nil || p.mapped || p.err != nil {
		return p.err
	}
	p.d.awaitSubmission(p.index)
	status := wgpu.BufferMapAsyncStatusUnknown
	if err := p.staging.MapAsync(wgpu.MapModeRead, 0, p.offs[len(p.ts)], func(s wgpu.BufferMapAsyncStatus) { status = s }); err != nil {
		p.err = fmt.Errorf("read %d tensors: map: %w", len(p.ts), err)
		return p.err
	}
	p.d.awaitMap(&status)
	if status != wgpu.BufferMapAsyncStatusSuccess {
		p.err = fmt.Errorf("read %d tensors: map failed with status %v", len(p.ts), status)
		return p.err
	}
	p.mapped = true
	return nil
}

// Into waits for the copy and copies the tensors into dst, one after
// another, as ReadInto does.
func (p *PendingRead) Into(dst []float32) error {
	if p.offs[len(p.ts)] != 4*uint64(len(dst)) {
		p.Discard()
		return fmt.Errorf("read %d tensors of %d values into %d", len(p.ts), p.offs[len(p.ts)]/4, len(dst))
	}
	if p.staging == nil {
		return nil
	}
	defer p.Discard()
	if err := p.Wait(); err != nil {
		return err
	}
	copy(dst, wgpu.FromBytes[float32](p.staging.GetMappedRange(0, uint(len(dst)*4))))
	return nil
}

// Discard gives the staging buffer back without reading it.
func (p *PendingRead) Discard() {
	if p.staging == nil {
		return
	}
	if p.mapped {
		p.staging.Unmap()
	}
	p.done()
	p.staging = nil
}

// mapStaging maps the first size bytes of a staging buffer once the work
// submitted before has run.
func (d *Device) mapStaging(b *wgpu.Buffer, mode wgpu.MapMode, size uint64) error {
	d.syncBeforeMap()
	status := wgpu.BufferMapAsyncStatusUnknown
	if err := b.MapAsync(mode, 0, size, func(s wgpu.BufferMapAsyncStatus) { status = s }); err != nil {
		return fmt.Errorf("map: %w", err)
	}
	d.dev.Poll(true, nil)
	if status != wgpu.BufferMapAsyncStatusSuccess {
		return fmt.Errorf("map failed with status %v", status)
	}
	return nil
}

// keptStaging is the largest staging buffer a device keeps between
// transfers (one each for readbacks, WriteAll and StartRead). Training with
// replicas reads its gradients back and writes them again every step (176
// MB for ViT-S/14); a fresh buffer each time costs more than the copy, in
// allocation and first-touch page faults.
const keptStaging = 256 << 20

// keptBuffer is a staging buffer kept from one transfer to the next.
type keptBuffer struct {
	buf  *wgpu.Buffer
	size uint64
}

// get returns a buffer of at least size bytes and the function to call
// when done with it: the kept one, grown as needed, or for transfers over
// keptStaging a buffer of their own.
func (k *keptBuffer) get(d *Device, size uint64, usage wgpu.BufferUsage) (*wgpu.Buffer, func(), error) {
	if k.buf != nil && k.size >= size {
		return k.buf, func() {}, nil
	}
	b, err := d.dev.CreateBuffer(&wgpu.BufferDescriptor{Label: "staging", Size: size, Usage: usage})
	if err != nil {
		return nil, nil, err
	}
	if size > keptStaging {
		return b, b.Release, nil
	}
	k.release()
	k.buf, k.size = b, size
	return b, func() {}, nil
}

func (k *keptBuffer) release() {
	if k.buf != nil {
		k.buf.Release()
		k.buf, k.size = nil, 0
	}
}

// stagingPool keeps staging buffers for transfers that are in flight at
// the same time: a buffer taken is lent out until its done function runs.
type stagingPool struct {
	free []*keptBuffer
	lent []*keptBuffer
}

// get returns a buffer of at least size bytes, one no other transfer holds,
// and the function that gives it back.
func (p *stagingPool) get(d *Device, size uint64, usage wgpu.BufferUsage) (*wgpu.Buffer, func(), error) {
	k := &keptBuffer{}
	if n := len(p.free); n > 0 {
		k, p.free = p.free[n-1], p.free[:n-1]
	}
	b, done, err := k.get(d, size, usage)
	if err != nil {
		p.free = append(p.free, k)
		return nil, nil, err
	}
	p.lent = append(p.lent, k)
	return b, func() {
		done()
		p.lent = slices.DeleteFunc(p.lent, func(l *keptBuffer) bool { return l == k })
		p.free = append(p.free, k)
	}, nil
}

// release frees every buffer, those still lent out included (the device
// is closing).
func (p *stagingPool) release() {
	for _, k := range append(p.free, p.lent...) {
		k.release()
	}
	p.free, p.lent = nil, nil
}
