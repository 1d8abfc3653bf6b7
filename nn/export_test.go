//go:build !js

package nn

import "github.com/webdino/webdino/gpu"

// TestDevice gives external test packages (nn_test) the shared device.
func TestDevice() *gpu.Device { return dev }
