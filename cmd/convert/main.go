// Command convert turns official DINOv2 weights into a webdino checkpoint.
//
//	convert [-meta key=value]... IN OUT.msgpack
//
// IN is a PyTorch hub .pth file (torch.save of the backbone's state dict, or
// a training checkpoint wrapping one) or a Hugging Face .safetensors file
// (Dinov2Model, Dinov2WithRegistersModel); the format is read from the
// content, not the name. The model config is inferred from the tensor shapes
// and printed with the parameter count. OUT is written atomically.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/webdino/webdino/ckpt"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// metaFlags collects repeated -meta key=value pairs.
type metaFlags map[string]string

func (m metaFlags) String() string { return "" }

func (m metaFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[k] = v
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	meta := metaFlags{}
	fs.Var(meta, "meta", "add `key=value` to the checkpoint's metadata (repeatable)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: convert [-meta key=value]... IN OUT.msgpack

Converts official DINOv2 weights to a webdino checkpoint (docs/checkpoint.md).
IN is a PyTorch .pth (hub state dict, or a training checkpoint holding a
"teacher"/"model" backbone) or a Hugging Face .safetensors (Dinov2Model,
Dinov2WithRegistersModel); the format is detected from the content. The model
config is inferred from the tensor shapes and printed.

IN may also be a webdino training checkpoint (cmd/train's output): OUT is
then its model alone (the teacher backbone), without the training state,
which is what the browser viewer and cmd/embed need.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	in, out := fs.Arg(0), fs.Arg(1)
	if err := convert(in, out, meta, stdout); err != nil {
		fmt.Fprintln(stderr, "convert:", err)
		return 1
	}
	return 0
}

func convert(in, out string, meta map[string]string, stdout io.Writer) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	c, info, err := ckpt.Import(f, st.Size())
	if errors.Is(err, ckpt.ErrWebdino) {
		if c, err = ckpt.ReadFile(in); err != nil {
			return err
		}
		c.Training = nil
		if c.Meta == nil {
			c.Meta = map[string]string{}
		}
		info = &ckpt.ImportInfo{Format: "webdino checkpoint"}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	c.Meta["source"] = filepath.Base(in)
	c.Meta["source_format"] = info.Format
	for k, v := range meta {
		c.Meta[k] = v
	}
	fmt.Fprintf(stdout, "read %s (%s", in, info.Format)
	if info.Prefix != "" {
		fmt.Fprintf(stdout, ", backbone under %q", info.Prefix)
	}
	if len(info.Ignored) > 0 {
		fmt.Fprintf(stdout, ", ignored %d other tensors", len(info.Ignored))
	}
	fmt.Fprintf(stdout, ")\nconfig: %s\nparameters: %d (%.1fM) in %d tensors\n",
		c.Config, c.Config.NumParams(), float64(c.Config.NumParams())/1e6, len(c.Weights))
	if err := ckpt.WriteFile(out, c); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", out)
	return nil
}
