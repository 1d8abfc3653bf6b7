// Package ckpt stores webdino models and training runs in one msgpack file
// (the layout is specified field by field in docs/checkpoint.md), and imports
// the official DINOv2 weights: PyTorch hub .pth files and Hugging Face
// safetensors.
//
// Everything here is pure Go and builds for the browser (GOOS=js): there the
// bytes come from fetch, so every reader also takes a []byte or io.Reader.
// Readers treat files as hostile: every length is checked against the bytes
// that remain before anything is allocated, and tensors are checked against
// the model config by name and shape.
package ckpt

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/webdino/webdino/nn"
)

const (
	// Magic is the value of the first field of every checkpoint.
	Magic = "webdino-ckpt"
	// Version is the format version this package writes and the newest it
	// reads; a change that old readers cannot skip bumps it.
	Version = 1
)

// Tensor is a dense float32 array in C order (last index fastest).
type Tensor struct {
	Shape []int
	Data  []float32
}

// Numel is the number of elements the shape holds.
func (t Tensor) Numel() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Checkpoint is a model (config and weights) with optional training state.
type Checkpoint struct {
	Config nn.ViTConfig
	// Weights holds exactly the parameters of Config.ParamShapes, by their
	// official state-dict names: the backbone to run (the teacher, for a
	// training run).
	Weights map[string]Tensor
	// Training is nil for a model-only file.
	Training *Training
	// Meta is free-form text: provenance ("source"), notes, the trainer's
	// settings. Keys and values are arbitrary UTF-8.
	Meta map[string]string
}

// Training is the state needed to resume a run, kept generic so that the
// trainer can grow without format changes: named groups of named tensors
// (by convention "student", "teacher", "dino_head.student", "adam_m",
// "adam_v", "dino" with its "center", ...), named scalars (learning-rate
// schedule position, teacher temperature, loss scale), and named opaque
// byte strings (the random generator's state).
type Training struct {
	Step    int64
	Groups  map[string]map[string]Tensor
	Scalars map[string]float64
	Blobs   map[string][]byte
}

// Check reports the first inconsistency that would make the checkpoint
// unreadable: an invalid config, weights that are missing, unexpected or
// mis-shaped, or a tensor whose data does not fill its shape.
func (c *Checkpoint) Check() error {
	if err := c.Config.Validate(); err != nil {
		return fmt.Errorf("ckpt: %w", err)
	}
	want := c.Config.ParamShapes()
	if err := checkAgainst(c.Weights, want); err != nil {
		return fmt.Errorf("ckpt: %w", err)
	}
	for name, t := range c.Weights {
		if err := t.check(); err != nil {
			return fmt.Errorf("ckpt: tensor %q: %w", name, err)
		}
	}
	if c.Training != nil {
		for g, ts := range c.Training.Groups {
			for name, t := range ts {
				if err := t.check(); err != nil {
					return fmt.Errorf("ckpt: training group %q tensor %q: %w", g, name, err)
				}
			}
		}
	}
	return nil
}

func (t Tensor) check() error {
	if len(t.Shape) > maxRank {
		return fmt.Errorf("rank %d is more than %d", len(t.Shape), maxRank)
	}
	for _, s := range t.Shape {
		if s < 0 {
			return fmt.Errorf("negative dimension in shape %v", t.Shape)
		}
	}
	if t.Numel() != len(t.Data) {
		return fmt.Errorf("shape %v holds %d elements, data has %d", t.Shape, t.Numel(), len(t.Data))
	}
	return nil
}

// checkAgainst compares named tensors with the parameters a config wants,
// naming the first missing, unexpected or mis-shaped one.
func checkAgainst(ts map[string]Tensor, want []nn.Param) error {
	known := make(map[string][]int, len(want))
	for _, p := range want {
		known[p.Name] = p.Shape
		t, ok := ts[p.Name]
		if !ok {
			return fmt.Errorf("missing tensor %q %v", p.Name, p.Shape)
		}
		if !slices.Equal(t.Shape, p.Shape) {
			return fmt.Errorf("tensor %q has shape %v, config wants %v", p.Name, t.Shape, p.Shape)
		}
	}
	for _, name := range sortedKeys(ts) {
		if _, ok := known[name]; !ok {
			return fmt.Errorf("unexpected tensor %q %v: not a parameter of this config", name, ts[name].Shape)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// WriteFile writes c to path atomically: into a temporary file in the same
// directory, synced to disk, then renamed over path, so a crash leaves either
// the old file or the new one, never a torn one.
func WriteFile(path string, c *Checkpoint) (err error) {
	if err := c.Check(); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("ckpt: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = Write(bw, c); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("ckpt: write %s: %w", path, err)
	}
	// CreateTemp makes the file private; a checkpoint is an ordinary file.
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("ckpt: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("ckpt: sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("ckpt: close %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("ckpt: %w", err)
	}
	// Make the rename itself durable; not every platform can sync a directory.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ReadFile reads the checkpoint at path; errors name the file.
func ReadFile(path string) (*Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ckpt: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ckpt: %w", err)
	}
	c, err := Read(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
