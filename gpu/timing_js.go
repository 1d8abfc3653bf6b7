//go:build js

package gpu

import "time"

// RunTimed submits, waits, and returns the wall time: the browser backend
// has no timestamp queries.
func (r *Recorder) RunTimed() (time.Duration, error) { return r.Run() }
