package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/webdino/webdino/assets"
	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/internal/browser"
	"github.com/webdino/webdino/nn"
)

// exportScript writes the benchmark model as .pth and .onnx, relative to the
// repository root.
const exportScript = "scripts/reference/export_onnx.py"

// browserFiles are the driving script (bench.js) and the onnxruntime-web page.
//
//go:embed browser/bench.js browser/ort.html
var browserFiles embed.FS

// forwardStep is the viewer's step (wasm/viewer.Run) that times the model:
// the forward pass and the readback of its tokens and CLS attention.
const forwardStep = "model forward + readback (GPU)"

// browserResult is the one line browser reports.
type browserResult struct {
	Name            string    `json:"name"` // browser/<model>/<short>, or browser-firefox/... in Firefox
	Value           float64   `json:"value"`
	Unit            string    `json:"unit"`                     // ms/image
	BaselineRatio   *float64  `json:"baseline_ratio,omitempty"` // onnx ms / webdino ms
	WebdinoMs       []float64 `json:"webdino_ms"`               // the page's forward step, each run
	WebdinoTotalMs  []float64 `json:"webdino_total_ms"`         // all steps of each run (upload, resize, PCA, ...)
	WebdinoWarmupMs float64   `json:"webdino_warmup_ms"`
	ONNXMs          []float64 `json:"onnx_ms,omitempty"`
	ONNXEP          string    `json:"onnx_ep,omitempty"` // the execution provider that ran
	ONNXWarmupMs    float64   `json:"onnx_warmup_ms,omitempty"`
	ONNXFailed      []string  `json:"onnx_failed,omitempty"` // providers that failed, with why
	ORTVersion      string    `json:"ort_version,omitempty"`
	ORTThreads      int       `json:"ort_wasm_threads,omitempty"` // CPU threads of ORT's wasm (kernels the EP lacks)
	Weights         string    `json:"weights"`                    // where both models' weights came from
	BaselineMissing string    `json:"baseline_missing,omitempty"`
	Iters           int       `json:"iters"`
	Input           []int     `json:"input"` // [H, W] of the model input
	Model           string    `json:"model"`
	Device          string    `json:"device"` // the page's WebGPU adapter
	Browser         string    `json:"browser"`
}

// pageRun is what bench.js reads back.
type pageRun struct {
	Browser, Adapter, Model, Error string
	Input                          []int
	Warmup                         pageTimings
	Runs                           []pageTimings
	Ort                            []struct {
		EP, Version, Adapter, Error string
		CreateMs, WarmupMs          float64
		Threads                     int
		Ms                          []float64
		OutputDims                  []int
	}
	Console []string
}

type pageTimings struct {
	Steps []struct {
		Name string
		Ms   float64
	}
	TotalMs float64
}

// forwardMs returns the page's time of the forward step.
func (t pageTimings) forwardMs() (float64, error) {
	for _, s := range t.Steps {
		if s.Name == forwardStep {
			return s.Ms, nil
		}
	}
	return 0, fmt.Errorf("the page reported no %q step", forwardStep)
}

func browserBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("browser", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, `print one JSON object: {"name","value" (ms/image),"unit","baseline_ratio",...}`)
	model := fs.String("model", "vits14", "backbone preset: "+fmt.Sprint(nn.PresetNames()))
	short := fs.Int("short", 224, "image side in pixels (a multiple of the patch size; the photo is square)")
	depth := fs.Int("depth", 0, "override the preset's number of blocks (0: keep; small values for smoke tests)")
	iters := fs.Int("iters", 5, "timed runs after one warm-up run, each side")
	ep := fs.String("ep", "webgpu", "onnxruntime-web execution provider: webgpu (falls back to wasm if it fails), wasm, or none")
	engine := fs.String("browser", "chromium", "the browser: chromium (WebGPU on SwiftShader) or firefox (Firefox ESR with dom.webgpu.enabled: WebGPU through wgpu on the Vulkan driver)")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: bench browser [flags]

Times the backbone in a headless browser (-browser: Debian's Chromium,
WebGPU on SwiftShader without a GPU, or Firefox ESR, WebGPU through wgpu on
the Vulkan driver; as the browser test drives them), in the viewer page
itself: the wasm of this checkout is built, the page is served from
this process on a free 127.0.0.1 port, a checkpoint of the preset with
random weights is loaded through the page's file picker, and the square
astronaut photo is run at -short, once to warm up, then -iters times.
value is the mean of the page's own "`+forwardStep+`" step.

The baseline is the same model with the same weights in onnxruntime-web
(scripts/setup-browser.sh installs it), exported by `+exportScript+`
(/usr/bin/python3 with torch) and run in the same browser with the -ep
execution provider: one warm-up session.run, then -iters timed ones, each
awaited with its output on the CPU (webdino's step also reads its tokens
and the last block's CLS attention back). The ONNX graph holds the position
embeddings already interpolated to the input grid; webdino interpolates them
in every forward (a small cost). baseline_ratio = onnx ms / webdino ms
(above 1: webdino is faster). Pages are served cross-origin isolated, so
onnxruntime-web's wasm may use all cores. Without torch the webdino side gets
random Go weights and the baseline is reported missing.

flags:
`)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 || *iters < 1 || *depth < 0 || !slices.Contains([]string{"webgpu", "wasm", "none"}, *ep) || !slices.Contains(browser.Browsers, *engine) {
		fs.Usage()
		return errUsage
	}
	cfg, err := presetModel(*model, *depth, "short", *short)
	if err != nil {
		return err
	}
	tools, missing := browser.Find(*engine)
	if missing != "" {
		return fmt.Errorf("%s (run scripts/setup-browser.sh)", missing)
	}
	root, err := findScript("go.mod")
	if err != nil {
		return err
	}
	root = filepath.Dir(root)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "webdino-bench-browser-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintln(stderr, "building the wasm")
	if err := buildWasm(ctx, root, filepath.Join(dir, "build")); err != nil {
		return err
	}
	r := browserResult{Unit: "ms/image", Iters: *iters}
	name := *model
	if *depth > 0 {
		name = fmt.Sprintf("%s-depth%d", name, *depth)
	}
	r.Name = fmt.Sprintf("browser/%s/%d", name, *short)
	if *engine != "chromium" {
		r.Name = fmt.Sprintf("browser-%s/%s/%d", *engine, name, *short)
	}

	bench := filepath.Join(dir, "bench")
	if err := os.Mkdir(bench, 0o755); err != nil {
		return err
	}
	ort := filepath.Join(tools.NodePath, "onnxruntime-web", "dist")
	switch {
	case *ep == "none":
		r.BaselineMissing = "not run (-ep none)"
	case !exists(filepath.Join(ort, "ort.webgpu.min.mjs")):
		r.BaselineMissing = "onnxruntime-web is not installed in " + tools.NodePath + " (run scripts/setup-browser.sh)"
	}
	c, weights, err := benchModel(ctx, cfg, *short, bench, r.BaselineMissing == "")
	if err != nil {
		return err
	}
	r.Weights = weights
	if !exists(filepath.Join(bench, "model.onnx")) && r.BaselineMissing == "" {
		r.BaselineMissing = weights
	}
	if err := ckpt.WriteFile(filepath.Join(bench, "model.msgpack"), c); err != nil {
		return err
	}
	page, err := browserFiles.ReadFile("browser/ort.html")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bench, "ort.html"), page, 0o644); err != nil {
		return err
	}
	script := filepath.Join(dir, "bench.js")
	js, err := browserFiles.ReadFile("browser/bench.js")
	if err != nil {
		return err
	}
	if err := os.WriteFile(script, js, 0o644); err != nil {
		return err
	}

	url, stop, err := serveBench(dir, ort)
	if err != nil {
		return err
	}
	defer stop()
	epArg := *ep
	if r.BaselineMissing != "" {
		epArg = ""
	}
	out := filepath.Join(dir, "result.json")
	cmd, err := tools.Command(ctx, dir, script, url, out, fmt.Sprint(*short), fmt.Sprint(*iters),
		filepath.Join(bench, "model.msgpack"), filepath.Join(root, "assets", "photos", "astronaut.jpg"), epArg)
	if err != nil {
		return err
	}
	cmd.Stderr = stderr
	fmt.Fprintf(stderr, "running %s in %s on %s\n", r.Name, tools.Binary, url)
	runErr := cmd.Run()
	b, err := os.ReadFile(out)
	if err != nil {
		return fmt.Errorf("the browser driver wrote no result (%v): %w", runErr, err)
	}
	var p pageRun
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("the browser driver's result: %w", err)
	}
	if runErr != nil || p.Error != "" {
		return fmt.Errorf("in the browser: %v: %s\npage console:\n%s", runErr, p.Error, strings.Join(p.Console, "\n"))
	}
	for _, l := range p.Console {
		fmt.Fprintln(stderr, "page console:", l)
	}
	r.Browser, r.Device, r.Model, r.Input = p.Browser, p.Adapter, p.Model, p.Input
	if r.WebdinoWarmupMs, err = p.Warmup.forwardMs(); err != nil {
		return err
	}
	for _, t := range p.Runs {
		ms, err := t.forwardMs()
		if err != nil {
			return err
		}
		r.WebdinoMs = append(r.WebdinoMs, ms)
		r.WebdinoTotalMs = append(r.WebdinoTotalMs, t.TotalMs)
	}
	r.Value = mean(r.WebdinoMs)
	for _, o := range p.Ort {
		if o.Error != "" {
			r.ONNXFailed = append(r.ONNXFailed, o.EP+": "+o.Error)
			continue
		}
		r.ONNXEP, r.ONNXMs, r.ONNXWarmupMs, r.ORTVersion, r.ORTThreads = o.EP, o.Ms, o.WarmupMs, o.Version, o.Threads
		ratio := mean(o.Ms) / r.Value
		r.BaselineRatio = &ratio
	}
	if r.BaselineRatio == nil && r.BaselineMissing == "" {
		r.BaselineMissing = "onnxruntime-web failed: " + strings.Join(r.ONNXFailed, "; ")
	}
	if *jsonOut {
		return json.NewEncoder(stdout).Encode(r)
	}
	fmt.Fprintf(stdout, "%s: webdino %.1f ms per image (%dx%d input, mean of %d runs, page step %q; %s)\n",
		r.Name, r.Value, r.Input[0], r.Input[1], len(r.WebdinoMs), forwardStep, r.Device)
	if r.BaselineRatio != nil {
		fmt.Fprintf(stdout, "onnxruntime-web %s (%s EP): %.1f ms per image; onnx / webdino = %.2fx\n",
			r.ORTVersion, r.ONNXEP, mean(r.ONNXMs), *r.BaselineRatio)
	} else {
		fmt.Fprintln(stdout, "onnxruntime-web baseline missing:", r.BaselineMissing)
	}
	for _, f := range r.ONNXFailed {
		fmt.Fprintln(stdout, "onnxruntime-web provider failed:", f)
	}
	return nil
}

// benchModel returns the checkpoint webdino runs and says where its weights
// came from. With onnx, it asks exportScript for random weights as .pth
// (imported here, as cmd/convert does) and the same model as dir/model.onnx;
// without, or if that fails, it draws random weights in Go.
func benchModel(ctx context.Context, cfg nn.ViTConfig, size int, dir string, onnx bool) (*ckpt.Checkpoint, string, error) {
	why := "random, drawn in Go (no ONNX baseline)"
	if onnx {
		c, err := exportModel(ctx, cfg, size, dir)
		if err == nil {
			return c, "random (seed 0), from " + exportScript + ", the same in both", nil
		}
		why = "random, drawn in Go: no ONNX model: " + err.Error()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	c := &ckpt.Checkpoint{Config: cfg, Weights: map[string]ckpt.Tensor{}, Meta: map[string]string{"source": "bench browser, random"}}
	for _, p := range cfg.ParamShapes() {
		t := ckpt.Tensor{Shape: p.Shape}
		t.Data = randn(rng, t.Numel(), 0.02)
		c.Weights[p.Name] = t
	}
	return c, why, c.Check()
}

// exportModel runs exportScript for cfg at size x size into dir (model.pth,
// model.onnx) and imports the .pth.
func exportModel(ctx context.Context, cfg nn.ViTConfig, size int, dir string) (*ckpt.Checkpoint, error) {
	script, err := findScript(exportScript)
	if err != nil {
		return nil, err
	}
	pth := filepath.Join(dir, "model.pth")
	cmd := exec.CommandContext(ctx, pythonExe(), append([]string{script, "--pth", pth, "--onnx", filepath.Join(dir, "model.onnx")},
		torchModelArgs(cfg, "--grid", fmt.Sprint(cfg.PosGrid), "--size", fmt.Sprint(size))...)...)
	cmd.Env = baselineEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		if strings.Contains(string(out), "No module named 'torch'") {
			return nil, errors.New(pythonExe() + " has no torch (Debian: apt-get install python3-torch)")
		}
		return nil, fmt.Errorf("%s: %v: %s", exportScript, err, strings.TrimSpace(string(out)))
	}
	f, err := os.Open(pth)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	c, _, err := ckpt.Import(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pth, err)
	}
	if c.Config != cfg {
		return nil, fmt.Errorf("%s holds %s, want %s", pth, c.Config, cfg)
	}
	os.Remove(pth)
	return c, nil
}

// buildWasm builds the viewer's wasm into dir as `make wasm` does, with
// Go's wasm_exec.js beside it.
func buildWasm(ctx context.Context, root, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "webdino.wasm"), "./wasm")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the wasm: %v: %s", err, out)
	}
	goroot, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return err
	}
	execJS, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "wasm_exec.js"), execJS, 0o644)
}

// serveBench serves the viewer (assets.FS, with build/ and bench/ from dir)
// and onnxruntime-web's dist directory under /ort/ on a free 127.0.0.1 port
// (a secure context, so WebGPU is exposed). cmd/serve's handler lives in a
// main package that cannot be imported; net/http's file server knows the
// types that matter here (.wasm, .js, .mjs, .html). Every response opts into
// cross-origin isolation, which lets onnxruntime-web's wasm use threads.
func serveBench(dir, ort string) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/ort/", http.StripPrefix("/ort/", http.FileServerFS(os.DirFS(ort))))
	mux.Handle("/", http.FileServerFS(benchSite{local: os.DirFS(dir), site: assets.FS}))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cross-Origin-Opener-Policy", "same-origin")
			w.Header().Set("Cross-Origin-Embedder-Policy", "require-corp")
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String() + "/", func() { srv.Close() }, nil
}

// benchSite serves build/ and bench/ from the local directory and the rest
// from the embedded site.
type benchSite struct{ local, site fs.FS }

func (s benchSite) Open(name string) (fs.File, error) {
	if strings.HasPrefix(name, "build/") || strings.HasPrefix(name, "bench/") {
		return s.local.Open(name)
	}
	return s.site.Open(name)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func mean(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}
