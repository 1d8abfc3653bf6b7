package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// pythonExe is the interpreter of the Python baselines: $WEBDINO_PYTHON, or
// Debian's /usr/bin/python3 (python3-numpy, python3-torch). On a machine
// whose CUDA torch lives in another environment, point WEBDINO_PYTHON at it.
func pythonExe() string {
	if p := os.Getenv("WEBDINO_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

// npMatMul is one matmul for numpyScript: storage shapes and transposes.
type npMatMul struct {
	Name           string
	A, B           []int
	TransA, TransB bool
}

// numpyScript times each matmul it reads from stdin like timeCase does and
// prints {name: GFLOP/s}. Arguments: minimum seconds, maximum runs.
const numpyScript = `
import json, sys, time
import numpy as np
min_time, max_reps = float(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
out = {}
for c in json.load(sys.stdin):
    a = rng.standard_normal(c["A"], dtype=np.float32)
    b = rng.standard_normal(c["B"], dtype=np.float32)
    a = a.T if c["TransA"] else a
    b = b.T if c["TransB"] else b
    a @ b
    ts, start = [], time.perf_counter()
    while len(ts) < 3 or (time.perf_counter() - start < min_time and len(ts) < max_reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    ts.sort()
    out[c["Name"]] = 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / ts[len(ts) // 2] / 1e9
print(json.dumps(out))
`

// torchMatMulScript is numpyScript for torch.matmul on a CUDA device in
// float32 (TF32 off), timed with CUDA events over enough products per timed
// run to last about a millisecond. Arguments: minimum seconds, maximum runs,
// device.
const torchMatMulScript = `
import json, sys, time
import torch
min_time, max_reps, dev = float(sys.argv[1]), int(sys.argv[2]), torch.device(sys.argv[3])
torch.backends.cuda.matmul.allow_tf32 = False
gen = torch.Generator(device=dev).manual_seed(0)
out = {}
for c in json.load(sys.stdin):
    a = torch.randn(c["A"], generator=gen, device=dev)
    b = torch.randn(c["B"], generator=gen, device=dev)
    a = a.t() if c["TransA"] else a
    b = b.t() if c["TransB"] else b
    a @ b
    torch.cuda.synchronize(dev)
    t = time.perf_counter()
    a @ b
    torch.cuda.synchronize(dev)
    inner = max(1, min(1000, int(1e-3 / max(time.perf_counter() - t, 1e-6))))
    ts, start = [], time.perf_counter()
    while len(ts) < 3 or (time.perf_counter() - start < min_time and len(ts) < max_reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(inner):
            a @ b
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3 / inner)
    ts.sort()
    out[c["Name"]] = 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / ts[len(ts) // 2] / 1e9
print(json.dumps(out))
`

// matmulBaseline returns the baseline's GFLOP/s for the cases that have a
// matmul twin: numpy on the CPU, or torch on o.torchDevice when that is a
// CUDA device; or an error saying why there is no baseline.
func matmulBaseline(cs []benchCase, o options) (map[string]float64, error) {
	var specs []*npMatMul
	for _, c := range cs {
		if c.numpy != nil {
			specs = append(specs, c.numpy)
		}
	}
	if len(specs) == 0 {
		return nil, nil
	}
	in, err := json.Marshal(specs)
	if err != nil {
		return nil, err
	}
	python, lib := pythonExe(), "numpy"
	args := []string{"-c", numpyScript, fmt.Sprint(o.minTime.Seconds()), fmt.Sprint(o.maxReps)}
	if o.torchDevice != "cpu" {
		lib = "torch"
		args = []string{"-c", torchMatMulScript, fmt.Sprint(o.minTime.Seconds()), fmt.Sprint(o.maxReps), o.torchDevice}
	}
	cmd := exec.Command(python, args...)
	cmd.Env = baselineEnv()
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "No module named '"+lib+"'") {
			return nil, fmt.Errorf("%s has no %s (Debian: apt-get install python3-%s; or set WEBDINO_PYTHON)", python, lib, lib)
		}
		return nil, fmt.Errorf("%s: %v: %s", python, err, strings.TrimSpace(stderr.String()))
	}
	var rates map[string]float64
	if err := json.Unmarshal(out, &rates); err != nil {
		return nil, fmt.Errorf("%s baseline output %q: %w", lib, out, err)
	}
	return rates, nil
}

// baselineEnv is the environment of the Python baselines. These OpenBLAS
// overrides may be set for other tools on this machine; the baseline should
// see the CPU as OpenBLAS detects it.
func baselineEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPENBLAS_CORETYPE=") && !strings.HasPrefix(kv, "OPENBLAS_L2_SIZE=") {
			env = append(env, kv)
		}
	}
	return env
}
