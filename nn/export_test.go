//go:build !js

package nn

import "github.com/webdino/webdino/gpu"

// SharedDevice gives external test packages (nn_test) the shared device.
func SharedDevice() *gpu.Device { return dev }
