//go:build !js

package gpu

import (
	"fmt"
	"time"

	"github.com/cogentcore/webgpu/wgpu"
)

// timestamps writes a timestamp before and after a recording's passes.
type timestamps struct {
	d       *Device
	set     *wgpu.QuerySet
	resolve *wgpu.Buffer
	result  *Tensor
}

func (t *timestamps) begin(enc *wgpu.CommandEncoder) error { return enc.WriteTimestamp(t.set, 0) }

func (t *timestamps) end(enc *wgpu.CommandEncoder) error {
	if err := enc.WriteTimestamp(t.set, 1); err != nil {
		return err
	}
	if err := enc.ResolveQuerySet(t.set, 0, 2, t.resolve, 0); err != nil {
		return err
	}
	return enc.CopyBufferToBuffer(t.resolve, 0, t.result.Buf.buf, 0, 16)
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
	if err := r.submit(&timestamps{d: d, set: set, resolve: resolve, result: result}); err != nil {
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
