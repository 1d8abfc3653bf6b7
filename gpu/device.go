// Package gpu is webdino's WebGPU runtime: it opens a device, holds tensors as
// views into GPU buffers, turns WGSL templates into pipelines with explicit
// layouts, records many dispatches into one compute pass, and moves data in
// and out. The same code runs natively (wgpu-native: Vulkan, Metal, D3D12, or
// Mesa lavapipe on a CPU) and in the browser (GOOS=js, navigator.gpu).
package gpu

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cogentcore/webgpu/wgpu"

	"github.com/webdino/webdino/shaders"
)

// Info describes the adapter a Device runs on.
type Info struct {
	Name    string // adapter name, e.g. "llvmpipe (LLVM 19.1.7, 256 bits)"
	Backend string // Vulkan, Metal, D3D12, WebGPU...
	Type    string // DiscreteGPU, IntegratedGPU, CPU, Unknown
	Driver  string
}

// IsCPU reports whether the adapter runs on the CPU (lavapipe, SwiftShader):
// kernels then take the shapes that suit SIMD lanes of CPU threads rather
// than those of a GPU (workgroup memory, many warps).
func (i Info) IsCPU() bool { return strings.EqualFold(i.Type, "cpu") }

func (i Info) String() string {
	return fmt.Sprintf("%s (backend %s, type %s, driver %s)", i.Name, i.Backend, i.Type, i.Driver)
}

// Limits are the device limits webdino checks before it records work.
type Limits struct {
	MaxBufferSize       uint64
	MaxStorageBinding   uint64
	MaxWorkgroupsPerDim uint32
	MaxWorkgroupStorage uint32
	MaxInvocations      uint32
	MaxStorageBuffers   uint32
	StorageOffsetAlign  uint32
	UniformOffsetAlign  uint32
	MaxUniformBinding   uint64
}

// Device is an open WebGPU device with its queue, kernel cache and helpers.
// It is safe for use by one goroutine at a time.
type Device struct {
	dev    *wgpu.Device
	queue  *wgpu.Queue
	info   Info
	limits Limits

	shaders *shaders.Set
	mu      sync.Mutex
	kernels map[string]*compiled

	timestamps bool   // the device supports timestamp queries
	jsQueue    func() // js only: waits for queue.onSubmittedWorkDone
	// jsWrite (js only) replaces queue.WriteBuffer; see open_js.go.
	jsWrite func(buf *wgpu.Buffer, offset uint64, data []byte)

	uniform     *wgpu.Buffer // parameter arena shared by recordings
	uniformSize uint64
	// Staging buffers kept for readbacks, WriteAll and StartRead
	// (transfer.go).
	readback, upload keptBuffer
	pending          stagingPool
	release          func()
	mem              memStats // tensor-buffer bytes allocated (memstats.go)
	binds            bindCache
	scratch          scratch  // Scratch's buffers, guarded by mu
	profile          *Profile // when set, Submit times each op (profile.go)
	flops            atomic.Int64
	loads            loadsProbe // BroadcastLoads' answer (loads.go)
}

// CountFLOPs adds n floating-point operations to the work recorded on the
// device (nn.MatMul counts its products), so that a benchmark can divide
// the arithmetic of a whole workload by its time.
func (d *Device) CountFLOPs(n int64) { d.flops.Add(n) }

// FLOPs is the work counted so far.
func (d *Device) FLOPs() int64 { return d.flops.Load() }

// Info returns the adapter description.
func (d *Device) Info() Info { return d.info }

// Limits returns the limits the device was opened with.
func (d *Device) Limits() Limits { return d.limits }

// Close releases the device and everything cached on it.
func (d *Device) Close() {
	d.releaseScratch()
	d.mu.Lock()
	for _, k := range d.kernels {
		k.release()
	}
	d.kernels = nil
	d.binds.reset()
	if d.uniform != nil {
		d.uniform.Release()
		d.uniform = nil
	}
	d.readback.release()
	d.upload.release()
	d.pending.release()
	d.mu.Unlock()
	if d.release != nil {
		d.release()
	}
}

// requiredLimits raises the WebGPU defaults to what the adapter allows for the
// few limits webdino needs; the rest stay at their defaults. (Passing the
// adapter's own limit struct back fails on wgpu-native v0.19.)
func requiredLimits(a wgpu.Limits) wgpu.Limits {
	l := wgpu.DefaultLimits()
	l.MaxBufferSize = a.MaxBufferSize
	if l.MaxBufferSize == wgpu.LimitU64Undefined {
		// "No limit" (NVIDIA's Vulkan driver through wgpu): asking for it
		// back would mean the 256 MiB default, so ask for what one binding
		// can see, which no single buffer here needs to exceed by much.
		l.MaxBufferSize = max(a.MaxStorageBufferBindingSize, 256<<20)
	}
	l.MaxStorageBufferBindingSize = a.MaxStorageBufferBindingSize
	l.MaxComputeWorkgroupStorageSize = a.MaxComputeWorkgroupStorageSize
	l.MaxComputeInvocationsPerWorkgroup = a.MaxComputeInvocationsPerWorkgroup
	l.MaxComputeWorkgroupSizeX = a.MaxComputeWorkgroupSizeX
	l.MaxComputeWorkgroupSizeY = a.MaxComputeWorkgroupSizeY
	l.MaxComputeWorkgroupsPerDimension = a.MaxComputeWorkgroupsPerDimension
	l.MaxStorageBuffersPerShaderStage = a.MaxStorageBuffersPerShaderStage
	l.MaxUniformBufferBindingSize = a.MaxUniformBufferBindingSize
	l.MinUniformBufferOffsetAlignment = a.MinUniformBufferOffsetAlignment
	l.MinStorageBufferOffsetAlignment = a.MinStorageBufferOffsetAlignment
	return l
}

func limitsFrom(l wgpu.Limits) Limits {
	return Limits{
		MaxBufferSize:       l.MaxBufferSize,
		MaxStorageBinding:   l.MaxStorageBufferBindingSize,
		MaxWorkgroupsPerDim: l.MaxComputeWorkgroupsPerDimension,
		MaxWorkgroupStorage: l.MaxComputeWorkgroupStorageSize,
		MaxInvocations:      l.MaxComputeInvocationsPerWorkgroup,
		MaxStorageBuffers:   l.MaxStorageBuffersPerShaderStage,
		StorageOffsetAlign:  l.MinStorageBufferOffsetAlignment,
		UniformOffsetAlign:  l.MinUniformBufferOffsetAlignment,
		MaxUniformBinding:   l.MaxUniformBufferBindingSize,
	}
}

// sanitize fills limits a backend reported as zero with the WebGPU minimums,
// so checks never divide by zero or refuse everything.
func (l *Limits) sanitize() {
	def := func(v *uint32, min uint32) {
		if *v == 0 || *v == wgpu.LimitU32Undefined {
			*v = min
		}
	}
	def(&l.MaxWorkgroupsPerDim, 65535)
	def(&l.MaxWorkgroupStorage, 16384)
	def(&l.MaxInvocations, 256)
	def(&l.MaxStorageBuffers, 8)
	def(&l.StorageOffsetAlign, 256)
	def(&l.UniformOffsetAlign, 256)
	if l.MaxUniformBinding == 0 || l.MaxUniformBinding == wgpu.LimitU64Undefined {
		l.MaxUniformBinding = 16 << 10
	}
	if l.MaxStorageBinding == 0 || l.MaxStorageBinding == wgpu.LimitU64Undefined {
		l.MaxStorageBinding = 128 << 20
	}
	if l.MaxBufferSize == 0 || l.MaxBufferSize == wgpu.LimitU64Undefined {
		l.MaxBufferSize = 256 << 20
	}
}

// errNoAdapter explains how to get a WebGPU adapter on the machine.
const noAdapterHelp = "no WebGPU adapter found: install a GPU driver with Vulkan, Metal or D3D12 support, " +
	"or on a machine without a GPU install Mesa lavapipe (Debian 12: `apt-get install -t bookworm-backports " +
	"mesa-vulkan-drivers libvulkan1`, or run scripts/setup.sh)"
