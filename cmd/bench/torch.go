package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// torchScript is the PyTorch baseline of infer and train, relative to the
// repository root.
const torchScript = "scripts/reference/bench_torch.py"

// compareTorch runs bench_torch.py mode with args on device (cpu, cuda)
// when run is set and returns its figures and value / its images/s, or why
// there are none.
func compareTorch(run bool, device string, value float64, stderr io.Writer, mode string, args ...string) (t *torchResult, ratio *float64, missing string) {
	if !run {
		return nil, nil, "not run (-torch=false)"
	}
	t, err := torchBaseline(mode, append(args, "--device", device)...)
	if err != nil {
		fmt.Fprintln(stderr, "no torch baseline:", err)
		return nil, nil, err.Error()
	}
	if t.MatmulGFLOPs > 0 && t.MatmulGFLOPs < slowBLAS {
		fmt.Fprintf(stderr, "warning: torch's float32 matmul runs at %.1f GFLOP/s here, the speed of a reference BLAS: its baseline is not PyTorch's usual speed (Debian: apt-get install libopenblas0-pthread)\n", t.MatmulGFLOPs)
	}
	r := value / t.ImagesPerS
	return t, &r, ""
}

// slowBLAS is the CPU matmul rate (GFLOP/s) under which torch's BLAS is
// taken for a reference implementation: Debian's, without OpenBLAS, ran
// 1024^3 at 4-6 GFLOP/s on the 2-core CI machine, OpenBLAS at 300-360.
const slowBLAS = 20

// torchResult is what bench_torch.py prints.
type torchResult struct {
	ImagesPerS   float64 `json:"images_per_s"`
	PeakRSSBytes uint64  `json:"peak_rss_bytes,omitempty"` // train: peak RSS (VmHWM) growth over model build and steps
	Memory       string  `json:"memory,omitempty"`         // how PeakRSSBytes was measured
	Torch        string  `json:"torch"`
	Threads      int     `json:"threads"`
	Device       string  `json:"device"`                  // "cpu" or the CUDA device's name
	MatmulGFLOPs float64 `json:"matmul_gflops,omitempty"` // CPU: a float32 1024^3 matmul, which shows the BLAS torch uses
}

// String names the baseline for the text report.
func (t *torchResult) String() string {
	if t.Device == "" || t.Device == "cpu" {
		return fmt.Sprintf("torch %s CPU (%d threads, matmul %.0f GFLOP/s)", t.Torch, t.Threads, t.MatmulGFLOPs)
	}
	return fmt.Sprintf("torch %s on %s (float32, no TF32)", t.Torch, t.Device)
}

// torchBaseline runs bench_torch.py mode with args and returns its result,
// or an error saying why there is no baseline (no torch, no script).
func torchBaseline(mode string, args ...string) (*torchResult, error) {
	script, err := findScript(torchScript)
	if err != nil {
		return nil, err
	}
	python := pythonExe()
	cmd := exec.Command(python, append([]string{script, mode}, args...)...)
	cmd.Env = baselineEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "No module named 'torch'") {
			return nil, errors.New(python + " has no torch (Debian: apt-get install python3-torch; or set WEBDINO_PYTHON)")
		}
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no %s", python)
		}
		return nil, fmt.Errorf("%s %s: %v: %s", python, torchScript, err, strings.TrimSpace(stderr.String()))
	}
	var r torchResult
	if err := json.Unmarshal(out, &r); err != nil || r.ImagesPerS <= 0 {
		return nil, fmt.Errorf("%s output %q: %v", torchScript, out, err)
	}
	return &r, nil
}

// findScript looks for rel in the working directory and its parents, so the
// command works from the repository root (go run) and from cmd/bench (go test).
func findScript(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found above the working directory", rel)
		}
		dir = parent
	}
}
