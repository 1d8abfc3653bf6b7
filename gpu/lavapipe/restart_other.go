//go:build !linux

package lavapipe

import "os"

// Restart does nothing: the private lavapipe is a Linux install.
func Restart() error { return nil }

// Executable is os.Executable: without Restart nothing runs on a loader.
func Executable() (string, error) { return os.Executable() }
