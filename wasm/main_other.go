//go:build !js

package main

import (
	"fmt"
	"os"
)

// main explains the build: the viewer only runs in a browser.
func main() {
	fmt.Fprintln(os.Stderr, "wasm: build with GOOS=js GOARCH=wasm (make wasm) and open it through cmd/serve")
	os.Exit(2)
}
