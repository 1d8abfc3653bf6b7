// Command serve serves webdino's in-browser viewer: the page, the wasm
// build, the bundled photos and demo checkpoint, all embedded in the binary
// (package assets; build the wasm first with `make wasm`, or use `make
// serve`).
//
//	serve [--addr 127.0.0.1:8080]
//
// WebGPU needs a secure context: http://127.0.0.1 and http://localhost
// count as one, other plain-HTTP hosts do not.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/webdino/webdino/assets"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	addr := fl.String("addr", "127.0.0.1:8080", "listen `address`")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if _, err := fs.Stat(assets.FS, wasmFile); err != nil {
		fmt.Fprintln(stderr, "serve: warning: this binary holds no wasm build (run `make wasm` and rebuild); the page will say so")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(stderr, "serve:", err)
		return 1
	}
	fmt.Fprintf(stderr, "serve: webdino viewer on http://%s/\n", ln.Addr())
	srv := &http.Server{
		Handler:           newHandler(assets.FS),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(stderr, "serve: ", 0),
	}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(stderr, "serve:", err)
		return 1
	}
	return 0
}
