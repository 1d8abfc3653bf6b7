//go:build !js

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
)

// imageFolder writes an ImageFolder tree of small random pictures: two
// classes of n images, plus one corrupt file.
func imageFolder(t *testing.T, n int) string {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for c, class := range []string{"dark", "light"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, class), 0o755))
		for i := 0; i < n; i++ {
			img := image.NewRGBA(image.Rect(0, 0, 30+rng.IntN(6), 30+rng.IntN(6)))
			for p := 0; p < len(img.Pix); p += 4 {
				v := uint8(rng.IntN(128) + 128*c)
				img.Pix[p], img.Pix[p+1], img.Pix[p+2], img.Pix[p+3] = v, uint8(rng.IntN(256)), v, 255
			}
			img.Set(0, 0, color.RGBA{255, 0, 0, 255})
			f, err := os.Create(filepath.Join(dir, class, string(rune('a'+i))+".png"))
			require.NoError(t, err)
			require.NoError(t, png.Encode(f, img))
			require.NoError(t, f.Close())
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dark", "broken.png"), []byte("not a png"), 0o644))
	return dir
}

func tinyArgs(data, out string) []string {
	return []string{"--data", data, "--image-folder", "--out", out, "--batch", "4", "--epochs", "2",
		"--iters-per-epoch", "2", "--prototypes", "64", "--locals", "1", "--knn-train", data, "--knn-test", data,
		"--pca", "2", "--save-every", "1", "--knn-train-n", "0", "--knn-test-n", "0"}
}

func readMetrics(t *testing.T, path string) (steps []map[string]any, evals []map[string]any) {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		if _, ok := m["knn_top1"]; ok {
			evals = append(evals, m)
		} else {
			steps = append(steps, m)
		}
	}
	return steps, evals
}

func TestTrainEndToEndAndExactResume(t *testing.T) {
	data := imageFolder(t, 7)
	straight := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), tinyArgs(data, straight), &stdout, &stderr)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	for _, f := range []string{"checkpoint.msgpack", "metrics.jsonl", "losses.png", "knn.png", "pca/000.png", "pca/grid.png", "rejects.jsonl"} {
		require.FileExists(t, filepath.Join(straight, f))
	}
	require.Contains(t, stdout.String(), "skipped 1 unreadable images")
	steps, evals := readMetrics(t, filepath.Join(straight, "metrics.jsonl"))
	require.Len(t, steps, 4)
	require.Len(t, evals, 3) // untrained, after epoch 1 and at the end
	require.Equal(t, 0.0, evals[0]["step"])
	require.Contains(t, evals[0], "raw_pixels_knn_top1")
	require.Contains(t, stdout.String(), "raw pixels (the model's 28x28 inputs): k-NN top-1")
	require.Contains(t, stdout.String(), "k-NN top-1: ")

	// Interrupted after 3 steps (--steps), then resumed: the same losses.
	split := t.TempDir()
	first := append(tinyArgs(data, split), "--steps", "3")
	require.Equal(t, 0, run(context.Background(), first, &stdout, &stderr), stderr.String())
	resumed := append(tinyArgs(data, split), "--resume", filepath.Join(split, "checkpoint.msgpack"))
	require.Equal(t, 0, run(context.Background(), resumed, &stdout, &stderr), stderr.String())
	got, _ := readMetrics(t, filepath.Join(split, "metrics.jsonl"))
	require.Len(t, got, 4)
	for i := range steps {
		for _, k := range []string{"step", "loss", "dino", "ibot", "koleo", "grad_norm", "lr"} {
			require.Equal(t, steps[i][k], got[i][k], "step %d %s", i+1, k)
		}
	}

	// A high-resolution phase from the trained weights: crops of 36 px,
	// a 9x9 grid interpolated from the stored 7x7.
	hr := t.TempDir()
	phase := append(tinyArgs(data, hr), "--init", filepath.Join(straight, "checkpoint.msgpack"),
		"--global-size", "36", "--local-size", "16", "--epochs", "1", "--pca", "0")
	stdout.Reset()
	require.Equal(t, 0, run(context.Background(), phase, &stdout, &stderr), stderr.String())
	require.Contains(t, stdout.String(), "started from the weights of")
}

func TestTrainFlagErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "usage: train [flags]")
	require.Contains(t, stderr.String(), "-centering")

	stderr.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"extra"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), `unexpected arguments ["extra"]`)

	stderr.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"--save-every", "0"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "--save-every 0: want at least 1")

	for args, want := range map[[4]string]string{
		{"--replicas", "2", "--rank", "2"}:       "--rank 2: want a rank below --replicas 2",
		{"--replicas", "4", "--local", "5"}:      "--local 5 from --rank 0: ranks beyond --replicas 4",
		{"--replicas", "0", "--save-every", "1"}: "--replicas 0: want at least 1",
	} {
		stderr.Reset()
		require.Equal(t, 2, run(context.Background(), args[:], &stdout, &stderr))
		require.Contains(t, stderr.String(), want)
	}

	stderr.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"--config", "vitx14"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "vitx14")

	stderr.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"--centering", "median", "--out", t.TempDir()}, &stdout, &stderr))
	require.Contains(t, stderr.String(), `centering "median": want centering or sinkhorn`)

	stderr.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"--nce-weight", "1", "--nce-temp", "0", "--out", t.TempDir()}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "InfoNCE weight 1, temperature 0: want a weight >= 0 and, with a weight, a temperature in (0, 100)")

	stderr.Reset()
	empty := t.TempDir()
	require.Equal(t, 1, run(context.Background(), []string{"--data", empty, "--out", t.TempDir()}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "no images found")

	stderr.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"--resume", filepath.Join(empty, "nope.msgpack"), "--out", t.TempDir()}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "nope.msgpack")
}

// Ctrl-C (the context ending) saves the last completed step and exits with
// status 130; the run then resumes from there.
func TestTrainInterruptSaves(t *testing.T) {
	data := imageFolder(t, 7)
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int)
	var stdout, stderr bytes.Buffer
	args := append(tinyArgs(data, out), "--save-every", "1000", "--epochs", "50")
	go func() { done <- run(ctx, args, &stdout, &stderr) }()
	metrics := filepath.Join(out, "metrics.jsonl")
	for {
		if b, err := os.ReadFile(metrics); err == nil && bytes.Count(b, []byte("\n")) >= 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	require.Equal(t, 130, <-done, stderr.String())
	require.Contains(t, stderr.String(), "interrupted; checkpoint saved")
	steps, _ := readMetrics(t, metrics)
	c, err := ckpt.ReadFile(filepath.Join(out, "checkpoint.msgpack"))
	require.NoError(t, err)
	require.Equal(t, int64(len(steps)), c.Training.Step, "the checkpoint holds every logged step")
}

func TestFitBudget(t *testing.T) {
	for _, c := range []struct {
		budget, step, eval float64
		iters              int
		epochs, every      int
	}{
		// 600 s, 40 steps of 2 s an epoch (80 s) and 10 s per k-NN:
		// 6 epochs cost 480 + 7 x 10 = 550 s; 7 would cost 630.
		{600, 2, 10, 40, 6, 1},
		// A fast device: 0.03 s steps, 1 s evaluations: 490 epochs cost
		// 588 + 11 = 599 s with k-NN every 49 epochs.
		{600, 0.03, 1, 40, 490, 49},
		// Nothing fits: still one epoch.
		{5, 2, 10, 40, 1, 1},
	} {
		e, every := fitBudget(c.budget, c.step, c.eval, c.iters)
		require.Equal(t, c.epochs, e, "%+v", c)
		require.Equal(t, c.every, every, "%+v", c)
	}
}

func TestTrainMinutes(t *testing.T) {
	data := imageFolder(t, 7)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), append(withoutFlag(tinyArgs(data, out), "--epochs"), "--minutes", "0.1"), &stdout, &stderr),
		"stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	m := regexp.MustCompile(`--minutes 0.1: a step takes [0-9.]+ s and a k-NN evaluation [0-9.]+ s here, so (\d+) epochs of 2 steps`).FindStringSubmatch(stdout.String())
	require.NotNil(t, m, stdout.String())
	epochs, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	steps, _ := readMetrics(t, filepath.Join(out, "metrics.jsonl"))
	require.Len(t, steps, 2*epochs, "the run is the epochs the budget fits")

	// Two replicas time their steps together and take replica 0's plan.
	out = t.TempDir()
	two := replicaRun(t, data, out, "--minutes", "0.1")
	m = regexp.MustCompile(`--minutes 0.1: a step takes [0-9.]+ s and a k-NN evaluation [0-9.]+ s here, so (\d+) epochs of 2 steps`).FindStringSubmatch(two)
	require.NotNil(t, m, two)
	epochs, err = strconv.Atoi(m[1])
	require.NoError(t, err)
	steps, _ = readMetrics(t, filepath.Join(out, "metrics.jsonl"))
	require.Len(t, steps, 2*epochs)
	require.Positive(t, steps[0]["exchange_s"], "data-parallel steps")

	stderr.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"--minutes", "5", "--epochs", "3"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "--minutes 5: want a positive budget for a new run, without --epochs (it sets them) or --resume")
}

// withoutFlag drops flag and its value from args.
func withoutFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// replicaRun trains the tiny run as two data-parallel replicas of two
// images each (the batch of 4 of tinyArgs), both in this process, and
// returns replica 0's output.
func replicaRun(t *testing.T, data, out string, extra ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	var stdout, stderr [2]bytes.Buffer
	var codes [2]int
	var wg sync.WaitGroup
	for r := range 2 {
		dir := out
		if r > 0 {
			dir = t.TempDir()
		}
		args := append(tinyArgs(data, dir), "--batch", "2", "--replicas", "2", "--rank", strconv.Itoa(r), "--local", "1", "--master", addr)
		if slices.Contains(extra, "--minutes") {
			args = withoutFlag(args, "--epochs")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[r] = run(context.Background(), append(args, extra...), &stdout[r], &stderr[r])
		}()
	}
	wg.Wait()
	for r := range 2 {
		require.Equal(t, 0, codes[r], "replica %d stdout:\n%s\nstderr:\n%s", r, stdout[r].String(), stderr[r].String())
	}
	require.Empty(t, stdout[1].String(), "replica 1 reports nothing")
	return stdout[0].String()
}

// Two replicas train, checkpoint every replica's generators and data
// position, and resume exactly.
func TestTrainReplicasAndExactResume(t *testing.T) {
	data := imageFolder(t, 7)
	straight := t.TempDir()
	out := replicaRun(t, data, straight)
	require.Contains(t, out, "2 replicas of 2 images each")
	require.Contains(t, out, "k-NN top-1: ")
	c, err := ckpt.ReadFile(filepath.Join(straight, "checkpoint.msgpack"))
	require.NoError(t, err)
	for _, k := range []string{"augment_rng", "augment_rng/1", "mask_rng", "mask_rng/1"} {
		require.Contains(t, c.Training.Blobs, k)
	}
	require.Contains(t, c.Training.Scalars, "data_pos/1")
	steps, _ := readMetrics(t, filepath.Join(straight, "metrics.jsonl"))
	require.Len(t, steps, 4)
	require.Positive(t, steps[0]["exchange_s"])
	require.Positive(t, steps[0]["wait_s"])
	require.Less(t, steps[0]["wait_s"], steps[0]["exchange_s"])

	split := t.TempDir()
	replicaRun(t, data, split, "--steps", "3")
	replicaRun(t, data, split, "--resume", filepath.Join(split, "checkpoint.msgpack"))
	got, _ := readMetrics(t, filepath.Join(split, "metrics.jsonl"))
	require.Len(t, got, 4)
	for i := range steps {
		for _, k := range []string{"step", "loss", "dino", "ibot", "koleo", "grad_norm", "lr"} {
			require.Equal(t, steps[i][k], got[i][k], "step %d %s", i+1, k)
		}
	}
}
