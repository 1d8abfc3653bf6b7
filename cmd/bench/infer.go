package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// inferResult is the one line infer reports. Value is images/s so the
// common keys read like the kernels lines.
type inferResult struct {
	Name            string       `json:"name"` // infer/<model>/<size>/b<batch>
	Value           float64      `json:"value"`
	Unit            string       `json:"unit"`       // images/s
	PeakRatio       float64      `json:"peak_ratio"` // GFLOPs / PeakGFLOPs
	BaselineRatio   *float64     `json:"baseline_ratio,omitempty"`
	GFLOPs          float64      `json:"gflops"`          // achieved, from the analytic count
	PeakGFLOPs      float64      `json:"peak_gflops"`     // the device's FMA peak, measured in this run
	GFLOPPerImage   float64      `json:"gflop_per_image"` // see vitFLOPs
	SecondsPerBatch float64      `json:"seconds_per_batch"`
	Iters           int          `json:"iters"`
	Torch           *torchResult `json:"torch,omitempty"`
	BaselineMissing string       `json:"baseline_missing,omitempty"`
	Device          string       `json:"device"`
}

func infer(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("infer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, `print one JSON object: {"name","value" (images/s),"unit","peak_ratio","baseline_ratio",...}`)
	batch := fs.Int("batch", 32, "images per forward pass")
	model := fs.String("model", "vits14", "backbone preset: "+fmt.Sprint(nn.PresetNames()))
	size := fs.Int("size", 224, "image side in pixels (a multiple of the patch size)")
	depth := fs.Int("depth", 0, "override the preset's number of blocks (0: keep; small values for smoke tests)")
	iters := fs.Int("iters", 3, "timed forward passes after one warm-up pass")
	useTorch := fs.Bool("torch", true, "also time the PyTorch baseline ("+torchScript+")")
	torchDevice := fs.String("torch-device", "cpu", "where the PyTorch baseline runs: cpu, or cuda on an NVIDIA GPU (WEBDINO_PYTHON names a python3 with a CUDA torch)")
	profile := fs.Bool("profile", false, "then run one more forward pass timing each kernel alone (GPU timestamps where the device has them) and print where the time went, by kernel, to stderr (on lavapipe a kernel of many small dispatches looks slower alone than it runs among others)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: bench infer [flags]

Times the backbone's forward pass (Encode, no readback) over a batch of
random images with random weights on the current WebGPU device: one warm-up
pass, then -iters passes, each submitted and waited for; images/s is the
batch times -iters over their total wall time. GFLOP/s counts the matmul
work of the forward analytically and is divided by the device's FMA peak
measured in the same run (peak_ratio). The same model in PyTorch on the CPU
(all cores, no_grad) gives baseline_ratio = webdino images/s / torch
images/s; without torch the baseline is reported missing.

flags:
`)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 || *batch < 1 || *iters < 1 || *depth < 0 {
		fs.Usage()
		return errUsage
	}
	cfg, err := presetModel(*model, *depth, "size", *size)
	if err != nil {
		return err
	}

	d, err := gpu.Open()
	if err != nil {
		return err
	}
	defer d.Close()
	reportDevice(stderr, d)

	peak, err := timeCase(d, ceilings(fullSizes)[0], options{minTime: time.Second, maxReps: 50})
	if err != nil {
		return fmt.Errorf("%s: %w", peakFMA, err)
	}
	var prof *gpu.Profile
	if *profile {
		prof = gpu.NewProfile()
	}
	secs, err := timeForward(d, cfg, *batch, *size, *iters, prof)
	if err != nil {
		return err
	}
	if prof != nil {
		fmt.Fprintln(stderr, "profile of one forward pass, each kernel timed alone:")
		if err := prof.Write(stderr); err != nil {
			return err
		}
	}
	flops := vitFLOPs(cfg, *size, *size)
	name := *model
	if *depth > 0 {
		name = fmt.Sprintf("%s-depth%d", name, *depth)
	}
	r := inferResult{
		Name:  fmt.Sprintf("infer/%s/%d/b%d", name, *size, *batch),
		Value: float64(*batch) / secs, Unit: "images/s",
		GFLOPs: flops * float64(*batch) / secs / 1e9, PeakGFLOPs: peak, GFLOPPerImage: flops / 1e9,
		SecondsPerBatch: secs, Iters: *iters, Device: d.Info().String(),
	}
	r.PeakRatio = r.GFLOPs / peak
	r.Torch, r.BaselineRatio, r.BaselineMissing = compareTorch(*useTorch, *torchDevice, r.Value, stderr, "infer", torchModelArgs(cfg,
		"--grid", fmt.Sprint(cfg.PosGrid), "--size", fmt.Sprint(*size),
		"--batch", fmt.Sprint(*batch), "--iters", fmt.Sprint(*iters))...)
	if *jsonOut {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintf(stdout, "%s: %.2f images/s (%.2f s per batch of %d), %.2f GFLOP/s = %.1f%% of the FMA peak %.1f GFLOP/s (%.2f GFLOP per image)\n",
		r.Name, r.Value, secs, *batch, r.GFLOPs, 100*r.PeakRatio, peak, r.GFLOPPerImage)
	if r.Torch != nil {
		fmt.Fprintf(stdout, "%s: %.2f images/s; webdino / torch = %.2fx\n", r.Torch, r.Torch.ImagesPerS, *r.BaselineRatio)
	} else {
		fmt.Fprintln(stdout, "torch baseline missing:", r.BaselineMissing)
	}
	return nil
}

// timeForward returns the mean wall time of one Encode of batch random
// images of size x size through a randomly initialised cfg, after a warm-up
// pass that compiles the kernels and touches the memory. With prof set, one
// more pass is profiled into it.
func timeForward(d *gpu.Device, cfg nn.ViTConfig, batch, size, iters int, prof *gpu.Profile) (float64, error) {
	m, err := nn.NewViT(d, cfg)
	if err != nil {
		return 0, err
	}
	defer m.Release()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ch := range m.Params.Chunks {
		if err := d.Write(ch, randn(rng, ch.Len(), 0.02)); err != nil {
			return 0, err
		}
	}
	images, err := d.Upload("images", randn(rng, batch*cfg.InChans*size*size, 1), batch, cfg.InChans, size, size)
	if err != nil {
		return 0, err
	}
	defer images.Buf.Release()
	acts, err := m.NewActs(batch, size, size, false, 0)
	if err != nil {
		return 0, err
	}
	defer acts.Release()
	once := func() (time.Duration, error) {
		rec := d.Record()
		m.Encode(rec, acts, images, false)
		return rec.Run()
	}
	if _, err := once(); err != nil {
		return 0, err
	}
	var total time.Duration
	for i := 0; i < iters; i++ {
		t, err := once()
		if err != nil {
			return 0, err
		}
		total += t
	}
	if prof != nil {
		d.SetProfile(prof)
		defer d.SetProfile(nil)
		if _, err := once(); err != nil {
			return 0, err
		}
	}
	return total.Seconds() / float64(iters), nil
}

// randn returns n normal values of standard deviation std.
func randn(rng *rand.Rand, n int, std float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(std * rng.NormFloat64())
	}
	return x
}

// vitFLOPs counts the floating-point operations (2 per multiply-add) of one
// image of h x w pixels through the backbone, matmuls only. With N patches,
// T = 1 + registers + N tokens, width D, FFN hidden H, patch P, C channels:
//
//	patch embedding       2 N (C P P) D
//	per block: qkv        2 T D 3D
//	           Q K^T, P V 2 * 2 T T D   (all heads together)
//	           proj       2 T D D
//	           MLP        2 T D H * 2   (fc1, fc2; SwiGLU: w12 is D -> 2H, so 3)
//
// LayerNorm, softmax, GELU, biases and LayerScale are O(T D) per block and
// left out, as is the position interpolation (once per pass, not per image).
func vitFLOPs(c nn.ViTConfig, h, w int) float64 {
	N := float64((h / c.PatchSize) * (w / c.PatchSize))
	T := 1 + float64(c.Registers) + N
	D, H := float64(c.EmbedDim), float64(c.MLPHidden)
	ffn := 2.0
	if c.FFN == nn.FFNSwiGLU {
		ffn = 3
	}
	block := 2*T*D*3*D + 2*2*T*T*D + 2*T*D*D + ffn*2*T*D*H
	return 2*N*float64(c.InChans*c.PatchSize*c.PatchSize)*D + float64(c.Depth)*block
}

// torchModelArgs are bench_torch.py's backbone flags for c, then extra.
func torchModelArgs(c nn.ViTConfig, extra ...string) []string {
	return append([]string{
		"--patch", fmt.Sprint(c.PatchSize), "--dim", fmt.Sprint(c.EmbedDim), "--depth", fmt.Sprint(c.Depth),
		"--heads", fmt.Sprint(c.Heads), "--hidden", fmt.Sprint(c.MLPHidden), "--ffn", string(c.FFN),
		"--registers", fmt.Sprint(c.Registers),
	}, extra...)
}

// presetModel is the backbone preset name with depth blocks (0: the
// preset's), after checking that side, the image side given by -flag, is a
// positive multiple of its patch.
func presetModel(name string, depth int, flag string, side int) (nn.ViTConfig, error) {
	cfg, err := nn.Preset(name)
	if err != nil {
		return cfg, err
	}
	if depth > 0 {
		cfg.Depth = depth
	}
	if side%cfg.PatchSize != 0 || side < cfg.PatchSize {
		return cfg, fmt.Errorf("-%s %d: want a positive multiple of the patch size %d", flag, side, cfg.PatchSize)
	}
	return cfg, nil
}
