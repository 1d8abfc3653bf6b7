package ckpt

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/nn"
)

func importFile(t *testing.T, path string) (*Checkpoint, *ImportInfo, error) {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return Import(bytes.NewReader(b), int64(len(b)))
}

// The fixtures of nn/testdata/vit were written by scripts/reference/dinov2_ref.py:
// the same random weights through torch.save (official names) and as
// safetensors (Hugging Face names, q/k/v split). Both must import to the
// same checkpoint, with the config the script used.
func TestImportReferenceFixtures(t *testing.T) {
	cases := []struct {
		name      string
		registers int
	}{
		{"vits14_d2", 0},      // .pth in float32, .safetensors in float16 (values exact in all three)
		{"vits14_d2_reg4", 4}, // .pth in float16, .safetensors in bfloat16
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join("..", "nn", "testdata", "vit")
			pth, pinfo, err := importFile(t, filepath.Join(dir, c.name+".pth"))
			require.NoError(t, err)
			st, sinfo, err := importFile(t, filepath.Join(dir, c.name+".safetensors"))
			require.NoError(t, err)
			require.Equal(t, "pth", pinfo.Format)
			require.Equal(t, "safetensors", sinfo.Format)
			require.Empty(t, pinfo.Ignored)

			want := nn.ViTConfig{PatchSize: 14, InChans: 3, EmbedDim: 128, Depth: 2, Heads: 2, MLPHidden: 512,
				FFN: nn.FFNMLP, Registers: c.registers, PosGrid: 37, LayerScale: true, QKVBias: true, LNEps: 1e-6}
			want.SetHubInterpolation()
			require.Equal(t, want, pth.Config)
			require.Equal(t, want, st.Config)
			require.Equal(t, len(want.ParamShapes()), len(pth.Weights))
			for _, p := range want.ParamShapes() {
				require.Equal(t, pth.Weights[p.Name], st.Weights[p.Name], p.Name)
			}
			// LayerScale gammas are random in (0.1, 1), not the 1e-5 init.
			for _, v := range pth.Weights["blocks.1.ls2.gamma"].Data {
				require.True(t, v > 0.09 && v < 1.01, "gamma %v", v)
			}

			// And through the checkpoint format.
			b, err := Encode(pth)
			require.NoError(t, err)
			back, err := Decode(b)
			require.NoError(t, err)
			require.Equal(t, pth.Weights, back.Weights)
		})
	}
}

func TestReadPthViews(t *testing.T) {
	b, err := os.ReadFile("testdata/views.pth")
	require.NoError(t, err)
	ts, err := ReadPth(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	names := []string{"slice", "transposed", "expanded", "half", "bfloat16", "scalar", "param", "tied_a", "tied_b"}
	require.Len(t, ts, 2*len(names))
	for _, n := range names {
		require.Equal(t, ts[n+".expect"], ts[n], n)
	}
	require.Equal(t, []int{2, 3}, ts["slice"].Shape)
	require.Equal(t, []float32{0.75, 1, 1.25, 1.5, 1.75, 2}, ts["slice"].Data)
	require.Equal(t, []int{}, ts["scalar"].Shape)
	require.Equal(t, []float32{3.25}, ts["scalar"].Data)
	// Tied tensors share a storage in the file but not in memory.
	ts["tied_a"].Data[0] = 7
	require.Equal(t, []float32{0.5, 0.25}, ts["tied_b"].Data)
}

func TestImportWrappedTrainingCheckpoint(t *testing.T) {
	wrapped, info, err := importFile(t, "testdata/wrapped_swiglu.pth")
	require.NoError(t, err)
	require.Equal(t, "teacher.backbone.", info.Prefix)
	require.Equal(t, []string{"teacher.dino_head.last_layer.weight"}, info.Ignored)
	plain, _, err := importFile(t, "testdata/plain_swiglu.pth") // a module's state_dict (BUILD of _metadata)
	require.NoError(t, err)
	require.Equal(t, plain, wrapped)
	cfg := plain.Config
	require.Equal(t, nn.FFNSwiGLU, cfg.FFN)
	require.Equal(t, 176, cfg.MLPHidden)
	require.Equal(t, []int{352, 64}, plain.Weights["blocks.1.mlp.w12.weight"].Shape)
	require.Equal(t, []int{64, 176}, plain.Weights["blocks.1.mlp.w3.weight"].Shape)
	require.Equal(t, 1, cfg.Heads)
	require.Equal(t, 2, cfg.PosGrid)
	require.Equal(t, 0, cfg.Registers)
}

func TestImportRefusesForeignPickles(t *testing.T) {
	_, _, err := importFile(t, "testdata/evil.pth")
	require.ErrorContains(t, err, "pth: evil/data.pkl: pickle byte 27: refusing pickle global posix.system: only tensor-rebuilding globals are allowed")
}

// zipOf builds a torch.save-like zip with the given entries.
func zipOf(t *testing.T, entries map[string][]byte) []byte {
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w, err := z.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Store})
		require.NoError(t, err)
		_, err = w.Write(entries[n])
		require.NoError(t, err)
	}
	require.NoError(t, z.Close())
	return buf.Bytes()
}

// pickleTensor pickles {"w": _rebuild_tensor_v2(storage(FloatStorage, "0",
// numel), offset, (size...), (stride...), False, OrderedDict())}.
func pickleTensor(numel, offset byte, size, stride []byte) []byte {
	p := []byte("\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK")
	p = append(p, numel, 't', 'Q', 'K', offset, '(')
	for _, s := range size {
		p = append(p, 'K', s)
	}
	p = append(p, 't', '(')
	for _, s := range stride {
		p = append(p, 'K', s)
	}
	p = append(p, 't')
	p = append(p, []byte("\x89ccollections\nOrderedDict\n)RtRu.")...)
	return p
}

func TestPthBadInput(t *testing.T) {
	f32 := func(vals ...float32) []byte {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b
	}
	good := zipOf(t, map[string][]byte{"a/data.pkl": pickleTensor(4, 0, []byte{2, 2}, []byte{2, 1}), "a/data/0": f32(1, 2, 3, 4)})
	ts, err := ReadPth(bytes.NewReader(good), int64(len(good)))
	require.NoError(t, err)
	require.Equal(t, Tensor{Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}}, ts["w"])

	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"not zip", []byte("hello world, no zip here"), "pth: not a zip archive"},
		{"no pickle", zipOf(t, map[string][]byte{"a/version": []byte("3\n")}), "pth: no <archive>/data.pkl entry"},
		{"big endian", zipOf(t, map[string][]byte{"a/data.pkl": pickleTensor(4, 0, []byte{4}, []byte{1}), "a/byteorder": []byte("big")}),
			`pth: byte order "big": only little-endian files are supported`},
		{"view past storage", zipOf(t, map[string][]byte{"a/data.pkl": pickleTensor(4, 1, []byte{2, 2}, []byte{2, 1}), "a/data/0": f32(1, 2, 3, 4)}),
			`pth: tensor "w": view (offset 1, size [2 2], stride [2 1]) reaches past its storage of 4 elements`},
		{"storage too small", zipOf(t, map[string][]byte{"a/data.pkl": pickleTensor(4, 0, []byte{4}, []byte{1}), "a/data/0": f32(1, 2, 3)}),
			`pth: tensor "w": storage 0 holds 12 bytes, 4 f32 elements take 16`},
		{"storage missing", zipOf(t, map[string][]byte{"a/data.pkl": pickleTensor(4, 0, []byte{4}, []byte{1})}),
			`pth: tensor "w": storage 0 is missing from the archive`},
		{"huge expand", zipOf(t, map[string][]byte{"a/data.pkl": pickleTensor(1, 0, []byte{255, 255, 255, 255}, []byte{0, 0, 0, 0}), "a/data/0": f32(1)}),
			`pth: tensor "w": size [255 255 255 255] is too large for a storage of 1 elements`},
		{"truncated pickle", zipOf(t, map[string][]byte{"a/data.pkl": pickleTensor(4, 0, []byte{4}, []byte{1})[:40]}),
			"pth: a/data.pkl: pickle byte 24: unterminated line"},
		{"bad opcode", zipOf(t, map[string][]byte{"a/data.pkl": []byte("\x80\x02}i")}), "pickle byte 4: unsupported pickle opcode 0x69"},
		{"huge string", zipOf(t, map[string][]byte{"a/data.pkl": []byte("\x80\x02X\xff\xff\xff\xff")}), "pickle byte 7: 4294967295 bytes wanted, 0 remain"},
		{"not a dict", zipOf(t, map[string][]byte{"a/data.pkl": []byte("\x80\x02]q\x00.")}), "pth: the file holds a *ckpt.pyList, not a dict of tensors"},
		{"builtin eval", zipOf(t, map[string][]byte{"a/data.pkl": []byte("\x80\x02c__builtin__\neval\n.")}),
			"refusing pickle global __builtin__.eval"},
		{"stack global", zipOf(t, map[string][]byte{"a/data.pkl": []byte("\x80\x04\x8c\x02os\x8c\x06system\x93.")}),
			"refusing pickle global os.system"},
		{"self-containing dict", zipOf(t, map[string][]byte{"a/data.pkl": []byte("\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.")}),
			"pth: pickle holds a container that contains itself"},
		{"shared references", zipOf(t, map[string][]byte{"a/data.pkl": sharedDicts(30)}),
			"pth: pickle holds too many shared references"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadPth(bytes.NewReader(c.in), int64(len(c.in)))
			require.ErrorContains(t, err, c.want)
		})
	}

	// A state dict of another architecture: no cls_token.
	_, _, err = ImportPth(bytes.NewReader(good), int64(len(good)))
	require.ErrorContains(t, err, "pth: no cls_token tensor: not a DINOv2 ViT (has w)")
}

// sharedDicts pickles d[n] with d[i] = {"a": d[i-1], "b": d[i-1]}: 2^n paths
// through n+1 dicts.
func sharedDicts(n int) []byte {
	p := []byte("\x80\x02}q\x00")
	for i := 1; i <= n; i++ {
		p = append(p, '}', 'q', byte(i), '(', 'X', 1, 0, 0, 0, 'a', 'h', byte(i-1), 'X', 1, 0, 0, 0, 'b', 'h', byte(i-1), 'u')
	}
	return append(p, '.')
}

// safetensorsOf writes a safetensors file of f32 tensors (name -> shape; the
// data counts up), with optional dtype overrides and raw header edits.
func safetensorsOf(t *testing.T, shapes map[string][]int, edit func(h map[string]any)) []byte {
	h := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	for _, n := range sortedKeys(shapes) {
		numel := 1
		for _, s := range shapes[n] {
			numel *= s
		}
		start := len(data)
		for i := 0; i < numel; i++ {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(len(data)/4)))
		}
		h[n] = map[string]any{"dtype": "F32", "shape": shapes[n], "data_offsets": []int{start, len(data)}}
	}
	if edit != nil {
		edit(h)
	}
	hb, err := json.Marshal(h)
	require.NoError(t, err)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	return append(append(out, hb...), data...)
}

// hfShapes are the Hugging Face names and shapes of a small Dinov2Model.
func hfShapes() map[string][]int {
	D, H := 64, 256
	s := map[string][]int{
		"embeddings.cls_token": {1, 1, D}, "embeddings.mask_token": {1, D},
		"embeddings.position_embeddings": {1, 5, D}, "embeddings.register_tokens": {1, 2, D},
		"embeddings.patch_embeddings.projection.weight": {D, 3, 14, 14},
		"embeddings.patch_embeddings.projection.bias":   {D},
		"layernorm.weight": {D}, "layernorm.bias": {D},
	}
	for _, n := range []string{"norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attention.output.dense.bias",
		"layer_scale1.lambda1", "layer_scale2.lambda1", "mlp.fc2.bias",
		"attention.attention.query.bias", "attention.attention.key.bias", "attention.attention.value.bias"} {
		s["encoder.layer.0."+n] = []int{D}
	}
	for _, n := range []string{"attention.attention.query.weight", "attention.attention.key.weight",
		"attention.attention.value.weight", "attention.output.dense.weight"} {
		s["encoder.layer.0."+n] = []int{D, D}
	}
	s["encoder.layer.0.mlp.fc1.weight"] = []int{H, D}
	s["encoder.layer.0.mlp.fc1.bias"] = []int{H}
	s["encoder.layer.0.mlp.fc2.weight"] = []int{D, H}
	return s
}

func TestImportSafetensors(t *testing.T) {
	b := safetensorsOf(t, hfShapes(), nil)
	c, info, err := Import(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	require.Equal(t, "safetensors", info.Format)
	require.Equal(t, 2, c.Config.Registers)
	require.Equal(t, 2, c.Config.PosGrid)
	require.Equal(t, 1, c.Config.Depth)
	// q, k, v stack into qkv in that order.
	qkv := c.Weights["blocks.0.attn.qkv.weight"]
	require.Equal(t, []int{192, 64}, qkv.Shape)
	st, err := ReadSafetensors(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	require.Equal(t, st["encoder.layer.0.attention.attention.query.weight"].Data, qkv.Data[:64*64])
	require.Equal(t, st["encoder.layer.0.attention.attention.key.weight"].Data, qkv.Data[64*64:2*64*64])
	require.Equal(t, st["encoder.layer.0.attention.attention.value.weight"].Data, qkv.Data[2*64*64:])

	// A classification model: "dinov2." prefix, classifier ignored.
	prefixed := map[string][]int{"classifier.weight": {10, 128}, "classifier.bias": {10}}
	for n, s := range hfShapes() {
		prefixed["dinov2."+n] = s
	}
	b = safetensorsOf(t, prefixed, nil)
	c2, info, err := ImportSafetensors(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	require.Equal(t, "dinov2.", info.Prefix)
	require.Equal(t, []string{"classifier.bias", "classifier.weight"}, info.Ignored)
	require.Equal(t, c.Config, c2.Config)

	without := func(name string) map[string][]int {
		s := hfShapes()
		delete(s, name)
		return s
	}
	with := func(name string, shape ...int) map[string][]int {
		s := hfShapes()
		s[name] = shape
		return s
	}
	cases := []struct {
		name  string
		in    []byte
		want  string
		whole bool
	}{
		{"huge header", append(binary.LittleEndian.AppendUint64(nil, 1<<40), '{'), "safetensors: header of 1099511627776 bytes in a file of 9", false},
		{"bad json", append(binary.LittleEndian.AppendUint64(nil, 2), '{', '['), "safetensors: header: ", false},
		{"bad dtype", safetensorsOf(t, hfShapes(), func(h map[string]any) {
			h["layernorm.bias"].(map[string]any)["dtype"] = "I64"
		}), `safetensors: tensor "layernorm.bias" has dtype I64; only F32, F16 and BF16 are supported`, false},
		{"offsets past data", safetensorsOf(t, hfShapes(), func(h map[string]any) {
			h["layernorm.bias"].(map[string]any)["data_offsets"] = []int{0, 1 << 30}
		}), `safetensors: tensor "layernorm.bias": data_offsets [0 1073741824] outside the`, false},
		{"shape mismatch bytes", safetensorsOf(t, hfShapes(), func(h map[string]any) {
			h["layernorm.bias"].(map[string]any)["shape"] = []int{65}
		}), `safetensors: tensor "layernorm.bias": 256 bytes, but shape [65] of F32 takes 260`, false},
		{"missing value", safetensorsOf(t, without("encoder.layer.0.attention.attention.value.bias"), nil),
			"safetensors: blocks.0.attn.qkv.bias: the value part is missing", true},
		{"unknown key", safetensorsOf(t, with("pooler.dense.weight", 4, 4), nil),
			`safetensors: unexpected tensor "pooler.dense.weight": not a Dinov2Model parameter`, true},
		{"unknown layer key", safetensorsOf(t, with("encoder.layer.0.attention.attention.rope", 4), nil),
			`safetensors: unexpected tensor "encoder.layer.0.attention.attention.rope"`, true},
		{"mis-shaped", safetensorsOf(t, with("encoder.layer.0.norm2.bias", 63), nil),
			`safetensors: tensor "blocks.0.norm2.bias" has shape [63], config wants [64]`, true},
		{"missing tensor", safetensorsOf(t, without("embeddings.mask_token"), nil),
			`safetensors: missing tensor "mask_token" [1 64]`, true},
		{"other architecture", safetensorsOf(t, map[string][]int{"conv1.weight": {64, 3, 7, 7}, "fc.weight": {10, 64}}, nil),
			"safetensors: no embeddings.cls_token: not a Hugging Face Dinov2Model (has conv1.weight, fc.weight)", true},
		{"not square grid", safetensorsOf(t, with("embeddings.position_embeddings", 1, 6, 64), nil),
			"safetensors: pos_embed has shape [1 6 64]: 5 patch positions are not a square grid", true},
		{"odd width", safetensorsOf(t, with("embeddings.cls_token", 1, 1, 96), nil),
			"safetensors: embed dim 96 is not a multiple of 64: cannot infer the heads", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ImportSafetensors(bytes.NewReader(c.in), int64(len(c.in)))
			require.ErrorContains(t, err, c.want)
		})
	}

	_, _, err = Import(bytes.NewReader([]byte("GIF89a....")), 10)
	require.EqualError(t, err, "import: unknown format (starts with 47 49 46 38 39 61 2e 2e 2e): want a PyTorch .pth (zip) or a .safetensors file")
	enc, err := Encode(tinyCheckpoint(false))
	require.NoError(t, err)
	_, _, err = Import(bytes.NewReader(enc), int64(len(enc)))
	require.ErrorContains(t, err, "already a webdino checkpoint")
}

func FuzzUnpickle(f *testing.F) {
	z, err := zip.OpenReader("testdata/views.pth")
	require.NoError(f, err)
	for _, e := range z.File {
		if e.Name == "views/data.pkl" {
			b, err := readEntry(e, maxPickle)
			require.NoError(f, err)
			f.Add(b[:300])
		}
	}
	z.Close()
	f.Add(pickleTensor(4, 0, []byte{2, 2}, []byte{2, 1}))
	f.Add(sharedDicts(3))
	f.Fuzz(func(t *testing.T, p []byte) {
		v, err := unpickle(p)
		if err == nil {
			flattenTensors(v, len(p)+1)
		}
	})
}
