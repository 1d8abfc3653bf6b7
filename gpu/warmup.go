package gpu

import "time"

// WarmUp tells when repeated runs of the same work have warmed up: after a
// run that compiled no new pipeline and was no faster than the one before.
// One run is not enough on lavapipe: work whose shapes change between runs
// (iBOT's masked patches) compiles new pipelines on later runs, and on a
// cold shader cache lavapipe keeps working for several runs after its
// compiles (a demo training step timed 5-7 s, against 2 s warm).
//
//	w := gpu.NewWarmUp(d, 20)
//	err := w.Repeat(run) // or Start, run, Warm in a loop of one's own
//	secs := w.Last()
type WarmUp struct {
	d          *Device
	max, runs  int
	pipelines  int
	start      time.Time
	prev, last float64
	now        func() time.Time // the clock (tests set it)
}

// NewWarmUp returns a WarmUp on d that gives up waiting after max runs.
func NewWarmUp(d *Device, max int) *WarmUp {
	return &WarmUp{d: d, max: max, prev: -1, now: time.Now}
}

// Start marks the beginning of a run.
func (w *WarmUp) Start() {
	w.pipelines = w.d.Pipelines()
	w.start = w.now()
}

// Warm waits for the device to finish the run begun by Start and reports
// whether the runs have warmed up (or max runs are done).
func (w *WarmUp) Warm() bool {
	w.d.Sync()
	w.last = w.now().Sub(w.start).Seconds()
	w.runs++
	warm := w.d.Pipelines() == w.pipelines && w.prev >= 0 && w.last > 0.9*w.prev
	w.prev = w.last
	return warm || w.runs >= w.max
}

// Repeat calls run until the runs have warmed up (Warm) and returns the
// first error of run.
func (w *WarmUp) Repeat(run func() error) error {
	for {
		w.Start()
		if err := run(); err != nil {
			return err
		}
		if w.Warm() {
			return nil
		}
	}
}

// Last is the duration in seconds of the last run Warm saw.
func (w *WarmUp) Last() float64 { return w.last }

// Runs is the number of runs Warm has seen.
func (w *WarmUp) Runs() int { return w.runs }
