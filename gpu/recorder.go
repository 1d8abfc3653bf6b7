package gpu

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cogentcore/webgpu/wgpu"
)

// MaxParams is the number of 32-bit words a kernel's uniform block may hold.
const MaxParams = 64

// maxEncoded bounds the dispatches of one command buffer; a longer
// recording is submitted in parts. lavapipe crashed executing a command
// buffer of 32768 dispatches with distinct bind groups, or 100000 with one
// (TestLongRecordingsInParts).
const maxEncoded = 1 << 14

// Recorder collects dispatches and copies and submits them as one command
// buffer, with consecutive dispatches sharing one compute pass. Errors are
// caught in Go before anything reaches the GPU: the first one is kept, later
// calls do nothing, and Submit returns it without submitting.
type Recorder struct {
	d        *Device
	ops      []op
	uniforms []uint32
	err      error
}

type op struct {
	k       *compiled
	profile string // Kernel.Profile
	groups  [3]uint32
	slot    int // uniform slot index
	bufs    []*Tensor
	// copy when k == nil
	src, dst *Tensor
}

// Record starts an empty recording on d.
func (d *Device) Record() *Recorder { return &Recorder{d: d} }

// Device is the device the recorder records for.
func (r *Recorder) Device() *Device { return r.d }

// Err returns the first error recorded so far.
func (r *Recorder) Err() error { return r.err }

// Fail records err as the recording's error (if it is the first) and returns
// it; ops call it when their arguments are wrong so Submit refuses to run.
func (r *Recorder) Fail(err error) error {
	if r.err == nil {
		r.err = err
	}
	return err
}

// U32 and F32 build uniform parameter words.
func U32(v int) uint32     { return uint32(v) }
func F32(v float32) uint32 { return math.Float32bits(v) }

// Groups splits n invocations of a workgroup of size wg into a grid whose
// dimensions stay under the device limit. Kernels recover the linear index
// with flat_id() from common.wgsl.
func (r *Recorder) Groups(n, wg int) [3]uint32 {
	g := (n + wg - 1) / wg
	max := int(r.d.limits.MaxWorkgroupsPerDim)
	if g <= max {
		return [3]uint32{uint32(g), 1, 1}
	}
	y := (g + max - 1) / max
	x := (g + y - 1) / y
	return [3]uint32{uint32(x), uint32(y), 1}
}

// Dispatch records one kernel launch with uniform params and storage tensors
// bound in order to bindings 1..n.
func (r *Recorder) Dispatch(k Kernel, groups [3]uint32, params []uint32, bufs ...*Tensor) error {
	if r.err != nil {
		return r.err
	}
	c, err := r.d.compile(k)
	if err != nil {
		return r.Fail(err)
	}
	if err := r.check(c, groups, params, bufs); err != nil {
		return r.Fail(err)
	}
	slot := len(r.uniforms) / MaxParams
	words := make([]uint32, MaxParams)
	copy(words, params)
	r.uniforms = append(r.uniforms, words...)
	r.ops = append(r.ops, op{k: c, profile: k.Profile, groups: groups, slot: slot, bufs: append([]*Tensor(nil), bufs...)})
	return nil
}

func (r *Recorder) check(c *compiled, groups [3]uint32, params []uint32, bufs []*Tensor) error {
	l := r.d.limits
	if len(params) > MaxParams {
		return fmt.Errorf("kernel %s: %d parameter words, at most %d", c.name, len(params), MaxParams)
	}
	if len(bufs) != len(c.access) {
		return fmt.Errorf("kernel %s: %d tensors bound, it takes %d", c.name, len(bufs), len(c.access))
	}
	for i, g := range groups {
		if g == 0 {
			return fmt.Errorf("kernel %s: empty dispatch %v", c.name, groups)
		}
		if g > l.MaxWorkgroupsPerDim {
			return fmt.Errorf("kernel %s: %d workgroups on axis %d exceed the device limit %d", c.name, g, i, l.MaxWorkgroupsPerDim)
		}
	}
	for i, t := range bufs {
		if t == nil || t.Buf == nil || t.Buf.buf == nil {
			return fmt.Errorf("kernel %s: binding %d is nil or released", c.name, i+1)
		}
		if t.Buf.dev != r.d {
			return fmt.Errorf("kernel %s: binding %d belongs to another device", c.name, i+1)
		}
		if c.access[i] == Uniform {
			if t.Off%uint64(l.UniformOffsetAlign) != 0 || t.Bytes() > l.MaxUniformBinding || t.Bytes()%16 != 0 {
				return fmt.Errorf("kernel %s: uniform binding %d %s (bytes %d to %d) must start on a multiple of %d, span a multiple of 16 bytes and at most %d",
					c.name, i+1, t, t.Off, t.Off+t.Bytes(), l.UniformOffsetAlign, l.MaxUniformBinding)
			}
		} else if t.Off%uint64(l.StorageOffsetAlign) != 0 {
			return fmt.Errorf("kernel %s: binding %d %s starts at byte %d, not a multiple of the device's storage alignment %d",
				c.name, i+1, t, t.Off, l.StorageOffsetAlign)
		}
		if t.Bytes() > l.MaxStorageBinding {
			return fmt.Errorf("kernel %s: binding %d %s is %d bytes, over the device's max storage binding of %d bytes: split the work",
				c.name, i+1, t, t.Bytes(), l.MaxStorageBinding)
		}
		if t.Off+t.Bytes() > t.Buf.size {
			return fmt.Errorf("kernel %s: binding %d %s runs past its buffer", c.name, i+1, t)
		}
		// WebGPU forbids a buffer bound writable and bound again in the same dispatch.
		for j, u := range bufs[:i] {
			if u.Buf == t.Buf && (c.access[i] == ReadWrite || c.access[j] == ReadWrite) {
				return fmt.Errorf("kernel %s: bindings %d and %d share a buffer and one is written", c.name, j+1, i+1)
			}
		}
	}
	return nil
}

// Copy records a buffer-to-buffer copy of src into dst (same length).
func (r *Recorder) Copy(dst, src *Tensor) error {
	if r.err != nil {
		return r.err
	}
	if dst.Len() != src.Len() {
		return r.Fail(fmt.Errorf("copy %s to %s: lengths differ", src, dst))
	}
	if src.Off%4 != 0 || dst.Off%4 != 0 {
		return r.Fail(fmt.Errorf("copy %s to %s: unaligned offsets", src, dst))
	}
	if src.Buf == dst.Buf {
		// WebGPU's copyBufferToBuffer refuses any copy within one buffer.
		return r.Fail(fmt.Errorf("copy %s to %s: source and destination are the same buffer", src, dst))
	}
	r.ops = append(r.ops, op{src: src, dst: dst})
	return nil
}

// Len is the number of recorded operations.
func (r *Recorder) Len() int { return len(r.ops) }

// Submit encodes everything recorded and submits it. The recorder is empty
// afterwards and can be reused.
func (r *Recorder) Submit() error {
	if p := r.d.profile; p != nil {
		return r.submitProfiled(p)
	}
	return r.submit(nil)
}

// stamper brackets a recording with GPU timestamps (native only).
type stamper interface {
	begin(enc *wgpu.CommandEncoder) error
	end(enc *wgpu.CommandEncoder) error
}

func (r *Recorder) submit(ts stamper) error {
	defer r.reset()
	if r.err != nil {
		return r.err
	}
	if len(r.ops) == 0 {
		return nil
	}
	d := r.d
	ubuf, err := d.uniformArena(uint64(len(r.uniforms)) * 4)
	if err != nil {
		return err
	}
	if err := d.writeBuffer(ubuf, 0, wgpu.ToBytes(r.uniforms)); err != nil {
		return fmt.Errorf("upload kernel parameters: %w", err)
	}
	enc, err := d.dev.CreateCommandEncoder(nil)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	defer func() {
		if enc != nil {
			enc.Release()
		}
	}()
	if ts != nil {
		if err := ts.begin(enc); err != nil {
			return err
		}
	}
	var pass *wgpu.ComputePassEncoder
	endPass := func() {
		if pass != nil {
			pass.End()
			pass.Release()
			pass = nil
		}
	}
	// flush submits what is encoded so far and starts a new encoder: the
	// bind-group cache can then start over without releasing a group that
	// an unsubmitted pass sets. Groups are released only once the GPU is
	// idle (Sync): lavapipe crashed executing a submitted command buffer
	// whose groups had been released (50000 distinct groups in one recording).
	encoded := 0 // dispatches in enc
	flush := func() error {
		endPass()
		cmd, err := enc.Finish(nil)
		if err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		d.queue.Submit(cmd)
		cmd.Release()
		enc.Release()
		enc, encoded = nil, 0
		if enc, err = d.dev.CreateCommandEncoder(nil); err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		return nil
	}
	for _, o := range r.ops {
		if o.k != nil {
			full := d.bindsFull()
			// Timestamps bracket one encoder: a profiled recording is not split.
			if ts == nil && encoded > 0 && (full || encoded >= maxEncoded) {
				if err := flush(); err != nil {
					return err
				}
			}
			if full && encoded == 0 {
				d.Sync()
				d.resetBinds()
			}
		}
		if o.k == nil {
			endPass()
			if err := enc.CopyBufferToBuffer(o.src.Buf.buf, o.src.Off, o.dst.Buf.buf, o.dst.Off, o.src.Bytes()); err != nil {
				return fmt.Errorf("submit copy: %w", err)
			}
			continue
		}
		bg, err := d.bindGroup(&o, ubuf)
		if err != nil {
			endPass()
			return fmt.Errorf("kernel %s: bind group: %w", o.k.name, err)
		}
		if pass == nil {
			pass = enc.BeginComputePass(nil)
		}
		pass.SetPipeline(o.k.pipeline)
		pass.SetBindGroup(0, bg, dynamicOffsets(&o))
		pass.DispatchWorkgroups(o.groups[0], o.groups[1], o.groups[2])
		encoded++
	}
	endPass()
	if ts != nil {
		if err := ts.end(enc); err != nil {
			return err
		}
	}
	cmd, err := enc.Finish(nil)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	d.queue.Submit(cmd)
	cmd.Release()
	return nil
}

// Run submits and waits for the GPU to finish, returning the wall time
// (which includes encoding and submission). RunTimed measures the GPU alone.
func (r *Recorder) Run() (time.Duration, error) {
	start := time.Now()
	if err := r.Submit(); err != nil {
		return 0, err
	}
	r.d.Sync()
	return time.Since(start), nil
}

func (r *Recorder) reset() {
	r.ops = r.ops[:0]
	r.uniforms = r.uniforms[:0]
	r.err = nil
}

// uniformArena returns a uniform buffer of at least size bytes. Writes to it
// are queue-ordered, so a later recording may reuse it while an earlier one
// is still in flight.
func (d *Device) uniformArena(size uint64) (*wgpu.Buffer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.uniform != nil && d.uniformSize >= size {
		return d.uniform, nil
	}
	n := uint64(64 << 10)
	for n < size {
		n *= 2
	}
	if n > d.limits.MaxBufferSize {
		return nil, errors.New("too many dispatches in one recording: split it")
	}
	b, err := d.dev.CreateBuffer(&wgpu.BufferDescriptor{Label: "params", Size: n, Usage: wgpu.BufferUsageUniform | wgpu.BufferUsageCopyDst})
	if err != nil {
		return nil, fmt.Errorf("allocate kernel parameter arena: %w", err)
	}
	if d.uniform != nil {
		d.binds.reset() // every cached group binds the old arena
		d.uniform.Release()
	}
	d.uniform, d.uniformSize = b, n
	return b, nil
}
