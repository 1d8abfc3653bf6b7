package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/webdino/webdino/dist"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/train"
)

// trainResult is the one line train reports.
type trainResult struct {
	Name           string   `json:"name"` // train/<config>/b<batch>/k<prototypes>
	Value          float64  `json:"value"`
	Unit           string   `json:"unit"` // images/s (source images, each giving 2 + locals crops)
	BaselineRatio  *float64 `json:"baseline_ratio,omitempty"`
	SecondsPerStep float64  `json:"seconds_per_step"`
	Steps          int      `json:"steps"`
	// DevicePeakBytes is the most bytes of tensor buffers allocated on the
	// device at once, from opening it to the end of the last step: models,
	// optimiser state, every activation of a step, the images.
	DevicePeakBytes uint64 `json:"device_peak_bytes"`
	// GFLOPs is the step's products (every nn.MatMul: forward, backward,
	// heads; gpu.Device.CountFLOPs) per second, PeakRatio that over the
	// device's FMA peak measured in the same run.
	GFLOPs          float64      `json:"gflops"`
	GFLOPPerStep    float64      `json:"gflop_per_step"`
	PeakGFLOPs      float64      `json:"peak_gflops"`
	PeakRatio       float64      `json:"peak_ratio"`
	Ran             trainShape   `json:"ran"`
	Torch           *torchResult `json:"torch,omitempty"`
	BaselineMissing string       `json:"baseline_missing,omitempty"`
	Device          string       `json:"device"`
}

// trainShape is what a step ran.
type trainShape struct {
	Config     string `json:"config"`
	Model      string `json:"model"`
	Batch      int    `json:"batch"`
	GlobalSize int    `json:"global_size"`
	LocalSize  int    `json:"local_size"`
	Locals     int    `json:"locals"`
	Prototypes int    `json:"prototypes"`
	HeadHidden int    `json:"head_hidden"`
	Bottleneck int    `json:"bottleneck"`
	ImageSize  int    `json:"image_size"` // side of the synthetic source images
	ImageChans int    `json:"image_channels"`
}

func trainBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, `print one JSON object: {"name","value" (images/s),"unit","baseline_ratio","device_peak_bytes",...}`)
	config := fs.String("config", "demo", "demo (train.Demo: Fashion-MNIST sized) or vits14 (train.Recipe: ViT-S/14, 224/98 crops, 2+8)")
	batch := fs.Int("batch", 0, "images per step (0: the config's, demo 128, vits14 32)")
	steps := fs.Int("steps", 3, "timed steps after the warm-up steps (until one compiles no new pipeline and is no faster than the last)")
	protos := fs.Int("prototypes", 0, "override the head's prototypes K (0: the config's, demo 1024, vits14 65536)")
	locals := fs.Int("locals", -1, "override the local crops per image (-1: the config's)")
	replicas := fs.Int("replicas", 1, "then also time this many data-parallel replicas of -batch images each (train.NewReplica), in this process on their own devices (adapters in turn) joined over loopback TCP, and report their images/s, scaling against one device and exchange time per step")
	profile := fs.Bool("profile", false, "then run -steps more steps timing each kernel alone (GPU timestamps where the device has them) and print where the time went, by kernel, and the largest buffers, to stderr (on lavapipe a kernel of many small dispatches looks slower alone than it runs among others)")
	useTorch := fs.Bool("torch", true, "also time the PyTorch baseline ("+torchScript+")")
	torchDevice := fs.String("torch-device", "cpu", "where the PyTorch baseline runs: cpu, or cuda on an NVIDIA GPU (WEBDINO_PYTHON names a python3 with a CUDA torch)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: bench train [flags]

Times full DINOv2 training steps (train.Trainer.Step: augmentation on the
GPU, teacher and student passes, DINO + iBOT + KoLeo losses, backward,
clipping, AdamW, teacher EMA) on the current WebGPU device, with random
synthetic images uploaded once so that data loading is not measured; the
prototype layer is not frozen, so every step updates everything. Warm-up
steps until one compiles no new pipeline and runs no faster than the one
before (at most 20), then -steps timed steps; images/s is source images per
second. device_peak_bytes is the most tensor-buffer memory allocated at
once. gflops counts the step's products (every matmul of the forward and
backward passes and the heads, as recorded) per second, and peak_ratio
divides it by the device's FMA peak measured in the same run. A PyTorch
CPU step with the same shapes (bench_torch.py train) gives baseline_ratio
= webdino images/s / torch images/s and torch's memory (peak resident set
during the run minus before it, VmHWM reset through /proc/self/clear_refs).

At ViT-S/14 recipe size a step of 32 images does about 5 TFLOP, and the iBOT
tensors are [2*batch*256, K] floats: on a CPU (lavapipe) use e.g. -batch 2,
and -prototypes where a tensor would exceed the device's buffer limit.

flags:
`)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 || *batch < 0 || *steps < 1 || *protos < 0 || *locals < -1 || *replicas < 1 {
		fs.Usage()
		return errUsage
	}
	var cfg train.Config
	imgSize, imgChans := 0, 0
	switch *config {
	case "demo":
		cfg, imgSize, imgChans = train.Demo(), 28, 1 // Fashion-MNIST pictures
	case "vits14":
		m, err := nn.Preset("vits14")
		if err != nil {
			return err
		}
		cfg, imgSize, imgChans = train.Recipe(m, 32, 100), 256, 3
	default:
		return fmt.Errorf("-config %q: want demo or vits14", *config)
	}
	if *batch > 0 {
		cfg.Batch = *batch
	}
	if *protos > 0 {
		cfg.Prototypes = *protos
	}
	if *locals >= 0 {
		cfg.Augment.Locals = *locals
	}
	cfg.FreezeLastLayerIters = 0
	shape := trainShape{
		Config: *config, Model: fmt.Sprintf("dim %d, depth %d, heads %d, patch %d", cfg.Model.EmbedDim, cfg.Model.Depth, cfg.Model.Heads, cfg.Model.PatchSize),
		Batch: cfg.Batch, GlobalSize: cfg.Augment.GlobalSize, LocalSize: cfg.Augment.LocalSize, Locals: cfg.Augment.Locals,
		Prototypes: cfg.Prototypes, HeadHidden: cfg.HeadHidden, Bottleneck: cfg.Bottleneck, ImageSize: imgSize, ImageChans: imgChans,
	}

	d, err := gpu.Open()
	if err != nil {
		return err
	}
	defer d.Close()
	reportDevice(stderr, d)
	var prof *gpu.Profile
	if *profile {
		prof = gpu.NewProfile()
	}
	peakGF, err := timeCase(d, ceilings(fullSizes)[0], options{minTime: time.Second, maxReps: 50})
	if err != nil {
		return fmt.Errorf("%s: %w", peakFMA, err)
	}
	secs, flops, warmups, err := timeSteps(d, cfg, imgSize, imgChans, *steps, prof, stderr)
	if err != nil {
		return err
	}
	if prof != nil {
		fmt.Fprintf(stderr, "profile of %d steps, each kernel timed alone:\n", *steps)
		if err := prof.Write(stderr); err != nil {
			return err
		}
	}
	_, peak := d.Allocated()
	r := trainResult{
		Name:  fmt.Sprintf("train/%s/b%d/k%d", *config, cfg.Batch, cfg.Prototypes),
		Value: float64(cfg.Batch) / secs, Unit: "images/s", SecondsPerStep: secs, Steps: *steps,
		DevicePeakBytes: peak, Ran: shape, Device: d.Info().String(),
		GFLOPs: flops / secs / 1e9, GFLOPPerStep: flops / 1e9, PeakGFLOPs: peakGF,
	}
	r.PeakRatio = r.GFLOPs / peakGF
	a := cfg.Augment
	r.Torch, r.BaselineRatio, r.BaselineMissing = compareTorch(*useTorch, *torchDevice, r.Value, stderr, "train", torchModelArgs(cfg.Model,
		"--batch", fmt.Sprint(cfg.Batch), "--global-size", fmt.Sprint(a.GlobalSize),
		"--local-size", fmt.Sprint(a.LocalSize), "--locals", fmt.Sprint(a.Locals),
		"--prototypes", fmt.Sprint(cfg.Prototypes), "--head-hidden", fmt.Sprint(cfg.HeadHidden),
		"--bottleneck", fmt.Sprint(cfg.Bottleneck), "--steps", fmt.Sprint(*steps))...)
	var rr *replicaResult
	if *replicas > 1 {
		rt, adapters, err := timeReplicas(cfg, *replicas, imgSize, imgChans, warmups, *steps)
		if err != nil {
			return err
		}
		v := float64(*replicas*cfg.Batch) / rt.secs
		rr = &replicaResult{Name: fmt.Sprintf("%s/x%d", r.Name, *replicas), Value: v, Unit: "images/s", Replicas: *replicas,
			Adapters: adapters, Scaling: v / (float64(*replicas) * r.Value), SecondsPerStep: rt.secs,
			ExchangeSeconds: rt.exchange, WaitSeconds: rt.wait, Steps: *steps}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(r); err != nil || rr == nil {
			return err
		}
		return enc.Encode(rr)
	}
	fmt.Fprintf(stdout, "%s: %.3f images/s (%.2f s per step of %d images, %d+%d crops each), device memory peak %.1f MiB; products %.1f GFLOP per step, %.1f GFLOP/s = %.1f%% of the FMA peak %.1f GFLOP/s\n",
		r.Name, r.Value, secs, cfg.Batch, 2, cfg.Augment.Locals, float64(peak)/(1<<20), r.GFLOPPerStep, r.GFLOPs, 100*r.PeakRatio, peakGF)
	if r.Torch != nil {
		fmt.Fprintf(stdout, "%s: %.3f images/s, peak memory %.1f MiB (%s); webdino / torch = %.2fx\n",
			r.Torch, r.Torch.ImagesPerS, float64(r.Torch.PeakRSSBytes)/(1<<20), r.Torch.Memory, *r.BaselineRatio)
	} else {
		fmt.Fprintln(stdout, "torch baseline missing:", r.BaselineMissing)
	}
	if rr != nil {
		fmt.Fprintf(stdout, "%s: %.3f images/s over %d replicas on %d adapters (%.2f s per step, %.3f s of it exchanging, %.3f s of that waiting for the other replicas), scaling %.2f of %d times one device\n",
			rr.Name, rr.Value, rr.Replicas, rr.Adapters, rr.SecondsPerStep, rr.ExchangeSeconds, rr.WaitSeconds, rr.Scaling, rr.Replicas)
		if rr.Adapters < rr.Replicas {
			fmt.Fprintf(stdout, "(%d replicas took turns at %d adapters, so the scaling cannot reach 1: read the exchange time)\n", rr.Replicas, rr.Adapters)
		}
	}
	return nil
}

// maxWarmupSteps bounds timeSteps' warm-up.
const maxWarmupSteps = 20

// timeSteps builds a trainer for cfg and returns the mean wall time and
// counted product FLOPs (gpu.Device.FLOPs) of one step over steps steps
// after warm-up steps (until one compiles no new
// pipeline and is no faster than the one before, at most maxWarmupSteps;
// it returns how many), on one batch of random size x size images with
// chans channels uploaded once. With prof set, it then profiles as many
// steps again and lists the largest buffers to profOut.
func timeSteps(d *gpu.Device, cfg train.Config, size, chans, steps int, prof *gpu.Profile, profOut io.Writer) (secs, flops float64, warmups int, err error) {
	tr, err := train.NewTrainer(d, cfg)
	if err != nil {
		return 0, 0, 0, err
	}
	defer tr.Release()
	batch, err := randomImages(d, cfg.Batch, size, chans, 3)
	if err != nil {
		return 0, 0, 0, err
	}
	defer batch.Release()
	w := gpu.NewWarmUp(d, maxWarmupSteps)
	if err := w.Repeat(func() error { _, err := tr.Step(batch); return err }); err != nil {
		return 0, 0, 0, fmt.Errorf("warm-up step: %w", err)
	}
	start, counted := time.Now(), d.FLOPs()
	for i := 0; i < steps; i++ {
		if _, err := tr.Step(batch); err != nil {
			return 0, 0, 0, err
		}
	}
	d.Sync()
	secs = time.Since(start).Seconds() / float64(steps)
	flops = float64(d.FLOPs()-counted) / float64(steps)
	if prof != nil {
		d.SetProfile(prof)
		defer d.SetProfile(nil)
		for i := 0; i < steps; i++ {
			if _, err := tr.Step(batch); err != nil {
				return 0, 0, 0, err
			}
		}
		writeLiveBuffers(profOut, d.LiveBuffers(), 30)
	}
	return secs, flops, w.Runs(), nil
}

// randomImages uploads n random size x size images of chans channels.
func randomImages(d *gpu.Device, n, size, chans int, seed uint64) (*nn.ImageBatch, error) {
	rng := rand.New(rand.NewPCG(seed, 4))
	imgs := make([]nn.Image, n)
	for i := range imgs {
		pix := make([]byte, size*size*chans)
		for j := range pix {
			pix[j] = byte(rng.IntN(256))
		}
		imgs[i] = nn.Image{H: size, W: size, C: chans, Pix: pix}
	}
	return nn.UploadImages(d, imgs)
}

// replicaResult is the line -replicas adds.
type replicaResult struct {
	Name     string  `json:"name"` // train/<config>/b<batch>/k<prototypes>/x<replicas>
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"` // images/s of all replicas together
	Replicas int     `json:"replicas"`
	Adapters int     `json:"adapters"`
	// Scaling is Value over replicas times one device's images/s at the
	// same per-replica batch (measured just before): 1 is perfect.
	Scaling        float64 `json:"scaling"`
	SecondsPerStep float64 `json:"seconds_per_step"`
	// ExchangeSeconds is replica 0's mean train.Losses.Exchange per step.
	ExchangeSeconds float64 `json:"exchange_seconds_per_step"`
	// WaitSeconds is the part of ExchangeSeconds replica 0 spent waiting
	// for the others (train.Losses.Wait): with replicas sharing a GPU or
	// CPU it is mostly their turns at the device, not transfer.
	WaitSeconds float64 `json:"wait_seconds_per_step"`
	Steps       int     `json:"steps"`
}

// timeReplicas trains n replicas of cfg in this process, each on a device
// of its own (on the adapters in turn where there are several), joined over
// loopback TCP, and returns replica 0's mean step, exchange and wait times
// over steps steps after warmup ones (a fixed number: every replica must
// take as many steps).
func timeReplicas(cfg train.Config, n, size, chans, warmup, steps int) (replicaTiming, int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return replicaTiming{}, 0, err
	}
	addr := l.Addr().String()
	l.Close()
	adapters := len(gpu.Adapters())
	cfg.Replicas = n
	res := make([]replicaTiming, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[r], errs[r] = func() (replicaTiming, error) {
				adapter := -1
				if adapters > 1 {
					adapter = r % adapters
				}
				d, err := gpu.OpenAdapter(adapter)
				if err != nil {
					return replicaTiming{}, err
				}
				defer d.Close()
				g, err := dist.Join(context.Background(), dist.Options{Rank: r, Size: n, Addr: addr})
				if err != nil {
					return replicaTiming{}, err
				}
				defer g.Close()
				tr, err := train.NewReplica(d, cfg, g)
				if err != nil {
					return replicaTiming{}, err
				}
				defer tr.Release()
				batch, err := randomImages(d, cfg.Batch, size, chans, 3+uint64(r))
				if err != nil {
					return replicaTiming{}, err
				}
				defer batch.Release()
				var ex, wait time.Duration
				var start time.Time
				for i := range warmup + steps {
					if i == warmup {
						d.Sync()
						start = time.Now()
					}
					lo, err := tr.Step(batch)
					if err != nil {
						return replicaTiming{}, fmt.Errorf("replica %d: %w", r, err)
					}
					if i >= warmup {
						ex += lo.Exchange
						wait += lo.Wait
					}
				}
				d.Sync()
				per := func(d time.Duration) float64 { return d.Seconds() / float64(steps) }
				return replicaTiming{secs: per(time.Since(start)), exchange: per(ex), wait: per(wait)}, nil
			}()
		}()
	}
	wg.Wait()
	return res[0], adapters, errors.Join(errs...)
}

// replicaTiming is one replica's mean seconds per step: in all, exchanging
// (train.Losses.Exchange) and waiting within that (train.Losses.Wait).
type replicaTiming struct{ secs, exchange, wait float64 }

// writeLiveBuffers prints the n largest buffers and the total of all.
func writeLiveBuffers(w io.Writer, bs []gpu.LiveBuffer, n int) {
	var total uint64
	for _, b := range bs {
		total += b.Bytes
	}
	fmt.Fprintf(w, "%d buffers, %.1f MiB; the largest:\n", len(bs), float64(total)/(1<<20))
	for _, b := range bs[:min(n, len(bs))] {
		fmt.Fprintf(w, "  %8.2f MiB  %s\n", float64(b.Bytes)/(1<<20), b.Label)
	}
}
