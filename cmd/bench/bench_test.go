//go:build !js

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKernelsQuickJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"kernels", "-quick", "-json"}, &out, &errOut), errOut.String())
	names := map[string]bool{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r struct {
			Name          string   `json:"name"`
			Value         float64  `json:"value"`
			Unit          string   `json:"unit"`
			PeakRatio     *float64 `json:"peak_ratio"`
			BaselineRatio *float64 `json:"baseline_ratio"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r), sc.Text())
		require.NotNil(t, r.PeakRatio, sc.Text())
		require.Greater(t, *r.PeakRatio, 0.0, sc.Text())
		require.Less(t, *r.PeakRatio, 1.5, sc.Text())
		require.Greater(t, r.Value, 0.0, sc.Text())
		require.Contains(t, []string{"GFLOP/s", "GB/s"}, r.Unit)
		if r.BaselineRatio != nil {
			require.Greater(t, *r.BaselineRatio, 0.0, sc.Text())
		}
		names[r.Name] = true
	}
	for _, n := range []string{peakFMA, peakCopy, "matmul/256x256x256", "linear_fwd/257x96x288"} {
		require.True(t, names[n], "missing case %s in\n%s", n, out.String())
	}
}

func TestCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run([]string{"train"}, &out, &errOut)
	require.ErrorContains(t, err, "train is not built yet")
	require.Error(t, run([]string{"nonsense"}, &out, &errOut))
	require.Contains(t, errOut.String(), `unknown command "nonsense"`)
	errOut.Reset()
	require.NoError(t, run([]string{"kernels", "-help"}, &out, &errOut))
	for _, f := range []string{"-json", "-quick", "-run", "-time", "-reps", "peak/fma", "baseline_ratio"} {
		require.True(t, strings.Contains(errOut.String(), f), "help lacks %s:\n%s", f, errOut.String())
	}
	err = run([]string{"kernels", "-run", "nomatch$^"}, &out, &errOut)
	require.ErrorContains(t, err, "matches no case")
}
