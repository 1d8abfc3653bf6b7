//go:build js

package gpu

import (
	"time"

	"github.com/cogentcore/webgpu/wgpu"
)

// RunTimed submits, waits, and returns the wall time: the browser backend
// has no timestamp queries.
func (r *Recorder) RunTimed() (time.Duration, error) { return r.Run() }

// Sync waits until the GPU has finished all submitted work
// (queue.onSubmittedWorkDone; the js backend's Poll does nothing).
func (d *Device) Sync() {
	if d.jsQueue != nil {
		d.jsQueue()
	}
}

// syncBeforeMap does nothing: a browser's mapAsync settles only after the
// work submitted before it, and waiting twice costs a round trip to the
// GPU process.
func (d *Device) syncBeforeMap() {}

// submitStamped reports false: the js backend has no timestamp queries.
func (r *Recorder) submitStamped(*Profile) (bool, error) { return false, nil }

// awaitMap does nothing: the js backend's MapAsync returns once the
// buffer is mapped, its callback called.
func (d *Device) awaitMap(*wgpu.BufferMapAsyncStatus) {}

// submitIndexed submits cmd; the browser's queue has no submission index.
func (d *Device) submitIndexed(cmd *wgpu.CommandBuffer) wgpu.SubmissionIndex {
	d.queue.Submit(cmd)
	return 0
}

// awaitSubmission does nothing: MapAsync waits for the work itself.
func (d *Device) awaitSubmission(wgpu.SubmissionIndex) {}
