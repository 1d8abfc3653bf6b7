package ckpt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/webdino/webdino/nn"
)

// maxRank bounds tensor ranks; DINOv2's largest is 4 (the patch conv).
const maxRank = 8

// Decode reads a checkpoint held in memory (the browser's fetch result).
func Decode(b []byte) (*Checkpoint, error) {
	return Read(bytes.NewReader(b), int64(len(b)))
}

// Read reads a checkpoint from r, which must hold exactly size bytes: every
// length in the file is checked against the bytes that remain before
// anything is allocated, so a hostile or truncated file fails fast. Errors
// start with "ckpt:" and say where in the file the problem is; ReadFile adds
// the file name.
func Read(r io.Reader, size int64) (*Checkpoint, error) {
	c, err := read(r, size, false)
	if err != nil {
		return nil, fmt.Errorf("ckpt: %w", err)
	}
	return c, nil
}

// PeekConfig reads the model config from the start of a checkpoint file
// (webdino writes it in the first few hundred bytes), so that a caller can
// refuse a model too large for it before reading the rest: the browser
// viewer checks a file's head before copying gigabytes into WebAssembly
// memory. An error says the head is not a webdino checkpoint, or is too
// short to hold the config.
func PeekConfig(head []byte) (nn.ViTConfig, error) {
	c, err := read(bytes.NewReader(head), math.MaxInt64, true)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nn.ViTConfig{}, fmt.Errorf("ckpt: the first %d bytes end before the model config", len(head))
		}
		return nn.ViTConfig{}, fmt.Errorf("ckpt: %w", err)
	}
	return c.Config, nil
}

// counter counts the bytes the msgpack decoder consumes. It is an
// io.ByteScanner, so the decoder reads through it without buffering ahead.
type counter struct {
	br *bufio.Reader
	n  int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.br.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *counter) ReadByte() (byte, error) {
	b, err := c.br.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

func (c *counter) UnreadByte() error {
	err := c.br.UnreadByte()
	if err == nil {
		c.n--
	}
	return err
}

type decoder struct {
	d    *msgpack.Decoder
	c    *counter
	size int64
	buf  []byte
}

// read reads a checkpoint of size bytes or, with configOnly, returns as
// soon as the config is read (size then need not be known).
func read(r io.Reader, size int64, configOnly bool) (*Checkpoint, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	head, _ := br.Peek(8)
	if len(head) == 0 {
		return nil, errors.New("empty file, not a webdino checkpoint")
	}
	if c := head[0]; !msgpcode.IsFixedMap(c) && c != msgpcode.Map16 && c != msgpcode.Map32 {
		return nil, fmt.Errorf("not a webdino checkpoint: starts with bytes % x%s", head, foreignHint(head))
	}
	d := &decoder{c: &counter{br: br}, size: size}
	d.d = msgpack.NewDecoder(d.c)

	n, err := d.mapLen()
	if err != nil {
		return nil, err
	}
	if n < 2 {
		return nil, fmt.Errorf("not a webdino checkpoint: top-level map has %d fields", n)
	}
	if k, err := d.str(); err != nil || k != "magic" {
		return nil, fmt.Errorf("not a webdino checkpoint: first field is not %q", "magic")
	}
	if m, err := d.str(); err != nil || m != Magic {
		return nil, fmt.Errorf("not a webdino checkpoint: magic %.40q, want %q", m, Magic)
	}
	if k, err := d.str(); err != nil || k != "version" {
		return nil, fmt.Errorf("second field is not %q", "version")
	}
	v, err := d.int()
	if err != nil {
		return nil, fmt.Errorf("version: %w", err)
	}
	if v > Version {
		return nil, fmt.Errorf("format version %d is newer than this reader's (%d): update webdino", v, Version)
	}
	if v < 1 {
		return nil, fmt.Errorf("invalid format version %d", v)
	}

	c := &Checkpoint{}
	seen := map[string]bool{}
	for i := 2; i < n; i++ {
		key, err := d.str()
		if err != nil {
			return nil, fmt.Errorf("field name: %w", err)
		}
		if seen[key] {
			return nil, fmt.Errorf("field %.80q appears twice", key)
		}
		seen[key] = true
		switch key {
		case "config":
			if c.Config, err = d.config(); err == nil && configOnly {
				return c, nil
			}
		case "tensors":
			if !seen["config"] {
				return nil, errors.New(`"tensors" comes before "config"`)
			}
			c.Weights, err = d.weights(c.Config)
		case "training":
			c.Training, err = d.training()
		case "meta":
			c.Meta, err = d.meta()
		default:
			return nil, fmt.Errorf("unknown field %.80q", key)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	if configOnly {
		return nil, errors.New(`no "config" field`)
	}
	for _, k := range []string{"config", "tensors"} {
		if !seen[k] {
			return nil, fmt.Errorf("no %q field", k)
		}
	}
	if left := d.remaining(); left != 0 {
		return nil, fmt.Errorf("%d bytes left after the checkpoint (truncated or padded file?)", left)
	}
	return c, nil
}

// foreignHint names the formats people most often pass by mistake.
func foreignHint(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return " (a zip archive, e.g. a PyTorch .pth: import it with cmd/convert)"
	case len(head) == 8 && head[7] == 0 && head[6] == 0:
		return " (perhaps safetensors: import it with cmd/convert)"
	}
	return ""
}

func (d *decoder) remaining() int64 { return d.size - d.c.n }

// peek returns the type code of the next value.
func (d *decoder) peek() (byte, error) {
	c, err := d.d.PeekCode()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return c, err
}

func (d *decoder) mapLen() (int, error) {
	c, err := d.peek()
	if err != nil {
		return 0, err
	}
	if !msgpcode.IsFixedMap(c) && c != msgpcode.Map16 && c != msgpcode.Map32 {
		return 0, fmt.Errorf("want a map, found type 0x%02x", c)
	}
	n, err := d.d.DecodeMapLen()
	if err != nil {
		return 0, err
	}
	// Every entry takes at least two bytes.
	if int64(n) > d.remaining()/2 {
		return 0, fmt.Errorf("map claims %d entries but only %d bytes remain", n, d.remaining())
	}
	return n, nil
}

func (d *decoder) arrayLen() (int, error) {
	c, err := d.peek()
	if err != nil {
		return 0, err
	}
	if !msgpcode.IsFixedArray(c) && c != msgpcode.Array16 && c != msgpcode.Array32 {
		return 0, fmt.Errorf("want an array, found type 0x%02x", c)
	}
	n, err := d.d.DecodeArrayLen()
	if err != nil {
		return 0, err
	}
	if int64(n) > d.remaining() {
		return 0, fmt.Errorf("array claims %d elements but only %d bytes remain", n, d.remaining())
	}
	return n, nil
}

// rawLen reads the header of a string (str) or a byte string (bin) and
// returns its length after checking it against the bytes that remain.
func (d *decoder) rawLen(str bool) (int, error) {
	c, err := d.peek()
	if err != nil {
		return 0, err
	}
	isStr := msgpcode.IsFixedString(c) || c == msgpcode.Str8 || c == msgpcode.Str16 || c == msgpcode.Str32
	isBin := c == msgpcode.Bin8 || c == msgpcode.Bin16 || c == msgpcode.Bin32
	if str && !isStr {
		return 0, fmt.Errorf("want a string, found type 0x%02x", c)
	}
	if !str && !isBin {
		return 0, fmt.Errorf("want binary data, found type 0x%02x", c)
	}
	n, err := d.d.DecodeBytesLen()
	if err != nil {
		return 0, err
	}
	if int64(n) > d.remaining() {
		what := "string"
		if !str {
			what = "binary data"
		}
		return 0, fmt.Errorf("%s claims %d bytes but only %d remain", what, n, d.remaining())
	}
	return n, nil
}

func (d *decoder) str() (string, error) {
	n, err := d.rawLen(true)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if err := d.d.ReadFull(b); err != nil {
		return "", err
	}
	return string(b), nil
}

func (d *decoder) bin() ([]byte, error) {
	n, err := d.rawLen(false)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	return b, d.d.ReadFull(b)
}

func (d *decoder) int() (int64, error) {
	c, err := d.peek()
	if err != nil {
		return 0, err
	}
	if !msgpcode.IsFixedNum(c) && !(c >= msgpcode.Uint8 && c <= msgpcode.Int64) {
		return 0, fmt.Errorf("want an integer, found type 0x%02x", c)
	}
	if c == msgpcode.Uint64 {
		v, err := d.d.DecodeUint64()
		if err == nil && v > math.MaxInt64 {
			err = fmt.Errorf("integer %d is too large", v)
		}
		return int64(v), err
	}
	return d.d.DecodeInt64()
}

func (d *decoder) float() (float64, error) {
	c, err := d.peek()
	if err != nil {
		return 0, err
	}
	if c == msgpcode.Float || c == msgpcode.Double {
		return d.d.DecodeFloat64()
	}
	v, err := d.int()
	if err != nil {
		return 0, fmt.Errorf("want a number, found type 0x%02x", c)
	}
	return float64(v), nil
}

func (d *decoder) bool() (bool, error) {
	c, err := d.peek()
	if err != nil {
		return false, err
	}
	if c != msgpcode.True && c != msgpcode.False {
		return false, fmt.Errorf("want a boolean, found type 0x%02x", c)
	}
	return d.d.DecodeBool()
}

// isNil consumes a nil if one comes next.
func (d *decoder) isNil() (bool, error) {
	c, err := d.peek()
	if err != nil || c != msgpcode.Nil {
		return false, err
	}
	return true, d.d.DecodeNil()
}

// config reads the model config; every field is required.
func (d *decoder) config() (nn.ViTConfig, error) {
	var c nn.ViTConfig
	n, err := d.mapLen()
	if err != nil {
		return c, err
	}
	ints := map[string]*int{
		"patch_size": &c.PatchSize, "in_chans": &c.InChans, "embed_dim": &c.EmbedDim,
		"depth": &c.Depth, "heads": &c.Heads, "mlp_hidden": &c.MLPHidden,
		"registers": &c.Registers, "pos_grid": &c.PosGrid,
	}
	bools := map[string]*bool{"layer_scale": &c.LayerScale, "qkv_bias": &c.QKVBias, "interp_antialias": &c.InterpAntialias}
	floats := map[string]*float64{"ln_eps": &c.LNEps, "interp_offset": &c.InterpOffset}
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		key, err := d.str()
		if err != nil {
			return c, err
		}
		if seen[key] {
			return c, fmt.Errorf("field %.80q appears twice", key)
		}
		seen[key] = true
		if p, ok := ints[key]; ok {
			var v int64
			v, err = d.int()
			if err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
				err = fmt.Errorf("%d is out of range", v)
			}
			*p = int(v)
		} else if p, ok := bools[key]; ok {
			*p, err = d.bool()
		} else if p, ok := floats[key]; ok {
			*p, err = d.float()
		} else if key == "ffn" {
			var s string
			s, err = d.str()
			c.FFN = nn.FFNKind(s)
		} else {
			return c, fmt.Errorf("unknown field %.80q", key)
		}
		if err != nil {
			return c, fmt.Errorf("%s: %w", key, err)
		}
	}
	for _, k := range configFields {
		if !seen[k] {
			return c, fmt.Errorf("missing field %q", k)
		}
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	// The weights must follow, at two bytes per parameter at least: refuse a
	// config whose parameter list alone would not fit in the file.
	if need := 2 * c.NumParams(); need > d.remaining() {
		return c, fmt.Errorf("the model has %d parameters (at least %d bytes) but only %d bytes remain",
			c.NumParams(), need, d.remaining())
	}
	return c, nil
}

// configFields lists the config keys in the order Write emits them.
var configFields = []string{"patch_size", "in_chans", "embed_dim", "depth", "heads", "mlp_hidden", "ffn",
	"registers", "pos_grid", "layer_scale", "qkv_bias", "ln_eps", "interp_antialias", "interp_offset"}

// weights reads the model tensors, each checked by name and shape against
// the config before its data is read.
func (d *decoder) weights(cfg nn.ViTConfig) (map[string]Tensor, error) {
	params := cfg.ParamShapes()
	want := make(map[string][]int, len(params))
	for _, p := range params {
		want[p.Name] = p.Shape
	}
	n, err := d.mapLen()
	if err != nil {
		return nil, err
	}
	ts := make(map[string]Tensor, min(n, len(params)))
	for i := 0; i < n; i++ {
		name, err := d.str()
		if err != nil {
			return nil, err
		}
		shape, ok := want[name]
		if !ok {
			return nil, fmt.Errorf("unexpected tensor %.80q: not a parameter of this config", name)
		}
		if _, dup := ts[name]; dup {
			return nil, fmt.Errorf("tensor %.80q appears twice", name)
		}
		if ts[name], err = d.tensor(shape); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
	}
	for _, p := range params {
		if _, ok := ts[p.Name]; !ok {
			return nil, fmt.Errorf("missing tensor %q %v", p.Name, p.Shape)
		}
	}
	return ts, nil
}

// tensor reads {dtype, shape, data}; data must come last so that it is
// checked before it is read. want, if not nil, is the required shape.
func (d *decoder) tensor(want []int) (Tensor, error) {
	var t Tensor
	n, err := d.mapLen()
	if err != nil {
		return t, err
	}
	var dt dtype
	var haveShape, haveData bool
	for i := 0; i < n; i++ {
		key, err := d.str()
		if err != nil {
			return t, err
		}
		switch key {
		case "dtype":
			s, err := d.str()
			if err != nil {
				return t, fmt.Errorf("dtype: %w", err)
			}
			if dt = dtype(s); dt.size() == 0 {
				return t, fmt.Errorf("dtype %.20q is not one of f32, f16, bf16", s)
			}
		case "shape":
			if t.Shape, err = d.shape(); err != nil {
				return t, fmt.Errorf("shape: %w", err)
			}
			if want != nil && !slices.Equal(t.Shape, want) {
				return t, fmt.Errorf("shape %v, config wants %v", t.Shape, want)
			}
			haveShape = true
		case "data":
			if dt == "" || !haveShape {
				return t, errors.New(`"data" must come after "dtype" and "shape"`)
			}
			if t.Data, err = d.data(dt, t.Numel()); err != nil {
				return t, fmt.Errorf("data: %w", err)
			}
			haveData = true
		default:
			return t, fmt.Errorf("unknown field %.80q", key)
		}
	}
	if !haveData {
		return t, errors.New(`no "data" field`)
	}
	return t, nil
}

func (d *decoder) shape() ([]int, error) {
	n, err := d.arrayLen()
	if err != nil {
		return nil, err
	}
	if n > maxRank {
		return nil, fmt.Errorf("rank %d is more than %d", n, maxRank)
	}
	shape := make([]int, n)
	numel := int64(1)
	for i := range shape {
		v, err := d.int()
		if err != nil {
			return nil, err
		}
		if v < 0 || v > math.MaxInt32 {
			return nil, fmt.Errorf("dimension %d out of range", v)
		}
		shape[i] = int(v)
		if numel *= v; numel > math.MaxInt32*int64(16) {
			return nil, errors.New("too many elements")
		}
	}
	return shape, nil
}

// data reads numel elements of type dt, converting to float32 through a
// small buffer.
func (d *decoder) data(dt dtype, numel int) ([]float32, error) {
	n, err := d.rawLen(false)
	if err != nil {
		return nil, err
	}
	if n != numel*dt.size() {
		return nil, fmt.Errorf("%d bytes, but %d %s elements take %d", n, numel, dt, numel*dt.size())
	}
	out := make([]float32, numel)
	const chunk = 1 << 14
	if d.buf == nil {
		d.buf = make([]byte, 4*chunk)
	}
	for i := 0; i < numel; i += chunk {
		part := out[i:min(i+chunk, numel)]
		b := d.buf[:len(part)*dt.size()]
		if err := d.d.ReadFull(b); err != nil {
			return nil, err
		}
		dt.decode(part, b)
	}
	return out, nil
}

func (d *decoder) training() (*Training, error) {
	if null, err := d.isNil(); null || err != nil {
		return nil, err
	}
	n, err := d.mapLen()
	if err != nil {
		return nil, err
	}
	t := &Training{Groups: map[string]map[string]Tensor{}, Scalars: map[string]float64{}, Blobs: map[string][]byte{}}
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		key, err := d.str()
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, fmt.Errorf("field %.80q appears twice", key)
		}
		seen[key] = true
		switch key {
		case "step":
			t.Step, err = d.int()
		case "groups":
			err = d.groups(t.Groups)
		case "scalars":
			err = readMap(d, t.Scalars, d.float)
		case "blobs":
			err = readMap(d, t.Blobs, d.bin)
		default:
			return nil, fmt.Errorf("unknown field %.80q", key)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	return t, nil
}

func (d *decoder) groups(out map[string]map[string]Tensor) error {
	n, err := d.mapLen()
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		g, err := d.str()
		if err != nil {
			return err
		}
		if _, dup := out[g]; dup {
			return fmt.Errorf("group %.80q appears twice", g)
		}
		out[g] = map[string]Tensor{}
		err = readMap(d, out[g], func() (Tensor, error) { return d.tensor(nil) })
		if err != nil {
			return fmt.Errorf("group %.80q: %w", g, err)
		}
	}
	return nil
}

func (d *decoder) meta() (map[string]string, error) {
	m := map[string]string{}
	if null, err := d.isNil(); null || err != nil {
		return m, err
	}
	return m, readMap(d, m, d.str)
}

// readMap reads a map with string keys into out, refusing duplicate keys.
func readMap[V any](d *decoder, out map[string]V, value func() (V, error)) error {
	n, err := d.mapLen()
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		k, err := d.str()
		if err != nil {
			return err
		}
		if _, dup := out[k]; dup {
			return fmt.Errorf("%.80q appears twice", k)
		}
		if out[k], err = value(); err != nil {
			return fmt.Errorf("%.80q: %w", k, err)
		}
	}
	return nil
}
