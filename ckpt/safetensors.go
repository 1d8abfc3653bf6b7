package ckpt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// maxSafetensorsHeader bounds the JSON header (the format's own limit).
const maxSafetensorsHeader = 100 << 20

var safetensorsTypes = map[string]dtype{"F32": f32, "F16": f16, "BF16": bf16}

// ReadSafetensors returns every tensor of a safetensors file under its own
// name. The file is an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}
// and the data, offsets counting from the end of the header.
func ReadSafetensors(r io.ReaderAt, size int64) (map[string]Tensor, error) {
	var lb [8]byte
	if _, err := r.ReadAt(lb[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: reading the header length: %w", err)
	}
	hlen := binary.LittleEndian.Uint64(lb[:])
	if hlen > maxSafetensorsHeader || int64(hlen) > size-8 {
		return nil, fmt.Errorf("safetensors: header of %d bytes in a file of %d", hlen, size)
	}
	hb := make([]byte, hlen)
	if _, err := r.ReadAt(hb, 8); err != nil {
		return nil, fmt.Errorf("safetensors: reading the header: %w", err)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(hb, &header); err != nil {
		return nil, fmt.Errorf("safetensors: header: %w", err)
	}
	base := 8 + int64(hlen)
	dataLen := size - base
	out := map[string]Tensor{}
	for _, name := range sortedKeys(header) {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType   string  `json:"dtype"`
			Shape   []int64 `json:"shape"`
			Offsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(header[name], &e); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		dt, ok := safetensorsTypes[e.DType]
		if !ok {
			return nil, fmt.Errorf("safetensors: tensor %q has dtype %s; only F32, F16 and BF16 are supported", name, e.DType)
		}
		if len(e.Offsets) != 2 || e.Offsets[0] < 0 || e.Offsets[0] > e.Offsets[1] || e.Offsets[1] > dataLen {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets %v outside the %d data bytes", name, e.Offsets, dataLen)
		}
		if len(e.Shape) > maxRank {
			return nil, fmt.Errorf("safetensors: tensor %q: rank %d is more than %d", name, len(e.Shape), maxRank)
		}
		t := Tensor{Shape: make([]int, len(e.Shape))}
		numel, n := int64(1), e.Offsets[1]-e.Offsets[0]
		for i, s := range e.Shape {
			if s < 0 || (s > 0 && numel > n/s) {
				return nil, fmt.Errorf("safetensors: tensor %q: shape %v does not fit its %d bytes", name, e.Shape, n)
			}
			numel *= s
			t.Shape[i] = int(s)
		}
		if numel*int64(dt.size()) != n {
			return nil, fmt.Errorf("safetensors: tensor %q: %d bytes, but shape %v of %s takes %d",
				name, n, e.Shape, e.DType, numel*int64(dt.size()))
		}
		raw := make([]byte, n)
		if _, err := r.ReadAt(raw, base+e.Offsets[0]); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		t.Data = make([]float32, numel)
		dt.decode(t.Data, raw)
		out[name] = t
	}
	return out, nil
}

var (
	hfLayer = regexp.MustCompile(`^encoder\.layer\.(\d+)\.(.+)$`)
	hfQKV   = regexp.MustCompile(`^attention\.attention\.(query|key|value)\.(weight|bias)$`)
)

// hfEmbeddings and hfBlock rename Hugging Face Dinov2Model names (and those
// of Dinov2WithRegistersModel, which are the same) to official ones.
var (
	hfEmbeddings = map[string]string{
		"embeddings.cls_token":                          "cls_token",
		"embeddings.mask_token":                         "mask_token",
		"embeddings.position_embeddings":                "pos_embed",
		"embeddings.register_tokens":                    "register_tokens",
		"embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
		"embeddings.patch_embeddings.projection.bias":   "patch_embed.proj.bias",
		"layernorm.weight":                              "norm.weight",
		"layernorm.bias":                                "norm.bias",
	}
	hfBlock = map[string]string{
		"norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
		"norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
		"attention.output.dense.weight": "attn.proj.weight", "attention.output.dense.bias": "attn.proj.bias",
		"layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
		"mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
		"mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
		"mlp.weights_in.weight": "mlp.w12.weight", "mlp.weights_in.bias": "mlp.w12.bias",
		"mlp.weights_out.weight": "mlp.w3.weight", "mlp.weights_out.bias": "mlp.w3.bias",
	}
)

// ImportSafetensors reads DINOv2 weights from a safetensors file with
// Hugging Face names (Dinov2Model, Dinov2WithRegistersModel; a "dinov2."
// prefix, as in Dinov2ForImageClassification, is stripped and its classifier
// ignored) or with official names. Hugging Face's split query/key/value are
// fused into qkv (q, k, v stacked along the output dimension).
func ImportSafetensors(r io.ReaderAt, size int64) (*Checkpoint, *ImportInfo, error) {
	ts, err := ReadSafetensors(r, size)
	if err != nil {
		return nil, nil, err
	}
	info := &ImportInfo{Format: "safetensors"}
	sd, err := renameHF(ts, info)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	c, err := fromStateDict(sd)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	return c, info, nil
}

func renameHF(ts map[string]Tensor, info *ImportInfo) (map[string]Tensor, error) {
	if _, official := ts["cls_token"]; official {
		return ts, nil
	}
	if _, ok := ts["dinov2.embeddings.cls_token"]; ok {
		info.Prefix = "dinov2."
	} else if _, ok := ts["embeddings.cls_token"]; !ok {
		return nil, fmt.Errorf("no embeddings.cls_token: not a Hugging Face Dinov2Model (has %s)", someNames(ts))
	}
	sd := map[string]Tensor{}
	qkv := map[string][3]*Tensor{} // "blocks.i.attn.qkv.weight" -> q, k, v
	for _, name := range sortedKeys(ts) {
		t := ts[name]
		key, ok := strings.CutPrefix(name, info.Prefix)
		if !ok {
			if info.Prefix != "" && strings.HasPrefix(name, "classifier.") {
				info.Ignored = append(info.Ignored, name)
				continue
			}
			return nil, fmt.Errorf("unexpected tensor %q: not a Dinov2Model parameter", name)
		}
		var official string
		if o, ok := hfEmbeddings[key]; ok {
			official = o
		} else if m := hfLayer.FindStringSubmatch(key); m != nil {
			if q := hfQKV.FindStringSubmatch(m[2]); q != nil {
				k := fmt.Sprintf("blocks.%s.attn.qkv.%s", m[1], q[2])
				parts := qkv[k]
				parts[slices.Index([]string{"query", "key", "value"}, q[1])] = &t
				qkv[k] = parts
				continue
			}
			o, ok := hfBlock[m[2]]
			if !ok {
				return nil, fmt.Errorf("unexpected tensor %q: not a Dinov2Model parameter", name)
			}
			official = fmt.Sprintf("blocks.%s.%s", m[1], o)
		} else {
			return nil, fmt.Errorf("unexpected tensor %q: not a Dinov2Model parameter", name)
		}
		sd[official] = t
	}
	keys := make([]string, 0, len(qkv))
	for k := range qkv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fused, err := fuseQKV(k, qkv[k])
		if err != nil {
			return nil, err
		}
		sd[k] = fused
	}
	return sd, nil
}

// fuseQKV stacks q, k and v ([D, D] weights or [D] biases) into [3D, D] or [3D].
func fuseQKV(name string, parts [3]*Tensor) (Tensor, error) {
	for i, p := range parts {
		if p == nil {
			return Tensor{}, fmt.Errorf("%s: the %s part is missing", name, []string{"query", "key", "value"}[i])
		}
		if !slices.Equal(p.Shape, parts[0].Shape) || len(p.Shape) == 0 {
			return Tensor{}, fmt.Errorf("%s: query %v, key %v, value %v differ", name, parts[0].Shape, parts[1].Shape, parts[2].Shape)
		}
	}
	shape := slices.Clone(parts[0].Shape)
	shape[0] *= 3
	out := Tensor{Shape: shape}
	for _, p := range parts {
		out.Data = append(out.Data, p.Data...)
	}
	if len(out.Data) != out.Numel() {
		return Tensor{}, errors.New(name + ": inconsistent data")
	}
	return out, nil
}
