//go:build !js

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/curate"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/nn"
)

// tinyModel writes a random 2-block ViT for 56-pixel crops: the plumbing
// test needs a checkpoint, not a trained one.
func tinyModel(t *testing.T, dir string) string {
	cfg := nn.ViTConfig{PatchSize: 14, InChans: 3, EmbedDim: 64, Depth: 2, Heads: 2, MLPHidden: 128,
		FFN: nn.FFNMLP, Registers: 1, PosGrid: 4, LayerScale: true, QKVBias: true, LNEps: 1e-6}
	cfg.SetHubInterpolation()
	rng := rand.New(rand.NewPCG(7, 8))
	c := &ckpt.Checkpoint{Config: cfg, Weights: map[string]ckpt.Tensor{}, Meta: map[string]string{}}
	for _, p := range cfg.ParamShapes() {
		ts := ckpt.Tensor{Shape: p.Shape, Data: make([]float32, p.Numel())}
		for i := range ts.Data {
			ts.Data[i] = float32(0.2 * rng.NormFloat64())
		}
		c.Weights[p.Name] = ts
	}
	path := filepath.Join(dir, "tiny.msgpack")
	require.NoError(t, ckpt.WriteFile(path, c))
	return path
}

// writeImage writes a random blocky picture of seed.
func writeImage(t *testing.T, path string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0))
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for by := 0; by < 8; by++ {
		for bx := 0; bx < 8; bx++ {
			c := color.RGBA{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256)), 255}
			for y := by * 8; y < by*8+8; y++ {
				for x := bx * 8; x < bx*8+8; x++ {
					img.SetRGBA(x, y, c)
				}
			}
		}
	}
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, png.Encode(f, img))
	require.NoError(t, f.Close())
}

func copyFile(t *testing.T, dst, src string) {
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, b, 0o644))
}

func readLines[T any](t *testing.T, path string) []T {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v T
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v), sc.Text())
		out = append(out, v)
	}
	return out
}

func runOK(t *testing.T, args ...string) string {
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	require.Equal(t, 0, code, "curate %v:\n%s\n%s", args, out.String(), errOut.String())
	return out.String()
}

// TestEndToEnd embeds a pool of 14 distinct pictures and 3 byte copies (in
// 4-row shards, interrupted and resumed), an evaluation set holding one
// pool picture and a curated set of 2, then deduplicates and retrieves.
// A random model's features tell little apart except exact copies, which
// embed identically: the threshold is set just below 1.
func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	model := tinyModel(t, dir)
	poolImgs := filepath.Join(dir, "imgs", "pool")
	evalImgs := filepath.Join(dir, "imgs", "eval")
	curImgs := filepath.Join(dir, "imgs", "cur")
	for _, d := range []string{poolImgs, evalImgs, curImgs} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	for i := range 14 {
		writeImage(t, filepath.Join(poolImgs, "p"+string(rune('a'+i))+".png"), uint64(i))
	}
	// Copies sort after their originals: pa, pb, pc are kept.
	for _, c := range [][2]string{{"pa", "pz1"}, {"pa", "pz2"}, {"pc", "pz3"}} {
		copyFile(t, filepath.Join(poolImgs, c[1]+".png"), filepath.Join(poolImgs, c[0]+".png"))
	}
	copyFile(t, filepath.Join(evalImgs, "e1.png"), filepath.Join(poolImgs, "pc.png"))
	writeImage(t, filepath.Join(evalImgs, "e2.png"), 100)
	copyFile(t, filepath.Join(curImgs, "c1.png"), filepath.Join(poolImgs, "pe.png"))
	writeImage(t, filepath.Join(curImgs, "c2.png"), 101)
	require.NoError(t, os.WriteFile(filepath.Join(poolImgs, "broken.png"), []byte("not a png"), 0o644))

	emb := func(out string, in string, extra ...string) string {
		return runOK(t, append([]string{"embed", "--model", model, "--out", out, "--resize", "64", "--crop", "56", "--batch", "3", "--shard-rows", "4"}, append(extra, in)...)...)
	}
	pool := filepath.Join(dir, "pool")
	emb(pool, poolImgs)
	ids := func() []idRow {
		p, err := openPool(pool)
		require.NoError(t, err)
		p.rows.Close()
		return p.ids
	}
	full := ids()
	require.Len(t, full, 17)
	// An interruption inside shard 2: its files are incomplete.
	for _, f := range []string{"done-00002.json", "done-00003.json", "done-00004.json", "emb-00003.npy", "ids-00004.jsonl"} {
		os.Remove(filepath.Join(pool, f))
	}
	require.Len(t, ids(), 8)
	emb(pool, poolImgs)
	require.Equal(t, full, ids())
	require.Contains(t, emb(pool, poolImgs), "complete, 17 rows")
	emb(filepath.Join(dir, "eval"), evalImgs)
	emb(filepath.Join(dir, "cur"), curImgs, "--source", "curated-demo")

	out := filepath.Join(dir, "dedup")
	dedupReasons := func(extra ...string) map[string]string {
		text := runOK(t, append([]string{"dedup", "--pool", pool, "--eval", filepath.Join(dir, "eval"), "--out", out,
			"--threshold", "0.99999", "--eval-threshold", "0.99999", "--max-rows", "5"}, extra...)...)
		require.Contains(t, text, "pool 17 images")
		reasons := map[string]string{}
		for _, r := range readLines[dedupRow](t, filepath.Join(out, "dedup.jsonl")) {
			reasons[filepath.Base(r.Path)] = r.Reason
		}
		return reasons
	}
	// Through an IVF index of 4 lists, 2 probed per image, the copies
	// (identical embeddings, so in one list) are found the same.
	ivf := dedupReasons("--index", "ivf", "--lists", "4", "--nprobe", "2")
	// 8-bit lists, their candidates re-ranked exactly: the same again.
	ivf8 := dedupReasons("--index", "ivf", "--lists", "4", "--nprobe", "2", "--ivf-int8")
	report, err := os.ReadFile(filepath.Join(out, "report.json"))
	require.NoError(t, err)
	var rep dedupReport
	require.NoError(t, json.Unmarshal(report, &rep))
	require.True(t, rep.IVFInt8)
	// Copies stay copies after whitening.
	whitened := dedupReasons("--whiten")
	_, err = os.Stat(filepath.Join(out, "whitened"))
	require.True(t, os.IsNotExist(err), "the whitened rows are removed")
	reasons := dedupReasons()
	require.Equal(t, reasons, ivf)
	require.Equal(t, reasons, ivf8)
	require.Equal(t, reasons, whitened)
	require.Equal(t, "kept", reasons["pa.png"])
	require.Equal(t, "duplicate", reasons["pz1.png"])
	require.Equal(t, "duplicate", reasons["pz2.png"])
	require.Equal(t, "eval-duplicate", reasons["pc.png"], "pc is in the eval set")
	require.Equal(t, "eval-duplicate", reasons["pz3.png"], "pz3 is a copy of pc: its component goes too")
	require.Equal(t, "kept", reasons["pb.png"])
	for _, f := range []string{"report.json", "nn-similarity.png", "dup-groups.png"} {
		_, err := os.Stat(filepath.Join(out, f))
		require.NoError(t, err, f)
	}

	// Flip-invariant descriptors are not compared with plain ones.
	emb(filepath.Join(dir, "cur-mirror"), curImgs, "--mirror")
	var o, e bytes.Buffer
	require.Equal(t, 1, run(context.Background(), []string{"dedup", "--pool", pool, "--eval", filepath.Join(dir, "cur-mirror"), "--out", out}, &o, &e))
	require.Contains(t, e.String(), "hold different descriptors: embed both with or both without --mirror")

	if os.Getenv("CURATE_KEEP") != "" {
		copyFile(t, "/tmp/curate-hist.png", filepath.Join(out, "nn-similarity.png"))
		copyFile(t, "/tmp/curate-groups.png", filepath.Join(out, "dup-groups.png"))
	}
	final := filepath.Join(dir, "final")
	text := runOK(t, "retrieve", "--pool", pool, "--dedup", filepath.Join(out, "dedup.jsonl"), "--curated", filepath.Join(dir, "cur"),
		"--out", final, "--mode", "sample", "--k", "2")
	require.Contains(t, text, "curated-demo: 2 curated images, sample retrieval")
	man := readLines[manifestRow](t, filepath.Join(final, "manifest.jsonl"))
	var got []manifestRow
	for _, m := range man {
		require.NotEqual(t, "pc.png", filepath.Base(m.Path))
		require.NotEqual(t, "pz1.png", filepath.Base(m.Path))
		if m.Reason == "retrieved-sample" && filepath.Base(m.Query) == "c1.png" && m.Similarity > 0.99999 {
			got = append(got, m)
		}
	}
	require.Len(t, got, 1, "c1 is a copy of pe: its nearest pool image")
	require.Equal(t, "pe.png", filepath.Base(got[0].Path))
	require.Equal(t, "curated-demo", got[0].Source)

	runOK(t, "retrieve", "--pool", pool, "--curated", filepath.Join(dir, "cur"), "--out", final, "--mode", "cluster",
		"--clusters", "3", "--min-curated", "0", "--per-cluster", "100")
	man = readLines[manifestRow](t, filepath.Join(final, "manifest.jsonl"))
	require.Greater(t, len(man), 2)
	for _, m := range man[2:] {
		require.Equal(t, "retrieved-cluster", m.Reason)
		require.GreaterOrEqual(t, m.Cluster, 0)
	}

	// Balanced sampling of the 13 kept images, the k-means fitted on 8 of
	// them and the rest assigned.
	text = runOK(t, "retrieve", "--mode", "balanced", "--pool", pool, "--dedup", filepath.Join(out, "dedup.jsonl"), "--out", final,
		"--count", "5", "--levels", "4,2", "--kmeans-sample", "8")
	require.Contains(t, text, "balanced sampling: 5 pool images")
	man = readLines[manifestRow](t, filepath.Join(final, "manifest.jsonl"))
	require.Len(t, man, 5)
	for _, m := range man {
		require.Equal(t, "balanced", m.Reason)
		require.Contains(t, []int{0, 1, 2, 3}, m.Cluster)
		require.NotContains(t, []string{"pc.png", "pz1.png", "pz2.png", "pz3.png"}, filepath.Base(m.Path))
	}
}

func TestHelpAndErrors(t *testing.T) {
	for _, c := range []string{"embed", "dedup", "retrieve", "calibrate"} {
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run(context.Background(), []string{c, "--help"}, &out, &errOut))
		require.Contains(t, errOut.String(), "usage: curate "+c)
	}
	var out, errOut bytes.Buffer
	require.Equal(t, 2, run(context.Background(), []string{"bogus"}, &out, &errOut))
	require.Contains(t, errOut.String(), `unknown command "bogus"`)
	errOut.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"dedup", "--out", "x"}, &out, &errOut))
	require.Contains(t, errOut.String(), "--pool is required")
	errOut.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"dedup", "--pool", "p", "--out", "x", "--index", "hnsw"}, &out, &errOut))
	require.Contains(t, errOut.String(), `--index "hnsw", want exact or ivf`)
	errOut.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"retrieve", "--mode", "balanced", "--pool", "p", "--out", "x"}, &out, &errOut))
	require.Contains(t, errOut.String(), "--mode balanced needs --pool, --out and --count >= 1")
	errOut.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"retrieve", "--mode", "balanced", "--pool", "p", "--out", "x", "--count", "3", "--levels", "2,5"}, &out, &errOut))
	require.Contains(t, errOut.String(), `--levels "2,5": want positive cluster counts`)
	errOut.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"dedup", "--pool", t.TempDir(), "--out", t.TempDir()}, &out, &errOut))
	require.Contains(t, errOut.String(), "no complete embedding shards")
}

// TestCalibrate plants copies among 12 pictures with the random tiny model:
// its scores mean little, but byte copies embed identically and are found
// at every threshold, and the outputs are complete.
func TestCalibrate(t *testing.T) {
	dir := t.TempDir()
	model := tinyModel(t, dir)
	imgs := filepath.Join(dir, "imgs")
	require.NoError(t, os.MkdirAll(imgs, 0o755))
	for i := range 12 {
		writeImage(t, filepath.Join(imgs, fmt.Sprintf("p%02d.png", i)), uint64(i))
	}
	out := filepath.Join(dir, "cal")
	stdout := runOK(t, "calibrate", "--model", model, "--out", out, "--resize", "64", "--crop", "56", "--batch", "5",
		"--n", "12", "--groups", "6", "--edits", "copy,flip", "--thresholds", "0.5,0.99", "--k", "8", imgs)
	require.Contains(t, stdout, "12 originals")
	require.Contains(t, stdout, "best F1")
	rows := readLines[calibrateRow](t, filepath.Join(out, "calibrate.jsonl"))
	require.Len(t, rows, 2)
	for _, r := range rows {
		require.Equal(t, 1.0, r.RecallByEdit["copy"], "threshold %g", r.Threshold)
		require.InDelta(t, 0.5, r.Precision, 0.5)
		require.InDelta(t, 0.5, r.Recall, 0.5)
		require.Equal(t, rows[0].Kept+rows[0].Dropped, r.Kept+r.Dropped)
		require.GreaterOrEqual(t, r.Kept+r.Dropped, 12+6, "6 groups of 1-3 copies")
		require.LessOrEqual(t, r.Kept+r.Dropped, 12+18)
	}
	require.LessOrEqual(t, rows[1].Dropped, rows[0].Dropped, "a higher threshold drops no more")
	require.Contains(t, stdout, "copies joined to their original or a sibling by an edge of the 8-nearest-neighbour graph: copy 1.000")
	var reach calibrateReach
	b, err := os.ReadFile(filepath.Join(out, "reach.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &reach))
	require.Equal(t, 8, reach.K)
	require.Equal(t, 1.0, reach.ByEdit["copy"], "byte copies embed identically")
	st, err := os.Stat(filepath.Join(out, "calibrate.png"))
	require.NoError(t, err)
	require.Greater(t, st.Size(), int64(1000))

	// Flip-invariant descriptors find mirrored copies as exact ones,
	// whitened or not.
	stdout = runOK(t, "calibrate", "--model", model, "--out", out, "--resize", "64", "--crop", "56", "--batch", "5",
		"--n", "12", "--groups", "6", "--edits", "copy,flip", "--thresholds", "0.99", "--k", "8", "--mirror", "--whiten", imgs)
	require.Contains(t, stdout, "mirror true, whiten true")
	require.Contains(t, stdout, "highest recall at precision >= 0.95: 1.000 at threshold 0.99")
	rows = readLines[calibrateRow](t, filepath.Join(out, "calibrate.jsonl"))
	require.Equal(t, map[string]float64{"copy": 1, "flip": 1}, rows[0].RecallByEdit)

	// Crops: the random model's cosine misses them, verification finds
	// them all, with every pair a candidate.
	crops := func(extra ...string) calibrateRow {
		runOK(t, append(append([]string{"calibrate", "--model", model, "--out", out, "--resize", "64", "--crop", "56", "--batch", "5",
			"--n", "12", "--groups", "6", "--edits", "crop", "--thresholds", "0.99999", "--k", "64"}, extra...), imgs)...)
		return readLines[calibrateRow](t, filepath.Join(out, "calibrate.jsonl"))[0]
	}
	require.Zero(t, crops().RecallByEdit["crop"])
	verified := crops("--verify", "--verify-floor", "-1")
	require.Equal(t, 1.0, verified.RecallByEdit["crop"])
	require.Equal(t, 1.0, verified.Precision)
	require.Len(t, readLines[verifiedPair](t, filepath.Join(out, "verified.jsonl")), (verified.Kept+verified.Dropped)*(verified.Kept+verified.Dropped-1)/2)

	var o, e bytes.Buffer
	require.Equal(t, 2, run(context.Background(), []string{"calibrate", "--model", model, "--out", out, "--edits", "rotate", imgs}, &o, &e))
	require.Contains(t, e.String(), `unknown edit "rotate"`)
	e.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"calibrate", "--model", model, "--out", out, "--fashion-mnist", imgs}, &o, &e))
	require.Contains(t, e.String(), "give either --fashion-mnist or INPUT images")
	e.Reset()
	require.Equal(t, 1, run(context.Background(), []string{"calibrate", "--model", model, "--out", out, "--n", "50", "--groups", "5", imgs}, &o, &e))
	require.Contains(t, e.String(), "--n 50: only 12 images found")
}

// TestDedupVerify plants a crop (80% of each side, resized back) among 8
// pictures: the random model's cosine misses it, verification by aligned
// pixels joins it to its original. An image deleted after embedding cannot
// be verified: it is listed in the rejects and its pairs keep the cosine's
// verdict.
func TestDedupVerify(t *testing.T) {
	dir := t.TempDir()
	model := tinyModel(t, dir)
	imgs := filepath.Join(dir, "imgs")
	require.NoError(t, os.MkdirAll(imgs, 0o755))
	for i := range 8 {
		writeImage(t, filepath.Join(imgs, fmt.Sprintf("p%d.png", i)), uint64(i))
	}
	orig, err := data.LoadImage(filepath.Join(imgs, "p3.png"), data.DecodeOptions{})
	require.NoError(t, err)
	crop, err := curate.ApplyEdit(orig, curate.EditCrop, rand.New(rand.NewPCG(3, 4)))
	require.NoError(t, err)
	f, err := os.Create(filepath.Join(imgs, "q-crop.png"))
	require.NoError(t, err)
	require.NoError(t, png.Encode(f, toImage(crop)))
	require.NoError(t, f.Close())
	pool := filepath.Join(dir, "pool")
	runOK(t, "embed", "--model", model, "--out", pool, "--resize", "64", "--crop", "56", imgs)
	require.NoError(t, os.Remove(filepath.Join(imgs, "p5.png")))

	out := filepath.Join(dir, "dedup")
	reasons := func(extra ...string) map[string]string {
		runOK(t, append([]string{"dedup", "--pool", pool, "--out", out, "--threshold", "0.99999", "--k", "9"}, extra...)...)
		r := map[string]string{}
		for _, row := range readLines[dedupRow](t, filepath.Join(out, "dedup.jsonl")) {
			r[filepath.Base(row.Path)] = row.Reason
		}
		return r
	}
	require.Equal(t, "kept", reasons()["q-crop.png"], "the cosine alone misses the crop")
	got := reasons("--verify", "--verify-floor", "-1")
	require.Equal(t, "duplicate", got["q-crop.png"])
	for i := range 8 {
		require.Equal(t, "kept", got[fmt.Sprintf("p%d.png", i)])
	}
	var rep dedupReport
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &rep))
	require.NotNil(t, rep.Verify)
	require.Equal(t, 1, rep.Verify.Unreadable)
	require.Equal(t, 1, rep.Verify.Copies)
	require.Equal(t, 8*7/2, rep.Verify.Pairs, "every pair of the 8 readable images")
	require.Equal(t, 32, rep.Verify.Side)
	rejects := readLines[data.Reject](t, filepath.Join(out, "verify-rejects.jsonl"))
	require.Len(t, rejects, 1)
	require.Equal(t, "p5.png", filepath.Base(rejects[0].Path))
	require.Equal(t, data.Unreadable, rejects[0].Problem)

	var o, e bytes.Buffer
	require.Equal(t, 2, run(context.Background(), []string{"dedup", "--pool", pool, "--out", out, "--verify", "--verify-side", "65"}, &o, &e))
	require.Contains(t, e.String(), "--verify-side 65, want 2..64")
	e.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"dedup", "--pool", pool, "--out", out, "--verify", "--verify-min-scale", "1.5"}, &o, &e))
	require.Contains(t, e.String(), "min scale 1.5")
}

func toImage(img *data.RGB) image.Image {
	r := image.NewRGBA(image.Rect(0, 0, img.W, img.H))
	for j := range img.W * img.H {
		copy(r.Pix[4*j:4*j+3], img.Pix[3*j:3*j+3])
		r.Pix[4*j+3] = 255
	}
	return r
}
