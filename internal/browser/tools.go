// Package browser finds the tools that drive headless Chromium for the
// browser test and benchmark: node, the Chromium binary and playwright-core,
// where scripts/setup-browser.sh installs them.
package browser

import (
	"os"
	"os/exec"
	"path/filepath"
)

// Tools is what a run in the browser needs.
type Tools struct {
	Node, Chromium string
	NodePath       string // the node_modules holding playwright-core
}

// Find returns the tools, or the reason one is missing. WEBDINO_CHROMIUM
// overrides /usr/bin/chromium; WEBDINO_BROWSER_DIR overrides
// ~/.cache/webdino/browser, the folder of playwright-core's node_modules.
func Find() (Tools, string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return Tools{}, "node is not installed"
	}
	chromium := os.Getenv("WEBDINO_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		return Tools{}, chromium + " is missing"
	}
	dir := os.Getenv("WEBDINO_BROWSER_DIR")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "webdino", "browser")
	}
	nodePath := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(nodePath, "playwright-core", "package.json")); err != nil {
		return Tools{}, "playwright-core is not installed in " + dir
	}
	return Tools{Node: node, Chromium: chromium, NodePath: nodePath}, ""
}
