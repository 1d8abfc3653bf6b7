package ckpt

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// maxPickle bounds data.pkl; a state dict of a ViT-g pickles to about 100 KB.
const maxPickle = 64 << 20

// pthFile is an opened torch.save zip: the unpickled tensor views by
// flattened name, and the zip entries holding their storages.
type pthFile struct {
	tensors map[string]*tensorRef
	entries map[string]*zip.File // storage key -> entry
}

func openPth(r io.ReaderAt, size int64) (*pthFile, error) {
	z, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("pth: not a zip archive (torch.save since PyTorch 1.6 writes one): %w", err)
	}
	// Entries are "<archive>/data.pkl" and "<archive>/data/<key>"; the archive
	// name is the saved file's base name, so find it from data.pkl.
	var pkl *zip.File
	var prefix string
	for _, f := range z.File {
		if dir, base := splitLast(f.Name); base == "data.pkl" && !strings.Contains(dir, "/") {
			if pkl != nil {
				return nil, errors.New("pth: more than one data.pkl")
			}
			pkl, prefix = f, dir
		}
	}
	if pkl == nil {
		return nil, errors.New("pth: no <archive>/data.pkl entry: not a torch.save file")
	}
	p := &pthFile{entries: map[string]*zip.File{}}
	if prefix != "" {
		prefix += "/"
	}
	for _, f := range z.File {
		switch f.Name {
		case prefix + "byteorder":
			b, err := readEntry(f, 16)
			if err != nil {
				return nil, err
			}
			if s := strings.TrimSpace(string(b)); s != "little" {
				return nil, fmt.Errorf("pth: byte order %q: only little-endian files are supported", s)
			}
		default:
			if key, ok := strings.CutPrefix(f.Name, prefix+"data/"); ok {
				p.entries[key] = f
			}
		}
	}
	pb, err := readEntry(pkl, maxPickle)
	if err != nil {
		return nil, err
	}
	root, err := unpickle(pb)
	if err != nil {
		return nil, fmt.Errorf("pth: %s: %w", pkl.Name, err)
	}
	if _, ok := root.(*pyDict); !ok {
		return nil, fmt.Errorf("pth: the file holds a %T, not a dict of tensors", root)
	}
	// Every value in a legitimate pickle costs at least one opcode byte.
	if p.tensors, err = flattenTensors(root, len(pb)+1); err != nil {
		return nil, fmt.Errorf("pth: %w", err)
	}
	return p, nil
}

func splitLast(name string) (dir, base string) {
	i := strings.LastIndex(name, "/")
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

// readEntry reads a whole zip entry after checking its declared size (the
// zip reader fails if the data runs past it).
func readEntry(f *zip.File, max uint64) ([]byte, error) {
	if f.UncompressedSize64 > max {
		return nil, fmt.Errorf("pth: entry %s claims %d bytes, more than %d", f.Name, f.UncompressedSize64, max)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("pth: %s: %w", f.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(f.UncompressedSize64)+1))
	if err == nil && uint64(len(b)) != f.UncompressedSize64 {
		err = fmt.Errorf("holds %d bytes, its header says %d", len(b), f.UncompressedSize64)
	}
	if err != nil {
		return nil, fmt.Errorf("pth: %s: %w", f.Name, err)
	}
	return b, nil
}

// load gathers the view t into a contiguous float32 tensor, reading its
// storage (cached by key: views often share one).
// storageCache holds decoded storages by key; one whole-storage tensor may
// take a storage's slice itself, later views copy.
type storageCache struct {
	data      map[string][]float32
	handedOut map[string]bool
}

func newStorageCache() *storageCache {
	return &storageCache{data: map[string][]float32{}, handedOut: map[string]bool{}}
}

func (p *pthFile) load(name string, t *tensorRef, cache *storageCache) (Tensor, error) {
	s := t.storage
	dt := dtype(s.dtype)
	if dt.size() == 0 {
		return Tensor{}, fmt.Errorf("pth: tensor %q has element type %s; only float32, float16 and bfloat16 are supported", name, s.dtype)
	}
	data, ok := cache.data[s.key]
	if !ok {
		f := p.entries[s.key]
		if f == nil {
			return Tensor{}, fmt.Errorf("pth: tensor %q: storage %s is missing from the archive", name, s.key)
		}
		want := uint64(s.numel) * uint64(dt.size())
		if f.UncompressedSize64 != want {
			return Tensor{}, fmt.Errorf("pth: tensor %q: storage %s holds %d bytes, %d %s elements take %d",
				name, s.key, f.UncompressedSize64, s.numel, dt, want)
		}
		raw, err := readEntry(f, want)
		if err != nil {
			return Tensor{}, err
		}
		data = make([]float32, s.numel)
		dt.decode(data, raw)
		cache.data[s.key] = data
	}
	// Bound the view by its storage before allocating: expanded (stride 0)
	// views may exceed it, but not without limit.
	if len(t.size) > maxRank {
		return Tensor{}, fmt.Errorf("pth: tensor %q: rank %d is more than %d", name, len(t.size), maxRank)
	}
	out := Tensor{Shape: make([]int, len(t.size))}
	limit := 16*s.numel + 1<<20
	numel, last := int64(1), t.offset
	for i, n := range t.size {
		st := t.stride[i]
		if n < 0 || st < 0 || (n > 1 && st > 0 && n-1 > s.numel/st) {
			return Tensor{}, fmt.Errorf("pth: tensor %q: size %v, stride %v do not fit a storage of %d elements",
				name, t.size, t.stride, s.numel)
		}
		out.Shape[i] = int(n)
		if n > 0 && numel > limit/n {
			return Tensor{}, fmt.Errorf("pth: tensor %q: size %v is too large for a storage of %d elements", name, t.size, s.numel)
		}
		numel *= n
		if n > 0 {
			last += (n - 1) * st
		}
	}
	if t.offset < 0 || (numel > 0 && last >= s.numel) {
		return Tensor{}, fmt.Errorf("pth: tensor %q: view (offset %d, size %v, stride %v) reaches past its storage of %d elements",
			name, t.offset, t.size, t.stride, s.numel)
	}
	if t.offset == 0 && numel == s.numel && contiguous(t.size, t.stride) && !cache.handedOut[s.key] {
		// The usual case: a parameter owns its storage; hand it over once
		// instead of copying (halves peak memory for a ViT-g).
		cache.handedOut[s.key] = true
		out.Data = data
		return out, nil
	}
	out.Data = make([]float32, numel)
	if numel == 0 {
		return out, nil
	}
	// Walk the view in C order with an odometer over the indices.
	idx := make([]int64, len(t.size))
	src := t.offset
	for i := range out.Data {
		out.Data[i] = data[src]
		for d := len(idx) - 1; d >= 0; d-- {
			idx[d]++
			src += t.stride[d]
			if idx[d] < t.size[d] {
				break
			}
			src -= idx[d] * t.stride[d]
			idx[d] = 0
		}
	}
	return out, nil
}

// contiguous reports whether strides are those of a C-order array.
func contiguous(size, stride []int64) bool {
	want := int64(1)
	for d := len(size) - 1; d >= 0; d-- {
		if size[d] != 1 && stride[d] != want {
			return false
		}
		want *= size[d]
	}
	return true
}

// ReadPth returns every float tensor of a torch.save file under its
// flattened name (nested dicts joined by "."); integer tensors are skipped.
func ReadPth(r io.ReaderAt, size int64) (map[string]Tensor, error) {
	p, err := openPth(r, size)
	if err != nil {
		return nil, err
	}
	out := map[string]Tensor{}
	cache := newStorageCache()
	for name, t := range p.tensors {
		if dtype(t.storage.dtype).size() == 0 {
			continue
		}
		if out[name], err = p.load(name, t, cache); err != nil {
			return nil, err
		}
	}
	return out, nil
}

var chunkedBlock = regexp.MustCompile(`^blocks\.\d+\.(\d+)\.`)

// ImportPth reads official DINOv2 weights from a torch.save file: a hub
// state dict, or a training checkpoint wrapping one (e.g. {"teacher":
// {"backbone.cls_token": ...}}), whose backbone is found by its cls_token
// (the teacher's when there are several). Block-chunked names
// ("blocks.<chunk>.<i>.") become "blocks.<i>.". The config is inferred from
// the shapes.
func ImportPth(r io.ReaderAt, size int64) (*Checkpoint, *ImportInfo, error) {
	p, err := openPth(r, size)
	if err != nil {
		return nil, nil, err
	}
	prefix, err := backbonePrefix(p.tensors)
	if err != nil {
		return nil, nil, fmt.Errorf("pth: %w", err)
	}
	info := &ImportInfo{Format: "pth", Prefix: prefix}
	sd := map[string]Tensor{}
	cache := newStorageCache()
	names := make([]string, 0, len(p.tensors))
	for name := range p.tensors {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		key, ok := strings.CutPrefix(name, prefix)
		if !ok {
			info.Ignored = append(info.Ignored, name)
			continue
		}
		key = chunkedBlock.ReplaceAllString(key, "blocks.$1.")
		if _, dup := sd[key]; dup {
			return nil, nil, fmt.Errorf("pth: two tensors are named %q after renaming", key)
		}
		if sd[key], err = p.load(name, p.tensors[name], cache); err != nil {
			return nil, nil, err
		}
	}
	c, err := fromStateDict(sd)
	if err != nil {
		return nil, nil, fmt.Errorf("pth: %w", err)
	}
	return c, info, nil
}

// backbonePrefix finds the prefix of the backbone's names: the one before
// "cls_token", preferring no prefix, then a teacher's.
func backbonePrefix(ts map[string]*tensorRef) (string, error) {
	var found []string
	for name := range ts {
		if name == "cls_token" {
			return "", nil
		}
		if p, ok := strings.CutSuffix(name, ".cls_token"); ok {
			found = append(found, p+".")
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("no cls_token tensor: not a DINOv2 ViT (has %s)", someNames(ts))
	}
	sort.Slice(found, func(i, j int) bool {
		ti, tj := strings.Contains(found[i], "teacher"), strings.Contains(found[j], "teacher")
		if ti != tj {
			return ti
		}
		return found[i] < found[j]
	})
	return found[0], nil
}

// someNames lists a few keys for error messages.
func someNames[V any](m map[string]V) string {
	names := sortedKeys(m)
	if len(names) > 5 {
		names = append(names[:5], fmt.Sprintf("... %d in all", len(m)))
	}
	return strings.Join(names, ", ")
}
