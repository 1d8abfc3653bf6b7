// Package browser finds what drives a headless browser for the browser test
// and benchmark (node, the browser and its driver library, where
// scripts/setup-browser.sh installs them) and runs a driving script with
// driver.js, the one place that knows how each browser is launched.
package browser

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Browsers are the browsers a script can be driven in.
var Browsers = []string{"chromium", "firefox"}

// driverJS is the node module the scripts load from WEBDINO_DRIVER.
//
//go:embed driver.js
var driverJS []byte

// Tools is what a run in one browser needs.
type Tools struct {
	Browser  string // chromium or firefox
	Node     string
	Binary   string // the browser's executable
	NodePath string // the node_modules holding the driver library
}

// browserSpec is where a browser and its driver library are found.
type browserSpec struct {
	env, bin, library string
}

var specs = map[string]browserSpec{
	"chromium": {env: "WEBDINO_CHROMIUM", bin: "/usr/bin/chromium", library: "playwright-core"},
	"firefox":  {env: "WEBDINO_FIREFOX", bin: "/usr/bin/firefox-esr", library: "puppeteer-core"},
}

// Find returns the tools for browser (one of Browsers), or the reason one
// is missing. WEBDINO_CHROMIUM overrides /usr/bin/chromium,
// WEBDINO_FIREFOX /usr/bin/firefox-esr; WEBDINO_BROWSER_DIR overrides
// ~/.cache/webdino/browser, the folder of the node_modules holding
// playwright-core (Chromium) and puppeteer-core (Firefox).
func Find(browser string) (Tools, string) {
	spec, ok := specs[browser]
	if !ok {
		return Tools{}, fmt.Sprintf("unknown browser %q (want one of %v)", browser, Browsers)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return Tools{}, "node is not installed"
	}
	bin := os.Getenv(spec.env)
	if bin == "" {
		bin = spec.bin
	}
	if _, err := os.Stat(bin); err != nil {
		return Tools{}, bin + " is missing"
	}
	dir := os.Getenv("WEBDINO_BROWSER_DIR")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "webdino", "browser")
	}
	nodePath := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(nodePath, spec.library, "package.json")); err != nil {
		return Tools{}, spec.library + " is not installed in " + dir
	}
	return Tools{Browser: browser, Node: node, Binary: bin, NodePath: nodePath}, ""
}

// Command returns node running script with args in the browser: driver.js
// is written into dir, and the environment tells the script where it is
// and which browser it drives.
func (t Tools) Command(ctx context.Context, dir, script string, args ...string) (*exec.Cmd, error) {
	driver := filepath.Join(dir, "webdino-driver.js")
	if err := os.WriteFile(driver, driverJS, 0o644); err != nil {
		return nil, fmt.Errorf("write the browser driver: %w", err)
	}
	cmd := exec.CommandContext(ctx, t.Node, append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+t.NodePath, "WEBDINO_DRIVER="+driver,
		"WEBDINO_BROWSER="+t.Browser, "WEBDINO_BROWSER_BIN="+t.Binary)
	return cmd, nil
}
