package ckpt

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/webdino/webdino/nn"
)

// tinyConfig is a valid ViT small enough for hand-built files.
func tinyConfig() nn.ViTConfig {
	c := nn.ViTConfig{PatchSize: 2, InChans: 3, EmbedDim: 8, Depth: 2, Heads: 2, MLPHidden: 16,
		FFN: nn.FFNMLP, Registers: 1, PosGrid: 2, LayerScale: true, QKVBias: true, LNEps: 1e-6}
	c.SetHubInterpolation()
	return c
}

func randomWeights(cfg nn.ViTConfig, seed uint64) map[string]Tensor {
	rng := rand.New(rand.NewPCG(seed, 1))
	ws := map[string]Tensor{}
	for _, p := range cfg.ParamShapes() {
		t := Tensor{Shape: p.Shape, Data: make([]float32, p.Numel())}
		for i := range t.Data {
			t.Data[i] = float32(rng.NormFloat64())
		}
		ws[p.Name] = t
	}
	return ws
}

func tinyCheckpoint(training bool) *Checkpoint {
	cfg := tinyConfig()
	c := &Checkpoint{Config: cfg, Weights: randomWeights(cfg, 1), Meta: map[string]string{"source": "test", "note": "ünïcode"}}
	if training {
		c.Training = &Training{
			Step:    12345,
			Groups:  map[string]map[string]Tensor{"student": randomWeights(cfg, 2), "dino": {"center": {Shape: []int{1, 5}, Data: []float32{1, 2, 3, 4, 5}}}},
			Scalars: map[string]float64{"lr": 3.5e-4, "teacher_temp": 0.04},
			Blobs:   map[string][]byte{"rng": {1, 2, 3}, "empty": {}},
		}
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	for _, training := range []bool{false, true} {
		c := tinyCheckpoint(training)
		b, err := Encode(c)
		require.NoError(t, err)
		// The first bytes are the signature docs/checkpoint.md promises.
		require.Equal(t, append([]byte{0x86, 0xa5}, "magicwebdino-ckpt"[:5]...), b[:7])
		require.Equal(t, "\xac"+Magic, string(b[7:20]))
		got, err := Decode(b)
		require.NoError(t, err)
		if !training {
			c.Meta, got.Meta = nil, nil // compared below
		}
		require.Equal(t, c, got)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "model.msgpack")
	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	c := tinyCheckpoint(true)
	require.NoError(t, WriteFile(path, c))
	got, err := ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, c, got)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "the temporary file must be renamed away")
}

func TestPeekConfig(t *testing.T) {
	c := tinyCheckpoint(true)
	b, err := Encode(c)
	require.NoError(t, err)
	// The config is all in the first few hundred bytes.
	for _, n := range []int{400, len(b)} {
		cfg, err := PeekConfig(b[:n])
		require.NoError(t, err, "head of %d bytes", n)
		require.Equal(t, c.Config, cfg)
	}
	_, err = PeekConfig(b[:60])
	require.ErrorContains(t, err, "ckpt: the first 60 bytes end before the model config")
	_, err = PeekConfig([]byte("PK\x03\x04 a zip"))
	require.ErrorContains(t, err, "not a webdino checkpoint")
	// A config whose weights would need far more bytes than follow is still
	// read: the caller decides whether the model fits before loading more.
	big := nn.ViTConfig{PatchSize: 14, InChans: 3, EmbedDim: 1536, Depth: 40, Heads: 24, MLPHidden: 4096,
		FFN: nn.FFNSwiGLU, PosGrid: 37, LayerScale: true, QKVBias: true, LNEps: 1e-6}
	var buf bytes.Buffer
	require.NoError(t, WriteHeader(&buf, big, 4))
	cfg, err := PeekConfig(buf.Bytes())
	require.NoError(t, err)
	require.Equal(t, big, cfg)
	_, err = Decode(buf.Bytes())
	require.ErrorContains(t, err, "parameters (at least")
}

func TestWriteRefusesInconsistentCheckpoints(t *testing.T) {
	cases := []struct {
		edit func(c *Checkpoint)
		want string
	}{
		{func(c *Checkpoint) { c.Config.Heads = 3 }, "ckpt: vit config: 3 heads do not divide embed dim 8"},
		{func(c *Checkpoint) { delete(c.Weights, "norm.bias") }, `ckpt: missing tensor "norm.bias" [8]`},
		{func(c *Checkpoint) { c.Weights["head.weight"] = Tensor{Shape: []int{1}, Data: []float32{1}} },
			`ckpt: unexpected tensor "head.weight" [1]: not a parameter of this config`},
		{func(c *Checkpoint) { c.Weights["cls_token"] = Tensor{Shape: []int{1, 8}, Data: make([]float32, 8)} },
			`ckpt: tensor "cls_token" has shape [1 8], config wants [1 1 8]`},
		{func(c *Checkpoint) { w := c.Weights["norm.bias"]; w.Data = w.Data[:7]; c.Weights["norm.bias"] = w },
			`ckpt: tensor "norm.bias": shape [8] holds 8 elements, data has 7`},
		{func(c *Checkpoint) { c.Training.Groups["x"] = map[string]Tensor{"y": {Shape: []int{2}}} },
			`ckpt: training group "x" tensor "y": shape [2] holds 2 elements, data has 0`},
	}
	for _, c := range cases {
		ck := tinyCheckpoint(true)
		c.edit(ck)
		_, err := Encode(ck)
		require.EqualError(t, err, c.want)
		require.ErrorContains(t, WriteFile(filepath.Join(t.TempDir(), "x"), ck), c.want)
	}
}

// file builds a checkpoint by hand with the package's own encoder, so tests
// can write what Write never would.
func file(t testing.TB, fields int, body func(e *encoder)) []byte {
	var buf bytes.Buffer
	e := &encoder{enc: msgpack.NewEncoder(&buf)}
	e.mapLen(fields)
	body(e)
	require.NoError(t, e.err)
	return buf.Bytes()
}

// header writes magic, version and config (3 fields).
func header(e *encoder, version int64, cfg nn.ViTConfig) {
	e.str("magic")
	e.str(Magic)
	e.str("version")
	e.int(version)
	e.str("config")
	e.config(cfg)
}

// start writes magic and version (2 fields).
func start(e *encoder) {
	e.str("magic")
	e.str(Magic)
	e.str("version")
	e.int(1)
}

// weightsExcept writes the tensors field with every weight but skip, then
// lets extra write more entries (extraN of them).
func weightsExcept(e *encoder, cfg nn.ViTConfig, skip string, extraN int, extra func()) {
	ws := randomWeights(cfg, 3)
	e.str("tensors")
	n := len(ws) + extraN
	if skip != "" {
		n--
	}
	e.mapLen(n)
	for _, p := range cfg.ParamShapes() {
		if p.Name != skip {
			e.str(p.Name)
			e.tensor(ws[p.Name])
		}
	}
	if extra != nil {
		extra()
	}
}

func TestReadRejectsBadFiles(t *testing.T) {
	cfg := tinyConfig()
	good, err := Encode(tinyCheckpoint(true))
	require.NoError(t, err)

	wrongMagic := bytes.Replace(good, []byte(Magic), []byte("webdino-xxxx"), 1)
	newer := file(t, 4, func(e *encoder) { header(e, 2, cfg) })
	misShaped := file(t, 4, func(e *encoder) {
		header(e, 1, cfg)
		weightsExcept(e, cfg, "cls_token", 1, func() {
			e.str("cls_token")
			e.tensor(Tensor{Shape: []int{1, 1, 9}, Data: make([]float32, 9)})
		})
	})
	unknown := file(t, 4, func(e *encoder) {
		header(e, 1, cfg)
		weightsExcept(e, cfg, "", 1, func() {
			e.str("head.weight")
			e.tensor(Tensor{Shape: []int{2}, Data: make([]float32, 2)})
		})
	})
	missing := file(t, 4, func(e *encoder) { header(e, 1, cfg); weightsExcept(e, cfg, "norm.weight", 0, nil) })
	badDtype := file(t, 4, func(e *encoder) {
		header(e, 1, cfg)
		weightsExcept(e, cfg, "norm.bias", 1, func() {
			e.str("norm.bias")
			e.mapLen(3)
			e.str("dtype")
			e.str("f64")
		})
	})
	dataFirst := file(t, 4, func(e *encoder) {
		header(e, 1, cfg)
		weightsExcept(e, cfg, "norm.bias", 1, func() {
			e.str("norm.bias")
			e.mapLen(3)
			e.str("data")
			e.bin(make([]byte, 32))
		})
	})
	shortData := file(t, 4, func(e *encoder) {
		header(e, 1, cfg)
		weightsExcept(e, cfg, "norm.bias", 1, func() {
			e.str("norm.bias")
			e.mapLen(3)
			e.str("dtype")
			e.str("f32")
			e.str("shape")
			e.do(func() error { return e.enc.EncodeArrayLen(1) })
			e.int(8)
			e.str("data")
			e.bin(make([]byte, 28))
		})
	})
	tensorsFirst := file(t, 3, func(e *encoder) {
		e.str("magic")
		e.str(Magic)
		e.str("version")
		e.int(1)
		e.str("tensors")
		e.mapLen(0)
	})
	// A config claiming a ViT-g in a small file fails before any tensor.
	giant, err := nn.Preset("vitg14")
	require.NoError(t, err)
	hugeConfig := file(t, 4, func(e *encoder) { header(e, 1, giant) })

	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "ckpt: empty file, not a webdino checkpoint"},
		{"zip", []byte("PK\x03\x04\x14\x00\x00\x00rest"), "ckpt: not a webdino checkpoint: starts with bytes 50 4b 03 04 14 00 00 00 (a zip archive, e.g. a PyTorch .pth: import it with cmd/convert)"},
		{"safetensors", []byte("\x10\x00\x00\x00\x00\x00\x00\x00{}"), "(perhaps safetensors: import it with cmd/convert)"},
		{"not magic first", file(t, 2, func(e *encoder) { e.str("version"); e.int(1); e.str("magic"); e.str(Magic) }),
			`ckpt: not a webdino checkpoint: first field is not "magic"`},
		{"wrong magic", wrongMagic, `ckpt: not a webdino checkpoint: magic "webdino-xxxx", want "webdino-ckpt"`},
		{"newer", newer, "ckpt: format version 2 is newer than this reader's (1): update webdino"},
		{"version zero", file(t, 2, func(e *encoder) { e.str("magic"); e.str(Magic); e.str("version"); e.int(0) }),
			"ckpt: invalid format version 0"},
		{"mis-shaped", misShaped, `ckpt: tensors: tensor "cls_token": shape [1 1 9], config wants [1 1 8]`},
		{"unknown tensor", unknown, `ckpt: tensors: unexpected tensor "head.weight": not a parameter of this config`},
		{"missing tensor", missing, `ckpt: tensors: missing tensor "norm.weight" [8]`},
		{"bad dtype", badDtype, `ckpt: tensors: tensor "norm.bias": dtype "f64" is not one of f32, f16, bf16`},
		{"data first", dataFirst, `ckpt: tensors: tensor "norm.bias": "data" must come after "dtype" and "shape"`},
		{"short data", shortData, `ckpt: tensors: tensor "norm.bias": data: 28 bytes, but 8 f32 elements take 32`},
		{"tensors first", tensorsFirst, `ckpt: "tensors" comes before "config"`},
		{"huge config", hugeConfig, "ckpt: config: the model has 1136480768 parameters (at least 2272961536 bytes) but only 0 bytes remain"},
		{"truncated", good[:len(good)-10], "ckpt: meta: "},
		{"trailing", append(append([]byte(nil), good...), 0), "ckpt: 1 bytes left after the checkpoint"},
		{"duplicate field", file(t, 4, func(e *encoder) { start(e); e.str("meta"); e.nil(); e.str("meta"); e.nil() }),
			`ckpt: field "meta" appears twice`},
		{"unknown field", file(t, 3, func(e *encoder) { start(e); e.str("extra"); e.nil() }), `ckpt: unknown field "extra"`},
		{"no config", file(t, 3, func(e *encoder) { start(e); e.str("meta"); e.nil() }), `ckpt: no "config" field`},
		{"meta not strings", file(t, 3, func(e *encoder) { start(e); e.str("meta"); e.mapLen(1); e.str("k"); e.int(3) }),
			`ckpt: meta: "k": want a string, found type 0x03`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.in)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}

	path := filepath.Join(t.TempDir(), "bad.msgpack")
	require.NoError(t, os.WriteFile(path, wrongMagic, 0o644))
	_, err = ReadFile(path)
	require.ErrorContains(t, err, path+": ckpt: not a webdino checkpoint: magic")
}

// A length field claiming 4 GB in a small file must fail before allocating.
func TestHugeLengthFailsWithoutAllocating(t *testing.T) {
	cfg := tinyConfig()
	hostile := file(t, 4, func(e *encoder) {
		header(e, 1, cfg)
		e.str("tensors")
		e.mapLen(1)
		e.str("cls_token")
		e.mapLen(3)
		e.str("dtype")
		e.str("f32")
		e.str("shape")
		e.do(func() error { return e.enc.EncodeArrayLen(3) })
		e.int(1)
		e.int(1)
		e.int(8)
		e.str("data")
		e.do(func() error { return e.enc.EncodeBytesLen(math.MaxUint32) })
	})
	// Pad so the config's size check passes and the data length is what fails.
	hostile = append(hostile, make([]byte, 2*int(cfg.NumParams()))...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Decode(hostile)
	runtime.ReadMemStats(&after)
	require.ErrorContains(t, err, `ckpt: tensors: tensor "cls_token": data: binary data claims 4294967295 bytes but only`)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "allocated while rejecting")

	// The same for a map, a string and an array claiming 2^32-1 entries.
	for _, code := range [][]byte{
		{0xdf, 0xff, 0xff, 0xff, 0xff},         // map32
		{0xdb, 0xff, 0xff, 0xff, 0xff},         // str32 (as a key)
		{0xa4, 't', 'e', 'n', 's', 0xdd, 0xff}, // bad array header after a 4-byte key
	} {
		in := append([]byte{0x81}, code...)
		_, err := Decode(append(in, make([]byte, 64)...))
		require.Error(t, err)
	}
	_, err = Decode(append([]byte{0xdf, 0xff, 0xff, 0xff, 0xff}, make([]byte, 64)...))
	require.ErrorContains(t, err, "ckpt: map claims 4294967295 entries but only 64 bytes remain")
	_, err = Decode(append([]byte{0x82, 0xdb, 0xff, 0xff, 0xff, 0xff}, make([]byte, 64)...))
	require.ErrorContains(t, err, `ckpt: not a webdino checkpoint: first field is not "magic"`)
}

func TestReadsHalfPrecision(t *testing.T) {
	cfg := tinyConfig()
	// f16 0x3c00 = 1, 0xc000 = -2, 0x0001 = 2^-24 (subnormal), 0x7c00 = +inf;
	// bf16 0x3f80 = 1, 0xc040 = -3.
	f16bytes := []byte{0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x7c, 0, 0, 0, 0, 0, 0, 0, 0}
	bf16bytes := []byte{0x80, 0x3f, 0x40, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	in := file(t, 5, func(e *encoder) {
		header(e, 1, cfg)
		weightsExcept(e, cfg, "norm.bias", 1, func() {
			e.str("norm.bias")
			e.mapLen(3)
			e.str("dtype")
			e.str("f16")
			e.str("shape")
			e.do(func() error { return e.enc.EncodeArrayLen(1) })
			e.int(8)
			e.str("data")
			e.bin(f16bytes)
		})
		e.str("training")
		e.mapLen(1)
		e.str("groups")
		e.mapLen(1)
		e.str("g")
		e.mapLen(1)
		e.str("t")
		e.mapLen(3)
		e.str("dtype")
		e.str("bf16")
		e.str("shape")
		e.do(func() error { return e.enc.EncodeArrayLen(2) })
		e.int(2)
		e.int(4)
		e.str("data")
		e.bin(bf16bytes)
	})
	c, err := Decode(in)
	require.NoError(t, err)
	require.Equal(t, []float32{1, -2, float32(math.Ldexp(1, -24)), float32(math.Inf(1)), 0, 0, 0, 0}, c.Weights["norm.bias"].Data)
	require.Equal(t, []float32{1, -3, 0, 0, 0, 0, 0, 0}, c.Training.Groups["g"]["t"].Data)
	require.Empty(t, c.Meta)
	for h := 0; h < 1<<16; h++ {
		if f := halfToFloat(uint16(h)); !math.IsNaN(float64(f)) {
			require.Equal(t, uint16(h), floatToHalf(f), "f16 %#04x", h)
		}
	}
}

// floatToHalf narrows exactly representable values (test helper).
func floatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	man := b & 0x7fffff
	switch {
	case b&0x7fffffff == 0:
		return sign
	case exp >= 0x1f:
		return sign | 0x7c00 | uint16(man>>13)
	case exp <= 0:
		return sign | uint16(math.Round(math.Abs(float64(f))*(1<<24)))
	}
	return sign | uint16(exp)<<10 | uint16(man>>13)
}

func FuzzDecode(f *testing.F) {
	// The fuzzer stalls on seeds of many KB, so the seeds use a micro model.
	micro := nn.ViTConfig{PatchSize: 1, InChans: 1, EmbedDim: 2, Depth: 1, Heads: 1, MLPHidden: 2,
		FFN: nn.FFNSwiGLU, Registers: 1, PosGrid: 1, LayerScale: true, QKVBias: true, LNEps: 1e-6}
	for _, training := range []bool{false, true} {
		c := tinyCheckpoint(training)
		c.Config = micro
		c.Weights = randomWeights(micro, 1)
		if training {
			c.Training.Groups["student"] = map[string]Tensor{"x": {Shape: []int{2}, Data: []float32{1, 2}}}
		}
		b, err := Encode(c)
		require.NoError(f, err)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{0x86, 0xa5, 'm', 'a', 'g', 'i', 'c'})
	var le [8]byte
	binary.LittleEndian.PutUint64(le[:], 1<<40)
	f.Add(le[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to something that decodes the same.
		out, err := Encode(c)
		require.NoError(t, err)
		c2, err := Decode(out)
		require.NoError(t, err)
		require.Equal(t, len(c.Weights), len(c2.Weights))
	})
}
