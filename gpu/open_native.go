//go:build !js

package gpu

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/cogentcore/webgpu/wgpu"

	"github.com/webdino/webdino/shaders"
)

// AdapterEnv selects the adapter Open uses: an index into Adapters(), as
// CUDA_VISIBLE_DEVICES picks a GPU; unset, WebGPU's high-performance choice.
// Data-parallel training gives each replica's process its own.
const AdapterEnv = "WEBDINO_ADAPTER"

// openMu serialises creating and releasing instances, adapters and devices
// across the process: two goroutines opening devices at once (replicas in
// one test process) crashed inside wgpu-native's adapter and device
// requests on lavapipe (SIGSEGV, CI on a clean clone, 2026-11-28).
var openMu sync.Mutex

// Adapters lists the adapters of the primary backends (Vulkan, Metal,
// D3D12), in the order AdapterEnv indexes them.
func Adapters() []Info {
	openMu.Lock()
	defer openMu.Unlock()
	inst := wgpu.CreateInstance(nil)
	if inst == nil {
		return nil
	}
	defer inst.Release()
	var out []Info
	for _, a := range inst.EnumerateAdapters(&wgpu.InstanceEnumerateAdapterOptons{Backends: wgpu.InstanceBackendPrimary}) {
		out = append(out, adapterInfo(a))
		a.Release()
	}
	return out
}

// pickAdapter is adapter i of Adapters(), or with i < 0 WebGPU's choice.
func pickAdapter(inst *wgpu.Instance, i int) (*wgpu.Adapter, error) {
	if i < 0 {
		return inst.RequestAdapter(&wgpu.RequestAdapterOptions{PowerPreference: wgpu.PowerPreferenceHighPerformance})
	}
	all := inst.EnumerateAdapters(&wgpu.InstanceEnumerateAdapterOptons{Backends: wgpu.InstanceBackendPrimary})
	if i >= len(all) {
		for _, a := range all {
			a.Release()
		}
		return nil, fmt.Errorf("adapter %d: want an index below %d", i, len(all))
	}
	for j, a := range all {
		if j != i {
			a.Release()
		}
	}
	return all[i], nil
}

func adapterInfo(adapter *wgpu.Adapter) Info {
	ai := adapter.GetInfo()
	info := Info{Name: ai.Name, Backend: ai.BackendType.String(), Type: ai.AdapterType.String(), Driver: ai.DriverDescription}
	if info.Name == "" || strings.HasPrefix(info.Name, "0x") {
		// wgpu-native v0.19 puts a PCI id here and the readable name in the description.
		info.Name = ai.DriverDescription
		info.Driver = ai.VendorName
	}
	return info
}

// Open opens a device on the adapter AdapterEnv names or, by default, on
// the first high-performance WebGPU adapter.
// WEBDINO_LOG=debug|info|warn|error turns on wgpu-native's log.
func Open() (*Device, error) {
	v := os.Getenv(AdapterEnv)
	if v == "" {
		return OpenAdapter(-1)
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 {
		return nil, fmt.Errorf("%s=%q: want an adapter index (gpu.Adapters)", AdapterEnv, v)
	}
	d, err := OpenAdapter(i)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", AdapterEnv, v, err)
	}
	return d, nil
}

// OpenAdapter opens a device on adapter i of Adapters(), or with i < 0 as
// Open does without AdapterEnv.
func OpenAdapter(i int) (*Device, error) {
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
	openMu.Lock()
	defer openMu.Unlock()
	inst := wgpu.CreateInstance(nil)
	if inst == nil {
		return nil, errors.New(noAdapterHelp)
	}
	adapter, err := pickAdapter(inst, i)
	if err != nil && i >= 0 {
		inst.Release()
		return nil, err
	}
	if err != nil || adapter == nil {
		inst.Release()
		if err != nil {
			return nil, fmt.Errorf("%s (%v)", noAdapterHelp, err)
		}
		return nil, errors.New(noAdapterHelp)
	}
	info := adapterInfo(adapter)

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
		openMu.Lock()
		defer openMu.Unlock()
		queue.Release()
		dev.Release()
		adapter.Release()
		inst.Release()
	}
	return d, nil
}
