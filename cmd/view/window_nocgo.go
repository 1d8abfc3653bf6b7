//go:build !cgo

package main

import "errors"

// window needs cgo (GLFW and OpenGL are C libraries); without it, as under
// GOOS=js where the browser viewer (wasm/) takes this command's place,
// only --screenshot works.
func window(*view) error {
	return errors.New("this build has no window (GLFW needs cgo): use --screenshot FILE.png")
}
