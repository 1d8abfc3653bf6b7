//go:build !js

package gpu

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cogentcore/webgpu/wgpu"

	"github.com/webdino/webdino/shaders"
)

// Open opens the first high-performance WebGPU adapter and a device on it.
// WEBDINO_LOG=debug|info|warn|error turns on wgpu-native's log.
func Open() (*Device, error) {
	switch os.Getenv("WEBDINO_LOG") {
	case "debug":
		wgpu.SetLogLevel(wgpu.LogLevelDebug)
	case "info":
		wgpu.SetLogLevel(wgpu.LogLevelInfo)
	case "warn":
		wgpu.SetLogLevel(wgpu.LogLevelWarn)
	case "error":
		wgpu.SetLogLevel(wgpu.LogLevelError)
	}
	inst := wgpu.CreateInstance(nil)
	if inst == nil {
		return nil, errors.New(noAdapterHelp)
	}
	adapter, err := inst.RequestAdapter(&wgpu.RequestAdapterOptions{PowerPreference: wgpu.PowerPreferenceHighPerformance})
	if err != nil || adapter == nil {
		inst.Release()
		if err != nil {
			return nil, fmt.Errorf("%s (%v)", noAdapterHelp, err)
		}
		return nil, errors.New(noAdapterHelp)
	}
	ai := adapter.GetInfo()
	info := Info{Name: ai.Name, Backend: ai.BackendType.String(), Type: ai.AdapterType.String(), Driver: ai.DriverDescription}
	if info.Name == "" || strings.HasPrefix(info.Name, "0x") {
		// wgpu-native v0.19 puts a PCI id here and the readable name in the description.
		info.Name = ai.DriverDescription
		info.Driver = ai.VendorName
	}

	req := requiredLimits(adapter.GetLimits().Limits)
	var features []wgpu.FeatureName
	timestamps := adapter.HasFeature(wgpu.FeatureNameTimestampQuery)
	if timestamps {
		features = append(features, wgpu.FeatureNameTimestampQuery)
	}
	dev, err := adapter.RequestDevice(&wgpu.DeviceDescriptor{
		Label:            "webdino",
		RequiredFeatures: features,
		RequiredLimits:   &wgpu.RequiredLimits{Limits: req},
	})
	if err != nil {
		adapter.Release()
		inst.Release()
		return nil, fmt.Errorf("open device on %s: %w", info.Name, err)
	}
	set, err := shaders.Load()
	if err != nil {
		return nil, err
	}
	limits := limitsFrom(dev.GetLimits().Limits)
	limits.sanitize()
	queue := dev.GetQueue()
	d := &Device{
		dev: dev, queue: queue, info: info, limits: limits, shaders: set,
		kernels: map[string]*compiled{}, timestamps: timestamps,
	}
	d.release = func() {
		queue.Release()
		dev.Release()
		adapter.Release()
		inst.Release()
	}
	return d, nil
}
