//go:build !js

package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/internal/browser"
)

// TestBrowserTinyJSON runs `bench browser` on a one-block ViT-S at 28x28
// (2x2 patches): the wasm build, the page, the checkpoint upload and, where
// onnxruntime-web and torch are installed, the ONNX baseline. Like the
// browser test of cmd/serve it skips without node, chromium or
// playwright-core unless WEBDINO_REQUIRE_BROWSER is set.
func TestBrowserTinyJSON(t *testing.T) {
	if _, missing := browser.Find("chromium"); missing != "" {
		if os.Getenv("WEBDINO_REQUIRE_BROWSER") != "" {
			t.Fatalf("browser bench required (WEBDINO_REQUIRE_BROWSER is set) but %s: run scripts/setup-browser.sh", missing)
		}
		t.Skipf("skipping the browser bench: %s (run scripts/setup-browser.sh, or set WEBDINO_REQUIRE_BROWSER=1 to make this a failure)", missing)
	}
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"browser", "-json", "-depth", "1", "-short", "28", "-iters", "2"}, &out, &errOut), errOut.String())
	var r browserResult
	decodeOne(t, out.Bytes(), &r)
	t.Logf("%s", out.String())
	require.Equal(t, "browser/vits14-depth1/28", r.Name)
	require.Equal(t, "ms/image", r.Unit)
	require.Equal(t, []int{28, 28}, r.Input)
	require.Len(t, r.WebdinoMs, 2)
	require.Greater(t, r.Value, 0.0)
	require.Contains(t, r.Model, "dim 384, depth 1, heads 6")
	require.Contains(t, r.Device, "WebGPU adapter")
	if r.BaselineRatio == nil {
		require.NotEmpty(t, r.BaselineMissing)
		return
	}
	require.Empty(t, r.BaselineMissing)
	require.Greater(t, *r.BaselineRatio, 0.0)
	require.Contains(t, []string{"webgpu", "wasm"}, r.ONNXEP)
	require.Len(t, r.ONNXMs, 2)
	require.Contains(t, r.Weights, "the same in both")
}

func TestBrowserFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, run([]string{"browser", "-help"}, &out, &errOut))
	for _, f := range []string{"-json", "-short", "-iters", "-depth", "-model", "-ep", "baseline_ratio", forwardStep} {
		require.Contains(t, errOut.String(), f)
	}
	require.ErrorContains(t, run([]string{"browser", "-short", "30"}, &out, &errOut), "multiple of the patch size 14")
	require.ErrorIs(t, run([]string{"browser", "-ep", "webgl"}, &out, &errOut), errUsage)
	require.ErrorContains(t, run([]string{"browser", "-model", "vitx"}, &out, &errOut), `unknown preset "vitx"`)
}
