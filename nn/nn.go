// Package nn holds webdino's layers as explicit forward/backward pairs of GPU
// ops. Every op records onto a gpu.Recorder, checks shapes in Go first and
// returns an error naming the op and the shapes, so a bad call never reaches
// the GPU (where a validation error would abort the process).
//
// Package nn/ref holds the float64 CPU reference every op is tested against.
package nn

import (
	"fmt"

	"github.com/webdino/webdino/gpu"
)

// Activation names an elementwise function fused into an epilogue.
type Activation string

const (
	NoAct Activation = ""
	GELU  Activation = "gelu"
)

// shapeErr fails the recording with an error naming the op.
func shapeErr(rec *gpu.Recorder, op string, format string, args ...any) error {
	return rec.Fail(fmt.Errorf("%s: %s", op, fmt.Sprintf(format, args...)))
}

// notNil fails the recording when a required tensor is missing.
func notNil(rec *gpu.Recorder, op string, names []string, ts ...*gpu.Tensor) error {
	for i, t := range ts {
		if t == nil {
			return rec.Fail(fmt.Errorf("%s: tensor %s is nil", op, names[i]))
		}
	}
	return nil
}
