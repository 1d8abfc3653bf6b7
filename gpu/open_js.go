//go:build js

package gpu

import (
	"errors"
	"fmt"
	"strings"
	"syscall/js"
	"unsafe"

	"github.com/cogentcore/webgpu/jsx"
	"github.com/cogentcore/webgpu/wgpu"

	"github.com/webdino/webdino/shaders"
)

// Open requests an adapter and a device from navigator.gpu. The device is
// requested through syscall/js because the js backend of cogentcore/webgpu
// ignores required limits and panics on required features.
func Open() (*Device, error) {
	gpu := js.Global().Get("navigator").Get("gpu")
	if !gpu.Truthy() {
		return nil, errors.New("this browser does not expose WebGPU (navigator.gpu is missing): use a current Chrome or Edge, Safari 26+, or Firefox 141+ on Windows; on Linux Chrome needs --enable-unsafe-webgpu")
	}
	adapter, ok := jsx.Await(gpu.Call("requestAdapter", map[string]any{"powerPreference": "high-performance"}))
	if !ok || !adapter.Truthy() {
		return nil, errors.New("navigator.gpu.requestAdapter returned no adapter: WebGPU is disabled or unsupported on this GPU")
	}
	al := adapter.Get("limits")
	get := func(name string) float64 { return al.Get(name).Float() }
	req := map[string]any{
		"maxBufferSize":                     get("maxBufferSize"),
		"maxStorageBufferBindingSize":       get("maxStorageBufferBindingSize"),
		"maxComputeWorkgroupStorageSize":    get("maxComputeWorkgroupStorageSize"),
		"maxComputeInvocationsPerWorkgroup": get("maxComputeInvocationsPerWorkgroup"),
		"maxComputeWorkgroupSizeX":          get("maxComputeWorkgroupSizeX"),
		"maxComputeWorkgroupsPerDimension":  get("maxComputeWorkgroupsPerDimension"),
		"maxStorageBuffersPerShaderStage":   get("maxStorageBuffersPerShaderStage"),
		"maxUniformBufferBindingSize":       get("maxUniformBufferBindingSize"),
	}
	dev, ok := jsx.Await(adapter.Call("requestDevice", map[string]any{"requiredLimits": req}))
	if !ok || !dev.Truthy() {
		return nil, fmt.Errorf("adapter.requestDevice failed")
	}
	info := Info{Backend: "WebGPU (browser)", Type: "Unknown"}
	if ai := adapter.Get("info"); ai.Truthy() {
		info.Name = ai.Get("description").String()
		if info.Name == "" {
			info.Name = strings.TrimSpace(ai.Get("vendor").String() + " " + ai.Get("architecture").String())
		}
		if info.Name == "" {
			// Firefox reports no adapter details.
			info.Name = "unnamed (the browser hides its details)"
		}
		info.Driver = ai.Get("vendor").String()
		// The browser names no adapter type; a software rasteriser
		// (Chromium's SwiftShader, Mesa's lavapipe) is a CPU.
		id := strings.ToLower(info.Name + " " + info.Driver + " " + ai.Get("architecture").String())
		if strings.Contains(id, "swiftshader") || strings.Contains(id, "llvmpipe") || strings.Contains(id, "lavapipe") {
			info.Type = "CPU"
		}
	}
	dl := dev.Get("limits")
	u32 := func(name string) uint32 { return uint32(dl.Get(name).Float()) }
	u64 := func(name string) uint64 { return uint64(dl.Get(name).Float()) }
	limits := Limits{
		MaxBufferSize:       u64("maxBufferSize"),
		MaxStorageBinding:   u64("maxStorageBufferBindingSize"),
		MaxWorkgroupsPerDim: u32("maxComputeWorkgroupsPerDimension"),
		MaxWorkgroupStorage: u32("maxComputeWorkgroupStorageSize"),
		MaxInvocations:      u32("maxComputeInvocationsPerWorkgroup"),
		MaxStorageBuffers:   u32("maxStorageBuffersPerShaderStage"),
		StorageOffsetAlign:  u32("minStorageBufferOffsetAlignment"),
		UniformOffsetAlign:  u32("minUniformBufferOffsetAlignment"),
		MaxUniformBinding:   u64("maxUniformBufferBindingSize"),
	}
	limits.sanitize()
	set, err := shaders.Load()
	if err != nil {
		return nil, err
	}
	wd := wgpu.NewDevice(dev)
	queue := dev.Get("queue")
	wait := func() { jsx.Await(queue.Call("onSubmittedWorkDone")) }
	return &Device{dev: &wd, queue: wd.GetQueue(), info: info, limits: limits, shaders: set,
		kernels: map[string]*compiled{}, jsQueue: wait, jsWrite: writeFunc(queue)}, nil
}

// writeFunc returns queue.writeBuffer from a JS-owned copy of the data.
// wgpu v0.23's Queue.WriteBuffer passes a view of the wasm memory and then
// boxes an argument, which can grow the memory and detach the view: Chromium
// then throws "Number of bytes to write is too large" (seen in about one
// load of the demo model in three). js.CopyBytesToJS reads Go memory at
// once, so nothing can move under it.
func writeFunc(queue js.Value) func(buf *wgpu.Buffer, offset uint64, data []byte) {
	u8 := js.Global().Get("Uint8Array")
	return func(buf *wgpu.Buffer, offset uint64, data []byte) {
		arr := u8.New(len(data))
		js.CopyBytesToJS(arr, data)
		queue.Call("writeBuffer", bufferJS(buf), float64(offset), arr)
	}
}

// bufferJS is buf's GPUBuffer. wgpu.Buffer (v0.23.0, the version go.mod
// pins) holds exactly that js.Value and exports no way to get it.
func bufferJS(buf *wgpu.Buffer) js.Value { return *(*js.Value)(unsafe.Pointer(buf)) }
