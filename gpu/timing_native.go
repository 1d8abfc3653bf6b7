//go:build !js

package gpu

import (
	"fmt"
	"time"

	"github.com/cogentcore/webgpu/wgpu"
)

// timestamps writes timestamps first and first+1 of set before and after a
// recording's passes and, when resolve is set, copies the pair to result.
type timestamps struct {
	set     *wgpu.QuerySet
	first   uint32
	resolve *wgpu.Buffer
	result  *Tensor
}

func (t *timestamps) begin(enc *wgpu.CommandEncoder) error { return enc.WriteTimestamp(t.set, t.first) }

func (t *timestamps) end(enc *wgpu.CommandEncoder) error {
	if err := enc.WriteTimestamp(t.set, t.first+1); err != nil {
		return err
	}
	if t.resolve == nil {
		return nil
	}
	if err := enc.ResolveQuerySet(t.set, t.first, 2, t.resolve, 0); err != nil {
		return err
	}
	return enc.CopyBufferToBuffer(t.resolve, 0, t.result.Buf.buf, t.result.Off, 16)
}

// stampOps is how many ops submitStamped times per query set: two queries
// each, under wgpu's 8192 per set.
const stampOps = 2048

// submitStamped times each of r's ops into p by GPU timestamps written
// before and after it, each op in a submission of its own. The submissions
// follow one another without waiting, so the times are the GPU's work and
// barriers, not launch latency. It reports false (and submits nothing)
// where the device has no timestamp queries.
func (r *Recorder) submitStamped(p *Profile) (bool, error) {
	if !r.d.timestamps {
		return false, nil
	}
	for lo := 0; lo < len(r.ops); lo += stampOps {
		if err := r.stampChunk(p, r.ops[lo:min(lo+stampOps, len(r.ops))]); err != nil {
			return true, err
		}
	}
	return true, nil
}

func (r *Recorder) stampChunk(p *Profile, ops []op) error {
	d := r.d
	n := uint32(2 * len(ops))
	set, err := d.dev.CreateQuerySet(&wgpu.QuerySetDescriptor{Type: wgpu.QueryTypeTimestamp, Count: n})
	if err != nil {
		return fmt.Errorf("profile: timestamp query set: %w", err)
	}
	defer set.Release()
	resolve, err := d.dev.CreateBuffer(&wgpu.BufferDescriptor{Size: uint64(n) * 8, Usage: wgpu.BufferUsageQueryResolve | wgpu.BufferUsageCopySrc})
	if err != nil {
		return fmt.Errorf("profile: timestamp buffer: %w", err)
	}
	defer resolve.Release()
	result, err := d.NewTensor("timestamps", int(2*n))
	if err != nil {
		return err
	}
	defer result.Buf.Release()
	names := make([]string, len(ops))
	for i, o := range ops {
		var one *Recorder
		one, names[i] = r.single(o)
		if err := one.submit(&timestamps{set: set, first: uint32(2 * i)}); err != nil {
			return err
		}
	}
	enc, err := d.dev.CreateCommandEncoder(nil)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer enc.Release()
	if err := enc.ResolveQuerySet(set, 0, n, resolve, 0); err != nil {
		return fmt.Errorf("profile: resolve timestamps: %w", err)
	}
	if err := enc.CopyBufferToBuffer(resolve, 0, result.Buf.buf, result.Off, uint64(n)*8); err != nil {
		return fmt.Errorf("profile: copy timestamps: %w", err)
	}
	cmd, err := enc.Finish(nil)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	d.queue.Submit(cmd)
	cmd.Release()
	words, err := d.ReadU32(result)
	if err != nil {
		return err
	}
	for i, name := range names {
		t0 := uint64(words[4*i]) | uint64(words[4*i+1])<<32
		t1 := uint64(words[4*i+2]) | uint64(words[4*i+3])<<32
		p.add(name, time.Duration(t1-min(t0, t1)))
	}
	return nil
}

// RunTimed submits, waits, and returns the GPU time of the recording from
// timestamp queries, or the wall time where the device has none. Timestamps
// are read as nanoseconds: wgpu-native v0.19 does not expose the timestamp
// period, which is 1 ns on lavapipe and on NVIDIA and AMD Vulkan drivers.
func (r *Recorder) RunTimed() (time.Duration, error) {
	d := r.d
	if !d.timestamps {
		return r.Run()
	}
	set, err := d.dev.CreateQuerySet(&wgpu.QuerySetDescriptor{Type: wgpu.QueryTypeTimestamp, Count: 2})
	if err != nil {
		r.reset()
		return 0, fmt.Errorf("timestamp query set: %w", err)
	}
	defer set.Release()
	resolve, err := d.dev.CreateBuffer(&wgpu.BufferDescriptor{Size: 16, Usage: wgpu.BufferUsageQueryResolve | wgpu.BufferUsageCopySrc})
	if err != nil {
		r.reset()
		return 0, fmt.Errorf("timestamp buffer: %w", err)
	}
	defer resolve.Release()
	result, err := d.NewTensor("timestamps", 4)
	if err != nil {
		r.reset()
		return 0, err
	}
	defer result.Buf.Release()
	if err := r.submit(&timestamps{set: set, resolve: resolve, result: result}); err != nil {
		return 0, err
	}
	words, err := d.ReadU32(result)
	if err != nil {
		return 0, err
	}
	t0 := uint64(words[0]) | uint64(words[1])<<32
	t1 := uint64(words[2]) | uint64(words[3])<<32
	if t1 < t0 {
		return 0, fmt.Errorf("timestamps went backwards (%d, %d)", t0, t1)
	}
	return time.Duration(t1 - t0), nil
}

// Sync waits until the GPU has finished all submitted work. It polls
// without blocking: wgpu-native's blocking poll gives up after 5 s and, with
// more work than that queued, was seen to crash the process on lavapipe.
//
// The pause between polls starts at 5 µs and doubles up to 500 µs, so a
// GPU's sub-millisecond recordings are seen done within a few microseconds
// (a 2 ms cap made short recordings look up to 2 ms long) while a long
// lavapipe recording costs at most 2000 wake-ups a second.
func (d *Device) Sync() {
	pause := 5 * time.Microsecond
	for !d.dev.Poll(false, nil) {
		time.Sleep(pause)
		pause = min(2*pause, 500*time.Microsecond)
	}
}

// syncBeforeMap waits for the queue natively: wgpu-native's blocking Poll
// gives up after 5 s (TestSyncOutlastsPollTimeout), so a buffer map after
// long work would fail without it.
func (d *Device) syncBeforeMap() { d.Sync() }

// awaitMap polls until a buffer map's callback has set *status.
func (d *Device) awaitMap(status *wgpu.BufferMapAsyncStatus) {
	pause := 5 * time.Microsecond
	for d.dev.Poll(false, nil); *status == wgpu.BufferMapAsyncStatusUnknown; d.dev.Poll(false, nil) {
		time.Sleep(pause)
		pause = min(2*pause, 500*time.Microsecond)
	}
}

// submitIndexed submits cmd and returns its submission index.
func (d *Device) submitIndexed(cmd *wgpu.CommandBuffer) wgpu.SubmissionIndex {
	return d.queue.Submit(cmd)
}

// awaitSubmission waits for the work of one submission, not for work
// submitted after it. A blocking Poll gives up after 5 s, so one that took
// a second or more is repeated: one that returns sooner saw the work done.
func (d *Device) awaitSubmission(i wgpu.SubmissionIndex) {
	idx := &wgpu.WrappedSubmissionIndex{Queue: d.queue, SubmissionIndex: i}
	for {
		start := time.Now()
		d.dev.Poll(true, idx)
		if time.Since(start) < time.Second {
			return
		}
	}
}
