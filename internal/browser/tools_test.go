package browser

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeInstall lays out a browser binary and a driver library where Find
// looks (WEBDINO_* overrides), so the test needs neither browser.
func fakeInstall(t *testing.T, library string) (bin string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "browser")
	require.NoError(t, os.WriteFile(bin, nil, 0o755))
	lib := filepath.Join(dir, "modules", "node_modules", library)
	require.NoError(t, os.MkdirAll(lib, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(lib, "package.json"), []byte("{}"), 0o644))
	t.Setenv("WEBDINO_BROWSER_DIR", filepath.Join(dir, "modules"))
	return bin
}

func TestFind(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed (scripts/setup-browser.sh installs it)")
	}
	_, missing := Find("webkit")
	require.Contains(t, missing, `unknown browser "webkit"`)

	bin := fakeInstall(t, "puppeteer-core")
	t.Setenv("WEBDINO_FIREFOX", bin)
	tools, missing := Find("firefox")
	require.Empty(t, missing)
	require.Equal(t, "firefox", tools.Browser)
	require.Equal(t, bin, tools.Binary)

	// Chromium's library is not in that folder.
	t.Setenv("WEBDINO_CHROMIUM", bin)
	_, missing = Find("chromium")
	require.Contains(t, missing, "playwright-core is not installed in")

	t.Setenv("WEBDINO_FIREFOX", bin+".gone")
	_, missing = Find("firefox")
	require.Equal(t, bin+".gone is missing", missing)
}

// Command hands the script driver.js and says which browser to drive.
func TestCommand(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed (scripts/setup-browser.sh installs it)")
	}
	t.Setenv("WEBDINO_FIREFOX", fakeInstall(t, "puppeteer-core"))
	tools, missing := Find("firefox")
	require.Empty(t, missing)
	dir := t.TempDir()
	script := filepath.Join(dir, "probe.js")
	// The driver module loads without launching anything; the probe prints
	// what the scripts rely on: its browser and its calls.
	require.NoError(t, os.WriteFile(script, []byte(`
const Module = require('module');
const load = Module._load;
Module._load = (name, ...rest) => name === 'puppeteer-core' ? {} : load(name, ...rest);
const drv = require(process.env.WEBDINO_DRIVER);
console.log(drv.name, ['launch', 'waitFor', 'setFile', 'hideWebGPU'].every((f) => typeof drv[f] === 'function'), process.env.WEBDINO_BROWSER_BIN);
`), 0o644))
	cmd, err := tools.Command(context.Background(), dir, script)
	require.NoError(t, err)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "firefox true "+tools.Binary+"\n", string(out))
	require.FileExists(t, filepath.Join(dir, "webdino-driver.js"))
}
