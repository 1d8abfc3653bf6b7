package ckpt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/webdino/webdino/nn"
)

// Encode returns the checkpoint as bytes (for the browser, which saves
// through a download rather than a file system).
func Encode(c *Checkpoint) ([]byte, error) {
	var buf bytes.Buffer
	if err := Write(&buf, c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteHeader writes what starts every checkpoint, the magic, the version
// and the config, as the first fields of a map of n: what PeekConfig reads.
// A model can be described this way without its weights (tests of loaders
// that must refuse a model before reading them).
func WriteHeader(w io.Writer, cfg nn.ViTConfig, n int) error {
	e := &encoder{enc: msgpack.NewEncoder(w)}
	e.header(cfg, n)
	return e.err
}

func (e *encoder) header(cfg nn.ViTConfig, n int) {
	e.mapLen(n)
	e.str("magic")
	e.str(Magic)
	e.str("version")
	e.int(Version)
	e.str("config")
	e.config(cfg)
}

// Write streams c to w in the layout of docs/checkpoint.md: one msgpack map
// whose keys come in a fixed order, model weights in config order, training
// groups, tensors and scalars sorted by name, all tensors as float32.
func Write(w io.Writer, c *Checkpoint) error {
	if err := c.Check(); err != nil {
		return err
	}
	e := &encoder{enc: msgpack.NewEncoder(w)}
	e.header(c.Config, 6)
	e.str("tensors")
	params := c.Config.ParamShapes()
	e.mapLen(len(params))
	for _, p := range params {
		e.str(p.Name)
		e.tensor(c.Weights[p.Name])
	}
	e.str("training")
	if t := c.Training; t == nil {
		e.nil()
	} else {
		e.mapLen(4)
		e.str("step")
		e.int(t.Step)
		e.str("groups")
		e.mapLen(len(t.Groups))
		for _, g := range sortedKeys(t.Groups) {
			e.str(g)
			e.mapLen(len(t.Groups[g]))
			for _, name := range sortedKeys(t.Groups[g]) {
				e.str(name)
				e.tensor(t.Groups[g][name])
			}
		}
		e.str("scalars")
		e.mapLen(len(t.Scalars))
		for _, k := range sortedKeys(t.Scalars) {
			e.str(k)
			e.float(t.Scalars[k])
		}
		e.str("blobs")
		e.mapLen(len(t.Blobs))
		for _, k := range sortedKeys(t.Blobs) {
			e.str(k)
			e.bin(t.Blobs[k])
		}
	}
	e.str("meta")
	e.mapLen(len(c.Meta))
	for _, k := range sortedKeys(c.Meta) {
		e.str(k)
		e.str(c.Meta[k])
	}
	if e.err != nil {
		return fmt.Errorf("ckpt: write: %w", e.err)
	}
	return nil
}

// encoder keeps the first error so the layout above reads straight through.
type encoder struct {
	enc *msgpack.Encoder
	err error
	buf []byte
}

func (e *encoder) do(f func() error) {
	if e.err == nil {
		e.err = f()
	}
}

func (e *encoder) mapLen(n int)    { e.do(func() error { return e.enc.EncodeMapLen(n) }) }
func (e *encoder) str(s string)    { e.do(func() error { return e.enc.EncodeString(s) }) }
func (e *encoder) int(v int64)     { e.do(func() error { return e.enc.EncodeInt(v) }) }
func (e *encoder) float(v float64) { e.do(func() error { return e.enc.EncodeFloat64(v) }) }
func (e *encoder) bool(v bool)     { e.do(func() error { return e.enc.EncodeBool(v) }) }
func (e *encoder) nil()            { e.do(func() error { return e.enc.EncodeNil() }) }
func (e *encoder) bin(b []byte) {
	e.do(func() error { return e.enc.EncodeBytesLen(len(b)) })
	e.do(func() error { _, err := e.enc.Writer().Write(b); return err })
}

func (e *encoder) config(c nn.ViTConfig) {
	e.mapLen(14)
	for _, kv := range []struct {
		k string
		v int
	}{
		{"patch_size", c.PatchSize}, {"in_chans", c.InChans}, {"embed_dim", c.EmbedDim},
		{"depth", c.Depth}, {"heads", c.Heads}, {"mlp_hidden", c.MLPHidden},
	} {
		e.str(kv.k)
		e.int(int64(kv.v))
	}
	e.str("ffn")
	e.str(string(c.FFN))
	e.str("registers")
	e.int(int64(c.Registers))
	e.str("pos_grid")
	e.int(int64(c.PosGrid))
	e.str("layer_scale")
	e.bool(c.LayerScale)
	e.str("qkv_bias")
	e.bool(c.QKVBias)
	e.str("ln_eps")
	e.float(c.LNEps)
	e.str("interp_antialias")
	e.bool(c.InterpAntialias)
	e.str("interp_offset")
	e.float(c.InterpOffset)
}

// tensor writes {dtype, shape, data} with data as little-endian float32,
// converted through a small buffer so a large tensor is never copied whole.
func (e *encoder) tensor(t Tensor) {
	e.mapLen(3)
	e.str("dtype")
	e.str("f32")
	e.str("shape")
	e.do(func() error { return e.enc.EncodeArrayLen(len(t.Shape)) })
	for _, s := range t.Shape {
		e.int(int64(s))
	}
	e.str("data")
	e.do(func() error { return e.enc.EncodeBytesLen(4 * len(t.Data)) })
	const chunk = 1 << 14
	if e.buf == nil {
		e.buf = make([]byte, 4*chunk)
	}
	for i := 0; i < len(t.Data) && e.err == nil; i += chunk {
		part := t.Data[i:min(i+chunk, len(t.Data))]
		for j, v := range part {
			binary.LittleEndian.PutUint32(e.buf[4*j:], math.Float32bits(v))
		}
		_, e.err = e.enc.Writer().Write(e.buf[:4*len(part)])
	}
}
