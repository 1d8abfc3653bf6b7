//go:build !js

package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
)

// dev is the device every test in this package shares (lavapipe in CI).
var dev *gpu.Device

func TestMain(m *testing.M) {
	d, err := gpu.Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dev = d
	code := m.Run()
	d.Close()
	os.Exit(code)
}

// randn returns n standard-normal values scaled by std, as float64 (for the
// reference) and float32 (for the GPU) holding the same numbers.
func randn(rng *rand.Rand, n int, std float64) ([]float64, []float32) {
	x64 := make([]float64, n)
	x32 := make([]float32, n)
	for i := range x64 {
		x32[i] = float32(rng.NormFloat64() * std)
		x64[i] = float64(x32[i])
	}
	return x64, x32
}

// upload puts data on the device and releases it when the test ends.
func upload(t *testing.T, data []float32, shape ...int) *gpu.Tensor {
	t.Helper()
	x, err := dev.Upload(t.Name(), data, shape...)
	require.NoError(t, err)
	t.Cleanup(x.Buf.Release)
	return x
}

// zeros allocates a zeroed tensor released when the test ends.
func zeros(t *testing.T, shape ...int) *gpu.Tensor {
	t.Helper()
	x, err := dev.NewTensor(t.Name(), shape...)
	require.NoError(t, err)
	t.Cleanup(x.Buf.Release)
	return x
}

// run submits rec, waits, and fails the test on error.
func run(t *testing.T, rec *gpu.Recorder) {
	t.Helper()
	_, err := rec.Run()
	require.NoError(t, err)
}

// read copies a tensor back as float64.
func read(t *testing.T, x *gpu.Tensor) []float64 {
	t.Helper()
	v, err := dev.Read(x)
	require.NoError(t, err)
	out := make([]float64, len(v))
	for i, f := range v {
		out[i] = float64(f)
	}
	return out
}

// requireClose fails when any |got-want| > atol + rtol*|want|, reporting the
// worst element and the maximum absolute error.
func requireClose(t *testing.T, want, got []float64, atol, rtol float64, what string) {
	t.Helper()
	require.Equal(t, len(want), len(got), "%s: length", what)
	worst, worstIdx, maxAbs := 0.0, -1, 0.0
	for i := range want {
		if math.IsNaN(got[i]) || math.IsInf(got[i], 0) {
			t.Fatalf("%s: element %d is %v (want %v)", what, i, got[i], want[i])
		}
		d := math.Abs(got[i] - want[i])
		maxAbs = math.Max(maxAbs, d)
		if r := d / (atol + rtol*math.Abs(want[i])); r > worst {
			worst, worstIdx = r, i
		}
	}
	if worst > 1 {
		t.Fatalf("%s: element %d = %.7g, want %.7g (max abs error %.3g, tolerance %.3g + %.3g*|want|)",
			what, worstIdx, got[worstIdx], want[worstIdx], maxAbs, atol, rtol)
	}
}

// checkGradient compares an analytic gradient of the scalar function f at x
// with central finite differences, on up to 40 coordinates.
func checkGradient(t *testing.T, f func(x []float64) float64, x, grad []float64, what string) {
	t.Helper()
	const h = 1e-6
	step := 1
	if len(x) > 40 {
		step = len(x) / 40
	}
	for i := 0; i < len(x); i += step {
		old := x[i]
		x[i] = old + h
		fp := f(x)
		x[i] = old - h
		fm := f(x)
		x[i] = old
		num := (fp - fm) / (2 * h)
		if math.Abs(num-grad[i]) > 1e-6+1e-5*math.Abs(num) {
			t.Fatalf("%s: gradient[%d] = %.9g, finite difference %.9g", what, i, grad[i], num)
		}
	}
}

// dot is the scalar loss sum(w * y) used to turn a tensor op into f(x).
func dot(w, y []float64) float64 {
	var s float64
	for i := range w {
		s += w[i] * y[i]
	}
	return s
}
