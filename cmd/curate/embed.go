package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/curate"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/embed"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/npy"
)

const embedUsage = `usage: curate embed --model MODEL.msgpack --out DIR [flags] INPUT...

Embeds images with a webdino checkpoint into DIR, in shards:

  emb-NNNNN.npy   [rows, D] float32: L2-normalised CLS tokens (with
                  --mirror, of the image plus its left-right mirror)
  ids-NNNNN.jsonl one line per row: {"row", "path", "source"}
  done-NNNNN.json written last: {"rows", "next"}, the shard is complete
  rejects.jsonl   files that could not be decoded (skipped)
  source.json     {"source", "inputs", "files", "model", "mirror"}: what
                  the pool is

INPUT is an image file, a folder (scanned recursively, sorted) or, with
--list, a list file (one path per line). The pool's images are the inputs in
order; the row order is the priority of deduplication (the lowest row of a
group of copies is kept), so list preferred sources first.

Resumable: a run into a DIR that holds complete shards of the same inputs
continues after the last one. Ctrl-C closes the current shard (exit status
130); run the same command again to continue.

Flags:
`

// shardMeta is done-NNNNN.json.
type shardMeta struct {
	Rows int `json:"rows"`
	Next int `json:"next"` // dataset index to continue from
}

// idRow is one line of ids-NNNNN.jsonl.
type idRow struct {
	Row    int    `json:"row"`
	Path   string `json:"path"`
	Source string `json:"source"`
}

// sourceInfo is source.json.
type sourceInfo struct {
	Source string   `json:"source"`
	Inputs []string `json:"inputs"`
	Files  int      `json:"files"`
	Model  string   `json:"model"`
	Mirror bool     `json:"mirror,omitempty"` // descriptors of image + mirror image
}

func embedCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("embed", embedUsage, stderr)
	model := fs.String("model", "", "webdino checkpoint `FILE` (msgpack; convert official weights with cmd/convert)")
	out := fs.String("out", "", "output `DIR` (created if missing)")
	source := fs.String("source", "", "source name recorded with every row (default: the base name of DIR)")
	var lists multi
	fs.Var(&lists, "list", "a list `FILE` of image paths (repeatable; read before the INPUTs)")
	shardRows := fs.Int("shard-rows", 65536, "rows per shard file (bounds the memory of the run)")
	var o embed.Options
	fs.IntVar(&o.Batch, "batch", 32, "images per forward pass")
	fs.IntVar(&o.Resize, "resize", 256, "shortest side before the centre crop")
	fs.IntVar(&o.Crop, "crop", 224, "centre crop side (a multiple of the patch size)")
	fs.IntVar(&o.Workers, "workers", 0, "parallel image decoders (0: one per CPU)")
	fs.BoolVar(&o.Mirror, "mirror", false, "flip-invariant descriptors: also embed each image's left-right mirror and store the normalised sum of the two CLS tokens (twice the work; a mirrored copy then gets the same row; use it for dedup)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *model == "":
		return usageErr(stderr, "embed", "--model is required")
	case *out == "":
		return usageErr(stderr, "embed", "--out is required")
	case fs.NArg() == 0 && len(lists) == 0:
		return usageErr(stderr, "embed", "no INPUT images, folders or --list files")
	case *shardRows <= 0 || o.Batch <= 0:
		return usageErr(stderr, "embed", "--shard-rows and --batch must be positive")
	}
	if *source == "" {
		*source = filepath.Base(filepath.Clean(*out))
	}
	files, err := gather(lists, fs.Args())
	if err != nil {
		return err
	}
	if files.Len() == 0 {
		return fmt.Errorf("no images found")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	info := sourceInfo{Source: *source, Inputs: append(append([]string{}, lists...), fs.Args()...), Files: files.Len(), Model: *model, Mirror: o.Mirror}
	shards, next, rows, err := resumeState(*out, info)
	if err != nil {
		return err
	}
	if next >= files.Len() {
		fmt.Fprintf(stdout, "%s: complete, %d rows in %d shards\n", *out, rows, shards)
		return nil
	}
	if next > 0 {
		fmt.Fprintf(stderr, "resuming after %d rows in %d shards (file %d of %d)\n", rows, shards, next, files.Len())
	}
	dev, err := gpu.Open()
	if err != nil {
		return err
	}
	defer dev.Close()
	m, err := loadModel(dev, *model)
	if err != nil {
		return err
	}
	defer m.Release()
	D := m.Cfg.EmbedDim

	rest := &data.Files{Paths: files.Paths[next:], Options: files.Options}
	rejects := &data.Rejects{}
	o.Rejects = rejects
	progress := newProgress(stderr, "embed", files.Len())
	progress.Add(next)
	w := &shardWriter{dir: *out, source: *source, shard: shards, row: rows, limit: *shardRows, d: D}
	counted := 0
	err = embed.Run(ctx, dev, m, rest, o, func(r *embed.Result) error {
		cls := r.Descriptor()
		for k, p := range r.Paths {
			if err := w.add(cls[k*D:(k+1)*D], p, next+r.Indices[k]+1); err != nil {
				return err
			}
		}
		done := r.Indices[len(r.Indices)-1] + 1
		progress.Add(done - counted)
		counted = done
		return nil
	})
	progress.Finish()
	// Close the current shard also on an interruption: the next run
	// continues after it.
	err = errors.Join(err, w.flush())
	if rejects.Len() > 0 {
		if werr := appendRejects(filepath.Join(*out, "rejects.jsonl"), rejects); err == nil {
			err = werr
		}
		fmt.Fprintf(stderr, "rejected %d files (see %s)\n", rejects.Len(), filepath.Join(*out, "rejects.jsonl"))
	}
	fmt.Fprintf(stdout, "%s: %d rows [D=%d] in %d shards\n", *out, w.row, D, w.shard)
	return err
}

// gather lists the pool: list files first, then the inputs.
func gather(lists, inputs []string) (*data.Files, error) {
	all := &data.Files{}
	for _, l := range lists {
		f, err := data.ReadList(l)
		if err != nil {
			return nil, err
		}
		all.Paths = append(all.Paths, f.Paths...)
	}
	for _, in := range inputs {
		fi, err := os.Stat(in)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			all.Paths = append(all.Paths, in)
			continue
		}
		f, err := data.ScanFolder(in)
		if err != nil {
			return nil, err
		}
		all.Paths = append(all.Paths, f.Paths...)
	}
	return all, nil
}

// resumeState checks DIR's source.json against info (writing it when
// new) and returns the complete shards, the next dataset index and rows.
// Files of an unfinished shard are removed.
func resumeState(dir string, info sourceInfo) (shards, next, rows int, err error) {
	path := filepath.Join(dir, "source.json")
	if b, err := os.ReadFile(path); err == nil {
		var old sourceInfo
		if err := json.Unmarshal(b, &old); err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %w", path, err)
		}
		if old.Source != info.Source || old.Files != info.Files || old.Model != info.Model || !slices.Equal(old.Inputs, info.Inputs) {
			return 0, 0, 0, fmt.Errorf("%s holds a pool of other inputs or another model (%s: %d files from %s, model %s); use another --out",
				dir, old.Source, old.Files, strings.Join(old.Inputs, " "), old.Model)
		}
		if old.Mirror != info.Mirror {
			return 0, 0, 0, fmt.Errorf("%s was embedded with mirror %v; resume with the same --mirror or use another --out", dir, old.Mirror)
		}
	} else {
		b, _ := json.MarshalIndent(info, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			return 0, 0, 0, err
		}
	}
	for ; ; shards++ {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("done-%05d.json", shards)))
		if err != nil {
			break
		}
		var m shardMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return 0, 0, 0, fmt.Errorf("shard %d: %w", shards, err)
		}
		rows += m.Rows
		next = m.Next
	}
	for _, f := range []string{"emb-%05d.npy", "ids-%05d.jsonl"} {
		os.Remove(filepath.Join(dir, fmt.Sprintf(f, shards)))
	}
	return shards, next, rows, nil
}

// shardWriter buffers rows and writes a shard when it is full.
type shardWriter struct {
	dir, source string
	shard, row  int
	limit, d    int
	feats       []float32
	ids         []idRow
	next        int
}

func (w *shardWriter) add(feat []float32, path string, next int) error {
	w.feats = append(w.feats, feat...)
	w.ids = append(w.ids, idRow{Row: w.row + len(w.ids), Path: path, Source: w.source})
	w.next = next
	if len(w.ids) >= w.limit {
		return w.flush()
	}
	return nil
}

// flush writes the buffered rows as one complete shard: data, ids, and
// last the done file that marks it complete.
func (w *shardWriter) flush() error {
	if len(w.ids) == 0 {
		return nil
	}
	name := func(f string) string { return filepath.Join(w.dir, fmt.Sprintf(f, w.shard)) }
	if err := npy.WriteFloat32File(name("emb-%05d.npy"), []int{len(w.ids), w.d}, w.feats); err != nil {
		return err
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	for _, r := range w.ids {
		enc.Encode(r)
	}
	if err := os.WriteFile(name("ids-%05d.jsonl"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	meta, _ := json.Marshal(shardMeta{Rows: len(w.ids), Next: w.next})
	if err := os.WriteFile(name("done-%05d.json"), append(meta, '\n'), 0o644); err != nil {
		return err
	}
	w.row += len(w.ids)
	w.shard++
	w.feats, w.ids = w.feats[:0], w.ids[:0]
	return nil
}

func appendRejects(path string, r *data.Rejects) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := r.WriteJSONL(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// newProgress reports on stderr: a live bar on a terminal, plain lines
// elsewhere.
func newProgress(stderr io.Writer, what string, total int) *data.Progress {
	if f, ok := stderr.(*os.File); ok && f == os.Stderr {
		return data.NewProgress(what, total)
	}
	return data.NewPlainProgress(stderr, what, total, data.DefaultInterval)
}

// loadModel reads a webdino checkpoint onto dev.
func loadModel(dev *gpu.Device, path string) (*nn.ViT, error) {
	c, err := ckpt.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	m, err := nn.NewViT(dev, c.Config)
	if err != nil {
		return nil, err
	}
	w := make(map[string][]float32, len(c.Weights))
	for k, t := range c.Weights {
		w[k] = t.Data
	}
	if err := m.SetWeights(w); err != nil {
		m.Release()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// pool is an embedded pool read back: its rows (streamed from the shard
// files) and ids.
type pool struct {
	dir    string
	rows   *curate.Shards
	ids    []idRow
	mirror bool // flip-invariant descriptors (embed --mirror)
}

// sameKind refuses to compare pools whose rows are different descriptors.
func (p *pool) sameKind(q *pool) error { return sameKind(p.dir, p.mirror, q.dir, q.mirror) }

func sameKind(a string, aMirror bool, b string, bMirror bool) error {
	if aMirror != bMirror {
		return fmt.Errorf("%s (mirror %v) and %s (mirror %v) hold different descriptors: embed both with or both without --mirror", a, aMirror, b, bMirror)
	}
	return nil
}

// openPool opens the complete shards of embed output directories as one
// pool, in order.
func openPool(dirs ...string) (*pool, error) {
	var paths []string
	p := &pool{dir: strings.Join(dirs, ",")}
	for d, dir := range dirs {
		var info sourceInfo
		if b, err := os.ReadFile(filepath.Join(dir, "source.json")); err == nil {
			if err := json.Unmarshal(b, &info); err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "source.json"), err)
			}
		}
		if d > 0 {
			if err := sameKind(dirs[0], p.mirror, dir, info.Mirror); err != nil {
				return nil, err
			}
		}
		p.mirror = info.Mirror
		before := len(paths)
		for s := 0; ; s++ {
			if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("done-%05d.json", s))); err != nil {
				break
			}
			paths = append(paths, filepath.Join(dir, fmt.Sprintf("emb-%05d.npy", s)))
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("ids-%05d.jsonl", s)))
			if err != nil {
				return nil, err
			}
			dec := json.NewDecoder(strings.NewReader(string(b)))
			for dec.More() {
				var r idRow
				if err := dec.Decode(&r); err != nil {
					return nil, fmt.Errorf("%s shard %d ids: %w", dir, s, err)
				}
				p.ids = append(p.ids, r)
			}
		}
		if len(paths) == before {
			return nil, fmt.Errorf("%s holds no complete embedding shards (run curate embed first)", dir)
		}
	}
	var err error
	if p.rows, err = curate.OpenShards(paths); err != nil {
		return nil, err
	}
	if p.rows.Len() != len(p.ids) {
		p.rows.Close()
		return nil, fmt.Errorf("%s: %d embedding rows but %d ids", p.dir, p.rows.Len(), len(p.ids))
	}
	return p, nil
}
