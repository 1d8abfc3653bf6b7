//go:build js

// Command wasm is webdino's in-browser viewer: built with GOOS=js
// GOARCH=wasm (make wasm), loaded by assets/app.js, served by cmd/serve.
//
// It publishes globalThis.webdinoGo, whose methods return Promises. Their
// work runs on the main goroutine, one job at a time, never inside the JS
// callback that asked for it: a blocking WebGPU call (a buffer map, waiting
// for the queue) inside a js.FuncOf callback deadlocks the program, because
// the promise it waits for can only settle once the callback has returned.
package main

import (
	"errors"
	"fmt"
	"math"
	"syscall/js"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/viz"
	"github.com/webdino/webdino/wasm/viewer"
)

// app is the viewer's state; only the main goroutine touches it.
type app struct {
	dev   *gpu.Device
	model *viewer.Model
	img   *data.RGB
	last  *viewer.Result
}

func main() {
	a := &app{}
	jobs := make(chan func())
	api := js.Global().Get("Object").New()
	for name, f := range map[string]func([]js.Value) (any, error){
		"open":       a.open,
		"checkModel": a.checkModel,
		"loadModel":  a.loadModel,
		"setImage":   a.setImage,
		"run":        a.run,
		"similarity": a.similarity,
	} {
		api.Set(name, async(jobs, f))
	}
	js.Global().Set("webdinoGo", api)
	if ready := js.Global().Get("webdinoReady"); ready.Type() == js.TypeFunction {
		ready.Invoke()
	}
	for job := range jobs {
		job()
	}
}

// async wraps f as a JS function returning a Promise that f's result
// resolves (or its error, or panic, rejects). The callback only queues the
// call: f runs later on the main goroutine.
func async(jobs chan<- func(), f func([]js.Value) (any, error)) js.Func {
	return js.FuncOf(func(_ js.Value, args []js.Value) any {
		var resolve, reject js.Value
		exec := js.FuncOf(func(_ js.Value, p []js.Value) any {
			resolve, reject = p[0], p[1]
			return nil
		})
		promise := js.Global().Get("Promise").New(exec)
		exec.Release()
		job := func() {
			v, err := guard(f, args)
			if err != nil {
				reject.Invoke(js.Global().Get("Error").New(err.Error()))
				return
			}
			resolve.Invoke(v)
		}
		go func() { jobs <- job }()
		return promise
	})
}

// guard calls f, turning a panic (the js backend of cogentcore/webgpu
// panics where the native one returns errors) into an error.
func guard(f func([]js.Value) (any, error), args []js.Value) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("internal error: %v", p)
		}
	}()
	return f(args)
}

func object(kv ...any) js.Value {
	o := js.Global().Get("Object").New()
	for i := 0; i < len(kv); i += 2 {
		o.Set(kv[i].(string), kv[i+1])
	}
	return o
}

func bytesFromJS(v js.Value) []byte {
	b := make([]byte, v.Get("length").Int())
	js.CopyBytesToGo(b, v)
	return b
}

func bytesToJS(b []byte) js.Value {
	u := js.Global().Get("Uint8Array").New(len(b))
	js.CopyBytesToJS(u, b)
	return u
}

// floatsToJS returns a Float32Array copy of x (wasm is little-endian).
func floatsToJS(x []float32) js.Value {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		u := math.Float32bits(v)
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return js.Global().Get("Float32Array").New(bytesToJS(b).Get("buffer"))
}

// open() -> {adapter, maxBufferMB, maxBindingMB}
func (a *app) open([]js.Value) (any, error) {
	if a.dev == nil {
		dev, err := gpu.Open()
		if err != nil {
			return nil, err
		}
		a.dev = dev
	}
	l := a.dev.Limits()
	return object("adapter", a.dev.Info().Name, "maxBufferMB", int(l.MaxBufferSize>>20),
		"maxBindingMB", int(l.MaxStorageBinding>>20)), nil
}

// checkModel(name, Uint8Array of the file's first bytes, file size): throws
// when the page cannot load the model (viewer.CheckModel), before the whole
// file is read.
func (a *app) checkModel(args []js.Value) (any, error) {
	if a.dev == nil {
		return nil, errors.New("no WebGPU device")
	}
	return nil, viewer.CheckModel(a.dev, args[0].String(), bytesFromJS(args[1]), int64(args[2].Float()))
}

// loadModel(name, Uint8Array) -> {config, params, patch, heads, registers, dim, source, meta}
func (a *app) loadModel(args []js.Value) (any, error) {
	if a.dev == nil {
		return nil, errors.New("no WebGPU device")
	}
	m, err := viewer.LoadModel(a.dev, args[0].String(), bytesFromJS(args[1]))
	if err != nil {
		return nil, err
	}
	if a.model != nil {
		a.model.Release()
	}
	a.model, a.last = m, nil
	c := m.ViT.Cfg
	meta := object()
	for k, v := range m.Meta {
		meta.Set(k, v)
	}
	return object("config", c.String(), "params", c.NumParams(), "patch", c.PatchSize, "heads", c.Heads,
		"registers", c.Registers, "dim", c.EmbedDim, "source", m.Source, "meta", meta), nil
}

// setImage(name, Uint8Array of an encoded photo) -> {width, height}
func (a *app) setImage(args []js.Value) (any, error) {
	img, err := viewer.DecodeImage(args[0].String(), bytesFromJS(args[1]))
	if err != nil {
		return nil, err
	}
	a.img, a.last = img, nil
	return object("width", img.W, "height", img.H), nil
}

// run(short) -> the pictures and arrays of viewer.Result (see assets/app.js).
func (a *app) run(args []js.Value) (any, error) {
	switch {
	case a.dev == nil:
		return nil, errors.New("no WebGPU device")
	case a.model == nil:
		return nil, errors.New("load a model first")
	case a.img == nil:
		return nil, errors.New("choose an image first")
	}
	r, err := viewer.Run(a.dev, a.model, a.img, args[0].Int())
	if err != nil {
		return nil, err
	}
	a.last = r
	attn, heat := js.Global().Get("Array").New(), js.Global().Get("Array").New()
	for _, m := range r.Attn {
		attn.Call("push", floatsToJS(m))
		heat.Call("push", bytesToJS(viz.Heat(m, r.GH, r.GW).Pix))
	}
	steps := js.Global().Get("Array").New()
	for _, s := range r.Steps {
		steps.Call("push", object("name", s.Name, "ms", s.Ms))
	}
	fg := make([]byte, len(r.PCA.Foreground))
	for i, f := range r.PCA.Foreground {
		if f {
			fg[i] = 1
		}
	}
	return object(
		"height", r.H, "width", r.W, "gh", r.GH, "gw", r.GW, "heads", r.Heads, "dim", r.D,
		"input", bytesToJS(r.Input.Pix),
		"patches", floatsToJS(r.Patches),
		"pcaRGB", bytesToJS(r.PCA.RGB),
		"pcaRGBA", bytesToJS(r.PCA.Image().Pix),
		"foreground", bytesToJS(fg),
		"attn", attn, "attnRGBA", heat,
		"steps", steps,
	), nil
}

// similarity(patch index) -> {sim: Float32Array, rgba}
func (a *app) similarity(args []js.Value) (any, error) {
	if a.last == nil {
		return nil, errors.New("run the model first")
	}
	s, err := a.last.Similarity(args[0].Int())
	if err != nil {
		return nil, err
	}
	return object("sim", floatsToJS(s), "rgba", bytesToJS(viz.Heat(s, a.last.GH, a.last.GW).Pix)), nil
}
