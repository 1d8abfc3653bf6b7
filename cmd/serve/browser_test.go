//go:build !js

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"math"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/assets"
	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/embed"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/internal/browser"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/viz"
)

// browserShort is the short side the test compares at: 13x19 patches of
// the 320x212 cat, not the page's default, so the resolution control is
// exercised too.
const browserShort = 182

// overlay serves build/ from the freshly built wasm and everything else
// from the embedded site, so that the test runs the code of this checkout
// whether or not `make wasm` ran.
type overlay struct{ build, site fs.FS }

func (o overlay) Open(name string) (fs.File, error) {
	if strings.HasPrefix(name, "build/") {
		return o.build.Open(name)
	}
	return o.site.Open(name)
}

// pageResult is what testdata/e2e.js reads back from the page.
type pageResult struct {
	Browser         string // name and version
	Adapter, Model  string
	Width, Height   int
	GH, GW          int
	Heads, Dim      int
	Patches         []float32
	PcaRGB          []int
	Foreground      []int
	Attn            [][]float32
	Similarity      []float32
	SimilarityPatch int
	Timings         map[string]struct {
		Steps []struct {
			Name string
			Ms   float64
		}
		TotalMs float64
	}
	Checks  map[string]string
	Console []string
}

// TestBrowserMatchesNative runs the viewer with the bundled model and photo
// in each headless browser of browser.Browsers: Chromium (WebGPU on
// SwiftShader, Tint's shader compiler) and Firefox ESR (WebGPU through wgpu
// on lavapipe), and compares what the page computed with the same model run
// natively (lavapipe) through embed.Run, the pipeline of `embed --any-size`.
// The screenshots and the pages' arrays are kept in out/browser-test/NAME/
// at the repository root. A browser whose tools are missing is skipped,
// unless WEBDINO_REQUIRE_BROWSER is set.
func TestBrowserMatchesNative(t *testing.T) {
	var found []browser.Tools
	for _, name := range browser.Browsers {
		tools, missing := browser.Find(name)
		if missing == "" {
			found = append(found, tools)
			continue
		}
		if os.Getenv("WEBDINO_REQUIRE_BROWSER") != "" {
			t.Fatalf("browser test required (WEBDINO_REQUIRE_BROWSER is set) but %s: run scripts/setup-browser.sh", missing)
		}
		t.Logf("skipping %s: %s (run scripts/setup-browser.sh, or set WEBDINO_REQUIRE_BROWSER=1 to make this a failure)", name, missing)
	}
	if len(found) == 0 {
		t.Skip("no browser to drive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	// Build the page's wasm as `make wasm` does.
	build := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(build, "build"), 0o755))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(build, "build", "webdino.wasm"), "../../wasm")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the wasm: %s", out)
	goroot, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	require.NoError(t, err)
	execJS, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", "wasm_exec.js"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(build, "build", "wasm_exec.js"), execJS, 0o644))

	srv := httptest.NewServer(newHandler(overlay{build: os.DirFS(build), site: assets.FS}))
	defer srv.Close()
	// The page must refuse ViT-g/14 from its header: 4.5 GB of weights
	// cannot load in WebAssembly memory.
	giant := filepath.Join(t.TempDir(), "giant.msgpack")
	g, err := nn.Preset("vitg14")
	require.NoError(t, err)
	var head bytes.Buffer
	require.NoError(t, ckpt.WriteHeader(&head, g, 4))
	require.NoError(t, os.WriteFile(giant, head.Bytes(), 0o644))

	ref := nativeReference(ctx, t)
	for _, tools := range found {
		t.Run(tools.Browser, func(t *testing.T) {
			artifacts, err := filepath.Abs(filepath.Join("../../out/browser-test", tools.Browser))
			require.NoError(t, err)
			require.NoError(t, os.MkdirAll(artifacts, 0o755))
			os.Remove(filepath.Join(artifacts, "result.json"))
			cmd, err := tools.Command(ctx, t.TempDir(), "testdata/e2e.js", srv.URL+"/", artifacts, strconv.Itoa(browserShort), giant)
			require.NoError(t, err)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "the page failed (screenshot in %s): %s", artifacts, out)
			t.Logf("browser session %.1f s; screenshot %s", time.Since(start).Seconds(), filepath.Join(artifacts, "page.png"))
			b, err := os.ReadFile(filepath.Join(artifacts, "result.json"))
			require.NoError(t, err)
			var page pageResult
			require.NoError(t, json.Unmarshal(b, &page))
			checkPage(t, tools.Browser, &page, ref)
		})
	}
}

// nativeReference runs the bundled model on the bundled photo as the page
// does, natively, at the test's short side.
func nativeReference(ctx context.Context, t *testing.T) *embed.Result {
	var man struct{ Models, Photos []struct{ File string } }
	mb, err := fs.ReadFile(assets.FS, "manifest.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(mb, &man))
	dev, err := gpu.Open()
	require.NoError(t, err)
	t.Cleanup(dev.Close)
	c, err := ckpt.ReadFile(filepath.Join("../../assets", man.Models[0].File))
	require.NoError(t, err)
	model, err := nn.NewViT(dev, c.Config)
	require.NoError(t, err)
	t.Cleanup(model.Release)
	w := map[string][]float32{}
	for k, v := range c.Weights {
		w[k] = v.Data
	}
	require.NoError(t, model.SetWeights(w))
	photo, err := filepath.Abs(filepath.Join("../../assets", man.Photos[0].File))
	require.NoError(t, err)
	var ref *embed.Result
	require.NoError(t, embed.Run(ctx, dev, model, &data.Files{Paths: []string{photo}},
		embed.Options{AnySize: true, Short: browserShort, Attn0: true, Workers: 1},
		func(r *embed.Result) error { ref = r; return nil }))
	return ref
}

// checkPage compares what the page in browser computed with the native
// reference, and checks the page's messages for bad input.
func checkPage(t *testing.T, browser string, page *pageResult, ref *embed.Result) {
	t.Logf("%s; %s; model %s", page.Browser, page.Adapter, page.Model)
	require.Regexp(t, `^WebGPU adapter: \S`, page.Adapter, "the page names the adapter, or says it cannot")
	for _, k := range []string{"cold", "warm", "shortCold", "shortWarm"} {
		tm := page.Timings[k]
		var parts []string
		for _, s := range tm.Steps {
			parts = append(parts, s.Name+" "+formatMs(s.Ms))
		}
		t.Logf("page timings %-9s total %s: %s", k, formatMs(tm.TotalMs), strings.Join(parts, ", "))
	}
	for _, c := range page.Console {
		t.Logf("page console: %s", c)
	}
	for k, v := range page.Checks {
		t.Logf("page check %s: %s", k, v)
	}
	require.Contains(t, page.Checks["notCheckpoint"], "notes.msgpack is not a webdino checkpoint")
	require.Contains(t, page.Checks["notImage"], "broken.png: not an image")
	require.Contains(t, page.Checks["giantModel"], "giant.msgpack (ViT patch 14, dim 1536, depth 40")
	require.Contains(t, page.Checks["giantModel"], "of WebAssembly memory to load (the file and its float32 weights), more than a page can use")
	require.Equal(t, strconv.Itoa(browserShort)+"x"+strconv.Itoa(browserShort), page.Checks["filePicked"]) // the square astronaut
	require.Contains(t, page.Checks["noWebGPU"], "does not expose WebGPU")
	if browser == "firefox" {
		// Linux Firefox gets the preference that turns WebGPU on.
		require.Contains(t, page.Checks["noWebGPU"], "set dom.webgpu.enabled to true")
	} else {
		require.Contains(t, page.Checks["noWebGPU"], "Which browsers run this")
	}

	o := ref.Out
	require.Equal(t, [4]int{ref.H, ref.W, o.GridH, o.GridW}, [4]int{page.Height, page.Width, page.GH, page.GW})
	patches := o.PatchTokens()

	// Same WGSL kernels, but Tint/SwiftShader, naga/lavapipe in Firefox and
	// naga/lavapipe natively compile them differently (fused multiply-adds,
	// exp and erf approximations). Measured on the demo model: 5e-7 of the
	// largest feature. A wrong preprocessing or a broken kernel moves
	// features by O(1); 1e-4 leaves room for deeper (trained) models while
	// catching those.
	require.Len(t, page.Patches, len(patches))
	t.Logf("patch tokens: largest difference %.2g of the largest value", maxRelDiff(page.Patches, patches))
	require.Less(t, maxRelDiff(page.Patches, patches), 1e-4, "patch tokens")

	maps, err := viz.AttnMaps(o.Attn0, o.Heads, o.R, o.GridH, o.GridW)
	require.NoError(t, err)
	require.Len(t, page.Attn, len(maps))
	for i := range maps {
		t.Logf("attention map %d: largest difference %.2g of the largest value", i, maxRelDiff(page.Attn[i], maps[i]))
		require.Less(t, maxRelDiff(page.Attn[i], maps[i]), 1e-4, "attention map %d", i)
	}

	// The PCA picture thresholds the first component, so a patch within
	// rounding of the threshold may land on the other side, and min-max
	// colour scaling moves with the fitted set: allow 2% of the patches to
	// change side, and compare colours only where both agree, within 3 of
	// 255 (the projections themselves agree to ~1e-4).
	figs, err := viz.PCAFigure([]viz.Patches{{Feat: patches, GH: o.GridH, GW: o.GridW}}, o.D, viz.FigureOpts{PerImage: true})
	require.NoError(t, err)
	f := figs[0]
	n := o.GridH * o.GridW
	require.Len(t, page.Foreground, n)
	flipped, worst := 0, 0
	for i := 0; i < n; i++ {
		if (page.Foreground[i] == 1) != f.Foreground[i] {
			flipped++
			continue
		}
		for k := 0; k < 3; k++ {
			worst = max(worst, absInt(page.PcaRGB[3*i+k]-int(f.RGB[3*i+k])))
		}
	}
	t.Logf("PCA: %d of %d patches changed side, largest colour difference %d/255 elsewhere", flipped, n, worst)
	require.LessOrEqual(t, float64(flipped), 0.02*float64(n), "foreground patches")
	if flipped == 0 {
		require.LessOrEqual(t, worst, 3, "PCA colours")
	}

	// Similarity of the clicked patch, from the native features.
	q := page.SimilarityPatch
	require.True(t, q >= 0 && q < n, "clicked patch %d", q)
	sim := cosines(patches, o.D, q)
	t.Logf("similarity to patch %d: largest difference %.2g", q, maxAbsDiff(page.Similarity, sim))
	require.Less(t, maxAbsDiff(page.Similarity, sim), 1e-4, "similarity to patch %d", q)
}

func formatMs(ms float64) string { return strconv.FormatFloat(ms, 'f', 1, 64) + " ms" }

func absInt(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// maxRelDiff is max |a-b| over max |b|.
func maxRelDiff(a, b []float32) float64 {
	var m float64
	for _, v := range b {
		m = math.Max(m, math.Abs(float64(v)))
	}
	return maxAbsDiff(a, b) / m
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// cosines returns the cosine similarity of every row of x [n, d] to row q.
func cosines(x []float32, d, q int) []float32 {
	norm := func(i int) float64 {
		var s float64
		for _, v := range x[i*d : (i+1)*d] {
			s += float64(v) * float64(v)
		}
		return math.Sqrt(s)
	}
	out := make([]float32, len(x)/d)
	for i := range out {
		var dot float64
		for k := 0; k < d; k++ {
			dot += float64(x[i*d+k]) * float64(x[q*d+k])
		}
		out[i] = float32(dot / (norm(i) * norm(q)))
	}
	return out
}
