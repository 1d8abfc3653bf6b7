package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// options configure one kernels run.
type options struct {
	json    bool
	quick   bool
	images  int // the linear and attention cases' batch of 257-token images
	match   *regexp.Regexp
	minTime time.Duration
	maxReps int
	// torchDevice is where the matmul baseline runs: "cpu" (numpy) or a
	// CUDA device (torch).
	torchDevice string
	tilings     []nn.Tiling // matmul_tiled tilings to compare
	// profile, when set, receives each selected case's kernels, timed
	// alone in one more run of it.
	profile io.Writer
}

func kernels(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kernels", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.BoolVar(&o.json, "json", false, `print one JSON object per line: {"name","value","unit","peak_ratio"[,"baseline_ratio"]}`)
	fs.BoolVar(&o.quick, "quick", false, "small shapes and short timings (a smoke test, not a measurement)")
	fs.IntVar(&o.images, "images", 8, "images of 257 tokens in the linear-layer and attention cases (a training step of 32 images, 2 global crops each: 64)")
	pattern := fs.String("run", "", "time only the cases whose name matches this regexp (the ceilings always run)")
	tilings := fs.String("tilings", "", "also time every matmul case through matmul_tiled (the GPU kernel) with each of these tilings, comma-separated TILExBK[c][w][p][v][sN] (c: contiguous vec4 reads, w: spread columns, p: prefetch, v: vec4 loads, sN: k in N parts), e.g. 4x16,8x8cwp,4x16cpv")
	fs.DurationVar(&o.minTime, "time", time.Second, "time each case for at least this long after a warm-up run")
	fs.IntVar(&o.maxReps, "reps", 50, "but stop after this many timed runs (at least 3 always run)")
	profile := fs.Bool("profile", false, "after timing, run each selected case once more timing each kernel alone (GPU timestamps where the device has them) and print where its time went, by kernel, to stderr (on lavapipe a kernel of many small dispatches looks slower alone than it runs among others)")
	fs.StringVar(&o.torchDevice, "torch-device", "cpu", "matmul baseline: cpu (numpy) or cuda (torch.matmul on an NVIDIA GPU; see WEBDINO_PYTHON)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: bench kernels [flags]

Times each kernel case on the current WebGPU device: a warm-up run, then
repeated runs until -time has passed or -reps runs are done; the median is
reported. Every run also measures the device's ceilings, which the cases are
divided by (peak_ratio): "peak/fma" (GFLOP/s of independent vec4 FMA chains)
for compute cases and "peak/copy" (GB/s of a vec4 copy, read + write bytes)
for memory-bound cases. Matmul cases are also divided by numpy float32 matmul
on the same shapes (baseline_ratio) when /usr/bin/python3 has numpy, or with
-torch-device cuda by torch.matmul in float32 on that GPU; WEBDINO_PYTHON
names another interpreter. On a GPU, runs are timed by its timestamp
queries, and a case whose run is shorter than 2 ms is recorded several times
in one submission and the time divided, so that launch latency counts as it
would inside a training step. Adapter information goes to stderr.

Matmul cases are named family/MxKxN for C[M,N] = A[M,K] B[K,N]: matmul is a
plain square product; linear_fwd (y = x W^T), linear_dx (dx = dy W) and
linear_dw (dW = dy^T x) are the three products of a ViT-S/14 linear layer
over -images x 257 tokens (-quick: 1 image, narrower layers, 0.1 s per case).

flags:
`)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	if *profile {
		o.profile = stderr
	}
	var err error
	if o.match, err = regexp.Compile(*pattern); err != nil {
		return fmt.Errorf("-run: %w", err)
	}
	if o.tilings, err = parseTilings(*tilings); err != nil {
		return err
	}
	if o.images < 1 {
		return fmt.Errorf("-images %d: want at least 1", o.images)
	}
	if o.quick {
		o.minTime = min(o.minTime, 100*time.Millisecond)
	}

	d, err := gpu.Open()
	if err != nil {
		return err
	}
	defer d.Close()
	reportDevice(stderr, d)

	results, err := measure(d, o, stderr)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		for _, r := range results {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "case\tvalue\tunit\tof peak\tvs baseline\t")
	for _, r := range results {
		base := "-"
		if r.BaselineRatio != nil {
			base = fmt.Sprintf("%.2fx", *r.BaselineRatio)
		}
		fmt.Fprintf(w, "%s\t%.2f\t%s\t%.1f%%\t%s\t\n", r.Name, r.Value, r.Unit, 100*r.PeakRatio, base)
	}
	return w.Flush()
}

// result is one reported line.
type result struct {
	Name          string   `json:"name"`
	Value         float64  `json:"value"`
	Unit          string   `json:"unit"`
	PeakRatio     float64  `json:"peak_ratio"`
	BaselineRatio *float64 `json:"baseline_ratio,omitempty"`
}

// measure times the ceilings and every selected case.
func measure(d *gpu.Device, o options, stderr io.Writer) ([]result, error) {
	sizes := fullSizes
	sizes.tokens = o.images * 257
	if o.quick {
		sizes = quickSizes
	}
	ceil, cs := ceilings(sizes), kernelCases(sizes)
	cs = append(cs, tilingCases(cs, o.tilings)...)
	var selected []benchCase
	for _, c := range cs {
		if o.match.MatchString(c.name) {
			selected = append(selected, c)
		}
	}
	if len(selected) == 0 {
		return nil, fmt.Errorf("-run %q matches no case", o.match)
	}
	rates := map[string]float64{}
	for i, c := range append(ceil, selected...) {
		co := o
		if i < len(ceil) {
			co.profile = nil
		}
		r, err := timeCase(d, c, co)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		rates[c.name] = r
	}
	baseline, err := matmulBaseline(selected, o)
	if err != nil {
		fmt.Fprintln(stderr, "no matmul baseline:", err)
	}
	var out []result
	for _, c := range append(ceil, selected...) {
		r := result{Name: c.name, Value: rates[c.name], Unit: "GFLOP/s", PeakRatio: rates[c.name] / rates[peakFMA]}
		if c.flops == 0 {
			r.Unit, r.PeakRatio = "GB/s", rates[c.name]/rates[peakCopy]
		}
		if b, ok := baseline[c.name]; ok && b > 0 {
			ratio := r.Value / b
			r.BaselineRatio = &ratio
		}
		out = append(out, r)
	}
	return out, nil
}

// A timed submission should last minRunTime at least, so that submission and
// readback latency (tens of microseconds) stay out of a fast GPU's figures;
// shorter cases are recorded up to maxRecordings times in it.
const (
	minRunTime    = 2 * time.Millisecond
	maxRecordings = 256
)

// timeCase returns the median rate of c in GFLOP/s or GB/s.
func timeCase(d *gpu.Device, c benchCase, o options) (float64, error) {
	e := &env{d: d, rng: rand.New(rand.NewPCG(1, 2))}
	defer e.release()
	record := c.setup(e)
	if e.err != nil {
		return 0, e.err
	}
	reps := 1 // recordings of the case per submission
	once := func() (time.Duration, error) {
		rec := d.Record()
		for range reps {
			if err := record(rec); err != nil {
				return 0, err
			}
		}
		run := rec.RunTimed // a GPU's own clock: no submission or wake-up latency
		if d.Info().IsCPU() {
			run = rec.Run // lavapipe's timestamps add nothing to the wall clock
		}
		t, err := run()
		return t / time.Duration(reps), err
	}
	if _, err := once(); err != nil { // compiles the kernels, touches the memory
		return 0, err
	}
	t, err := once()
	if err != nil {
		return 0, err
	}
	if t < minRunTime {
		reps = min(maxRecordings, int(minRunTime/max(t, time.Microsecond))+1)
	}
	var ts []time.Duration
	start := time.Now()
	for len(ts) < 3 || (time.Since(start) < o.minTime && len(ts) < o.maxReps) {
		t, err := once()
		if err != nil {
			return 0, err
		}
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	if o.profile != nil {
		prof := gpu.NewProfile()
		d.SetProfile(prof)
		reps = 1
		_, err := once()
		d.SetProfile(nil)
		if err != nil {
			return 0, err
		}
		fmt.Fprintf(o.profile, "profile of %s, each kernel timed alone:\n", c.name)
		if err := prof.Write(o.profile); err != nil {
			return 0, err
		}
	}
	work := c.flops
	if work == 0 {
		work = c.bytes
	}
	return work / ts[len(ts)/2].Seconds() / 1e9, nil
}

// env gives a case its tensors and releases them when the case is done. The
// first error is kept so setup code stays short.
type env struct {
	d    *gpu.Device
	rng  *rand.Rand
	bufs []*gpu.Buffer
	err  error
}

// randn allocates a tensor of standard-normal values.
func (e *env) randn(shape ...int) *gpu.Tensor {
	n := 1
	for _, s := range shape {
		n *= s
	}
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(e.rng.NormFloat64())
	}
	return e.keep(e.d.Upload("bench", x, shape...))
}

// zeros allocates a zeroed tensor.
func (e *env) zeros(shape ...int) *gpu.Tensor { return e.keep(e.d.NewTensor("bench", shape...)) }

func (e *env) keep(t *gpu.Tensor, err error) *gpu.Tensor {
	if err != nil {
		if e.err == nil {
			e.err = err
		}
		return nil
	}
	e.bufs = append(e.bufs, t.Buf)
	return t
}

func (e *env) release() {
	for _, b := range e.bufs {
		b.Release()
	}
}
