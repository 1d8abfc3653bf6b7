package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// python is the interpreter whose numpy is the baseline.
const python = "/usr/bin/python3"

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

// numpyBaseline returns numpy's GFLOP/s for the cases that have a numpy
// twin, or an error saying why there is no baseline.
func numpyBaseline(cs []benchCase, o options) (map[string]float64, error) {
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
	cmd := exec.Command(python, "-c", numpyScript, fmt.Sprint(o.minTime.Seconds()), fmt.Sprint(o.maxReps))
	cmd.Env = baselineEnv()
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "No module named 'numpy'") {
			return nil, errors.New(python + " has no numpy (Debian: apt-get install python3-numpy)")
		}
		return nil, fmt.Errorf("%s: %v: %s", python, err, strings.TrimSpace(stderr.String()))
	}
	var rates map[string]float64
	if err := json.Unmarshal(out, &rates); err != nil {
		return nil, fmt.Errorf("numpy output %q: %w", out, err)
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
