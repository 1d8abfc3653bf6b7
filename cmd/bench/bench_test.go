//go:build !js

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
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
	err := run([]string{"nonsense"}, &out, &errOut)
	require.Error(t, err)
	require.Contains(t, errOut.String(), `unknown command "nonsense"`)
	errOut.Reset()
	require.NoError(t, run([]string{"kernels", "-help"}, &out, &errOut))
	for _, f := range []string{"-json", "-quick", "-run", "-time", "-reps", "peak/fma", "baseline_ratio"} {
		require.True(t, strings.Contains(errOut.String(), f), "help lacks %s:\n%s", f, errOut.String())
	}
	err = run([]string{"kernels", "-run", "nomatch$^"}, &out, &errOut)
	require.ErrorContains(t, err, "matches no case")
}

// decodeOne parses the single JSON line of an infer or train run into v.
func decodeOne(t *testing.T, out []byte, v any) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 1, string(out))
	dec := json.NewDecoder(strings.NewReader(lines[0]))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v), lines[0])
}

// requireBaseline checks that a run has either a positive baseline ratio
// with torch's figures, or says why the baseline is missing.
func requireBaseline(t *testing.T, ratio *float64, torch *torchResult, missing string) {
	t.Helper()
	if ratio == nil {
		require.NotEmpty(t, missing)
		require.Nil(t, torch)
		return
	}
	require.Empty(t, missing)
	require.Greater(t, *ratio, 0.0)
	require.NotNil(t, torch)
	require.Greater(t, torch.ImagesPerS, 0.0)
	require.Greater(t, torch.Threads, 0)
}

func TestInferTinyJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"infer", "-json", "-batch", "2", "-size", "42", "-depth", "1", "-iters", "1"}, &out, &errOut), errOut.String())
	var r inferResult
	decodeOne(t, out.Bytes(), &r)
	require.Equal(t, "infer/vits14-depth1/42/b2", r.Name)
	require.Equal(t, "images/s", r.Unit)
	require.Greater(t, r.Value, 0.0)
	require.Greater(t, r.GFLOPs, 0.0)
	require.Greater(t, r.PeakGFLOPs, 0.0)
	require.InDelta(t, r.GFLOPs/r.PeakGFLOPs, r.PeakRatio, 1e-9)
	// 9 patches, 10 tokens, D 384, H 1536: see vitFLOPs.
	want := 2*9*588*384.0 + 2*10*384*1152 + 4*10*10*384 + 2*10*384*384 + 4*10*384*1536
	require.InDelta(t, want/1e9, r.GFLOPPerImage, 1e-12)
	requireBaseline(t, r.BaselineRatio, r.Torch, r.BaselineMissing)
}

// vitFLOPs, the analytic count behind infer's GFLOP/s, is what the forward
// pass's products record (gpu.Device.FLOPs), registers included.
func TestViTFLOPsAsRecorded(t *testing.T) {
	d, err := gpu.Open()
	require.NoError(t, err)
	defer d.Close()
	for _, name := range []string{"vits14", "vits14_reg"} {
		cfg, err := presetModel(name, 1, "-size", 42)
		require.NoError(t, err)
		before := d.FLOPs()
		_, err = timeForward(d, cfg, 2, 42, 1, nil)
		require.NoError(t, err)
		passes := 1 + 1 // timeForward's warm-up pass and one timed one
		require.Equal(t, 2*passes*int(vitFLOPs(cfg, 42, 42)), int(d.FLOPs()-before), name)
	}
}

// TestProfiles checks that -profile lists the kernels of a benchmark case,
// a forward pass and a training step, each with its calls and time.
func TestProfiles(t *testing.T) {
	for _, args := range [][]string{
		{"kernels", "-quick", "-run", "attention_fwd/", "-profile"},
		{"infer", "-batch", "1", "-size", "28", "-depth", "1", "-iters", "1", "-torch=false", "-profile"},
		{"train", "-config", "demo", "-batch", "2", "-prototypes", "64", "-steps", "1", "-torch=false", "-profile"},
	} {
		var out, errOut bytes.Buffer
		require.NoError(t, run(args, &out, &errOut), errOut.String())
		_, table, ok := strings.Cut(errOut.String(), "each kernel timed alone:\n")
		require.True(t, ok, "%s: no profile in\n%s", args[0], errOut.String())
		require.Regexp(t, `(?m)^\s*kernel\s+calls\s+total ms\s+share\s+mean µs$`, table, args[0])
		require.Regexp(t, `(?m)^\s*matmul_\S+.*\s[1-9]\d*\s+\d+\.\d+\s+\d+\.\d%`, table, args[0])
		if args[0] == "kernels" {
			require.Regexp(t, `(?m)^\s*softmax\s+[1-9]`, table, args[0])
		} else {
			require.Regexp(t, `(?m)^\s*layernorm\s+[1-9]`, table, args[0])
		}
	}
}

func TestTrainTinyJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"train", "-json", "-config", "demo", "-batch", "2", "-prototypes", "64", "-steps", "1"}, &out, &errOut), errOut.String())
	var r trainResult
	decodeOne(t, out.Bytes(), &r)
	require.Equal(t, "train/demo/b2/k64", r.Name)
	require.Equal(t, "images/s", r.Unit)
	require.Greater(t, r.Value, 0.0)
	require.Equal(t, trainShape{Config: "demo", Model: "dim 64, depth 4, heads 4, patch 4", Batch: 2, GlobalSize: 28, LocalSize: 12,
		Locals: 4, Prototypes: 64, HeadHidden: 256, Bottleneck: 64, ImageSize: 28, ImageChans: 1}, r.Ran)
	// At least the student's parameters, gradients and two AdamW moments.
	require.Greater(t, r.DevicePeakBytes, uint64(4*4*200_000))
	// The student's linear layers alone do 2 x 53248 FLOP per token and
	// block forward: 0.085 GFLOP over 4 crops of 50 tokens and 4 blocks,
	// about three times that with the backward and the teacher.
	require.Greater(t, r.GFLOPPerStep, 0.25)
	require.Less(t, r.GFLOPPerStep, 2.5)
	require.InDelta(t, r.GFLOPPerStep/r.SecondsPerStep, r.GFLOPs, 1e-9*r.GFLOPs)
	require.InDelta(t, r.GFLOPs/r.PeakGFLOPs, r.PeakRatio, 1e-12)
	requireBaseline(t, r.BaselineRatio, r.Torch, r.BaselineMissing)
	if r.Torch != nil {
		require.Greater(t, r.Torch.PeakRSSBytes, uint64(0))
		require.NotEmpty(t, r.Torch.Memory)
	}
}

func TestInferTrainFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"infer", "-help"}, &out, &errOut))
	for _, f := range []string{"-json", "-batch", "-model", "-size", "-depth", "-iters", "-torch", "-profile", "baseline_ratio"} {
		require.Contains(t, errOut.String(), f)
	}
	errOut.Reset()
	require.NoError(t, run([]string{"train", "-help"}, &out, &errOut))
	for _, f := range []string{"-json", "-config", "-batch", "-steps", "-prototypes", "-locals", "-torch", "-profile", "-replicas", "device_peak_bytes"} {
		require.Contains(t, errOut.String(), f)
	}
	require.ErrorContains(t, run([]string{"infer", "-model", "vitx"}, &out, &errOut), `unknown preset "vitx"`)
	require.ErrorContains(t, run([]string{"infer", "-size", "30"}, &out, &errOut), "multiple of the patch size 14")
	require.ErrorContains(t, run([]string{"train", "-config", "big"}, &out, &errOut), `-config "big"`)
}

func TestParseTilings(t *testing.T) {
	ts, err := parseTilings("8x8, 4x16c,8x16cp,4x8p,4x16cpv,4x16cps1,8x8s12,8x8cwpv")
	require.NoError(t, err)
	require.Equal(t, []nn.Tiling{{Tile: 8, BK: 8}, {Tile: 4, BK: 16, Contig: true},
		{Tile: 8, BK: 16, Contig: true, Prefetch: true}, {Tile: 4, BK: 8, Prefetch: true},
		{Tile: 4, BK: 16, Contig: true, Prefetch: true, Vec: true}, {Tile: 4, BK: 16, Contig: true, Prefetch: true, Split: 1},
		{Tile: 8, BK: 8, Split: 12}, {Tile: 8, BK: 8, Contig: true, Spread: true, Prefetch: true, Vec: true}}, ts)
	for _, bad := range []string{"8", "8x8x", "8x8pc", "x8", "8x8q", "8x8s", "8x8sv", "8x8wc"} {
		_, err := parseTilings(bad)
		require.ErrorContains(t, err, "want", bad)
	}
	_, err = parseTilings("8x8s0")
	require.ErrorContains(t, err, "N >= 1")
}

// -replicas adds a line for the data-parallel replicas.
func TestTrainReplicasJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"train", "-json", "-config", "demo", "-batch", "2", "-prototypes", "64", "-steps", "1", "-torch=false", "-replicas", "2"}, &out, &errOut), errOut.String())
	dec := json.NewDecoder(&out)
	var one trainResult
	var two replicaResult
	require.NoError(t, dec.Decode(&one))
	require.NoError(t, dec.Decode(&two))
	require.Equal(t, "train/demo/b2/k64/x2", two.Name)
	require.Equal(t, 2, two.Replicas)
	require.Greater(t, two.Value, 0.0)
	require.InDelta(t, two.Value/(2*one.Value), two.Scaling, 1e-9)
	require.Greater(t, two.ExchangeSeconds, 0.0)
	require.Less(t, two.ExchangeSeconds, two.SecondsPerStep)
	require.Greater(t, two.WaitSeconds, 0.0)
	require.Less(t, two.WaitSeconds, two.ExchangeSeconds)
}
