// Command bench measures webdino on the current WebGPU device.
//
//	go run ./cmd/bench kernels [-json] [-quick] [-run REGEXP] [-time D] [-reps N]
//	go run ./cmd/bench infer [-json] [-batch 32] [-model vits14] [-size 224] [-iters N]
//	go run ./cmd/bench train [-json] [-config demo|vits14] [-batch N] [-steps N] [-prototypes K]
//	go run ./cmd/bench browser [-json] [-short 224] [-iters N] [-ep webgpu|wasm|none]
//
// The kernels subcommand times every kernel case (see cases.go) together with
// the two ceilings of the device measured in the same run: a pure-FMA kernel
// (arithmetic peak, GFLOP/s) and a copy kernel (memory bandwidth, GB/s). Each
// case is reported as a rate and as a fraction of its ceiling, and matmul
// cases also against numpy (OpenBLAS) on the same shapes when /usr/bin/python3
// has numpy. The machine is usually shared: compare ratios within one run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/gpu/lavapipe"
)

// commands are the subcommands; nil ones are announced but not built yet.
var commands = map[string]func(args []string, stdout, stderr io.Writer) error{
	"kernels": kernels,
	"infer":   infer,
	"train":   trainBench,
	"browser": browserBench,
	"curate":  nil,
}

const usage = `usage: bench <command> [flags]

commands:
  kernels   time the GPU kernels against the device's FMA peak and copy bandwidth
  infer     time ViT-S/14 inference against the FMA peak and PyTorch on the CPU
  train     time DINOv2 training steps (demo or ViT-S/14) against PyTorch on the CPU
  browser   time ViT-S/14 in a headless browser's WebGPU (Chromium or Firefox) against onnxruntime-web
  curate    time exact k-NN, IVF and k-means of data curation

Run 'bench <command> -help' for the flags of a command.
`

func main() {
	if err := lavapipe.Restart(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(2)
	}
}

// errUsage reports that usage was already printed.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "bench: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
	if cmd == nil {
		var names []string
		for n, c := range commands {
			if c != nil {
				names = append(names, n)
			}
		}
		return fmt.Errorf("%s is not built yet (available: %s)", args[0], strings.Join(names, ", "))
	}
	return cmd(args[1:], stdout, stderr)
}

// parseFlags parses a subcommand's flags: help is true after -help (the
// usage is printed; nothing else runs), err is errUsage for bad flags.
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, errUsage
	}
	return false, nil
}

// reportDevice says which device the figures are of, and where lavapipe's
// loads cap them, how to get a faster one.
func reportDevice(stderr io.Writer, d *gpu.Device) {
	fmt.Fprintln(stderr, "device:", d.Info())
	if a := d.LoadsAdvice(); a != "" {
		fmt.Fprintln(stderr, a)
	}
}
