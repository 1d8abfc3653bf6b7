package gpu

import (
	"fmt"

	"github.com/cogentcore/webgpu/wgpu"
)

// Access says how a kernel uses a storage binding.
type Access int

const (
	Read      Access = iota // var<storage, read>
	ReadWrite               // var<storage, read_write>
	Uniform                 // var<uniform>: read-only, at most Limits.MaxUniformBinding bytes, offsets on UniformOffsetAlign
)

// Kernel identifies one specialisation of a WGSL template. Binding 0 of every
// kernel is a uniform struct of 32-bit parameters; bindings 1..len(Access) are
// storage buffers with the given access, in order.
type Kernel struct {
	Name   string // template name in package shaders
	Data   any    // template data; printed with %#v to form the cache key
	Access []Access
	// Profile, if set, tells this dispatch apart from others of the kernel
	// in a Profile (a matmul's shape, say); it is not part of the cache key.
	Profile string
}

func (k Kernel) key() string { return fmt.Sprintf("%s|%#v|%v", k.Name, k.Data, k.Access) }

// compiled is a kernel's pipeline and layouts, cached per Device.
type compiled struct {
	name     string
	layout   *wgpu.BindGroupLayout
	pipeline *wgpu.ComputePipeline
	access   []Access
	release  func()
}

// Pipelines is the number of kernel specialisations compiled so far. A
// benchmark warms up until it stops growing: a pipeline compiled inside a
// timed run (lavapipe takes seconds per kernel on a cold shader cache) would
// be counted as work.
func (d *Device) Pipelines() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.kernels)
}

// Source renders the kernel's WGSL (for tests and debugging).
func (d *Device) Source(k Kernel) (string, error) { return d.shaders.Render(k.Name, k.Data) }

// compile returns the cached pipeline for k, building it on first use with
// explicit bind-group and pipeline layouts (the browser backend cannot
// derive them from the shader).
func (d *Device) compile(k Kernel) (*compiled, error) {
	key := k.key()
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.kernels[key]; ok {
		return c, nil
	}
	if n := uint32(len(k.Access)); n > d.limits.MaxStorageBuffers {
		return nil, fmt.Errorf("kernel %s: %d storage bindings exceed the device limit of %d", k.Name, n, d.limits.MaxStorageBuffers)
	}
	src, err := d.shaders.Render(k.Name, k.Data)
	if err != nil {
		return nil, err
	}
	mod, err := d.dev.CreateShaderModule(&wgpu.ShaderModuleDescriptor{
		Label:          k.Name,
		WGSLDescriptor: &wgpu.ShaderModuleWGSLDescriptor{Code: src},
	})
	if err != nil {
		return nil, fmt.Errorf("compile kernel %s (%#v): %w", k.Name, k.Data, err)
	}
	defer mod.Release()
	// Uniform bindings (the parameters, and Uniform views) take dynamic
	// offsets, so that one bind group serves every dispatch of a kernel on
	// the same buffers (see bindKey).
	entries := []wgpu.BindGroupLayoutEntry{{
		Binding:    0,
		Visibility: wgpu.ShaderStageCompute,
		Buffer:     wgpu.BufferBindingLayout{Type: wgpu.BufferBindingTypeUniform, HasDynamicOffset: true},
	}}
	for i, a := range k.Access {
		t := wgpu.BufferBindingTypeReadOnlyStorage
		switch a {
		case ReadWrite:
			t = wgpu.BufferBindingTypeStorage
		case Uniform:
			t = wgpu.BufferBindingTypeUniform
		}
		entries = append(entries, wgpu.BindGroupLayoutEntry{
			Binding:    uint32(i + 1),
			Visibility: wgpu.ShaderStageCompute,
			Buffer:     wgpu.BufferBindingLayout{Type: t, HasDynamicOffset: a == Uniform},
		})
	}
	bgl, err := d.dev.CreateBindGroupLayout(&wgpu.BindGroupLayoutDescriptor{Label: k.Name, Entries: entries})
	if err != nil {
		return nil, fmt.Errorf("kernel %s: bind group layout: %w", k.Name, err)
	}
	pl, err := d.dev.CreatePipelineLayout(&wgpu.PipelineLayoutDescriptor{Label: k.Name, BindGroupLayouts: []*wgpu.BindGroupLayout{bgl}})
	if err != nil {
		bgl.Release()
		return nil, fmt.Errorf("kernel %s: pipeline layout: %w", k.Name, err)
	}
	p, err := d.dev.CreateComputePipeline(&wgpu.ComputePipelineDescriptor{
		Layout:  pl,
		Compute: wgpu.ProgrammableStageDescriptor{Module: mod, EntryPoint: "main"},
	})
	if err != nil {
		pl.Release()
		bgl.Release()
		return nil, fmt.Errorf("compile kernel %s (%#v): %w", k.Name, k.Data, err)
	}
	c := &compiled{name: k.Name, layout: bgl, pipeline: p, access: k.Access, release: func() {
		p.Release()
		pl.Release()
		bgl.Release()
	}}
	d.kernels[key] = c
	return c, nil
}
