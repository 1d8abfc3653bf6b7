//go:build !js

package data

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// grayPNG is a 16x16 PNG of value v.
func grayPNG(t *testing.T, v uint8) []byte {
	g := image.NewGray(image.Rect(0, 0, 16, 16))
	fill(g, g.Rect, color.Gray{v})
	return encodePNG(t, g)
}

func rel(t *testing.T, root string, paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		r, err := filepath.Rel(root, p)
		require.NoError(t, err)
		out[i] = filepath.ToSlash(r)
	}
	return out
}

func TestScanFolder(t *testing.T) {
	root := t.TempDir()
	png := grayPNG(t, 1)
	for _, name := range []string{
		"b/x.JPG", "a/y.png", "a/sub/z.jpeg", "a/w.Webp", "top.png", "a-b/q.gif",
		"a/notes.txt", ".hidden/h.png", "a/._y.png", "c/readme.md",
	} {
		writeFile(t, filepath.Join(root, name), png)
	}
	require.NoError(t, os.Symlink(filepath.Join(root, "a"), filepath.Join(root, "a", "sub", "loop"))) // a cycle
	require.NoError(t, os.Symlink(filepath.Join(root, "b"), filepath.Join(root, "linked")))

	f, err := ScanFolder(root)
	require.NoError(t, err)
	assert.Equal(t, []string{
		"top.png", "a/w.Webp", "a/y.png", "a-b/q.gif", "a/sub/z.jpeg", "b/x.JPG", "linked/x.JPG",
	}, rel(t, root, f.Paths))
	assert.Nil(t, f.Labels)
	assert.Equal(t, -1, f.Label(0))

	f, err = ScanImageFolder(root)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "a-b", "b", "c", "linked"}, f.Classes)
	assert.Equal(t, []string{"a/w.Webp", "a/y.png", "a/sub/z.jpeg", "a-b/q.gif", "b/x.JPG", "linked/x.JPG"}, rel(t, root, f.Paths))
	assert.Equal(t, []int{0, 0, 0, 1, 2, 4}, f.Labels)
	m, err := f.Load(1)
	require.NoError(t, err)
	assert.Equal(t, 16, m.W)

	_, err = ScanFolder(filepath.Join(root, "nope"))
	assert.ErrorContains(t, err, "scan: lstat "+filepath.Join(root, "nope"))
	_, err = ScanImageFolder(filepath.Join(root, "c"))
	assert.ErrorContains(t, err, "no class directories")
}

func TestReadList(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	writeFile(t, list, []byte("# comment\nimgs/a.png\t3\r\n\n/abs/b.jpg\nc.png\t0\n"))
	f, err := ReadList(list)
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, "imgs/a.png"), "/abs/b.jpg", filepath.Join(dir, "c.png")}, f.Paths)
	assert.Equal(t, []int{3, -1, 0}, f.Labels)

	writeFile(t, list, []byte("a.png\nb.png\n"))
	f, err = ReadList(list)
	require.NoError(t, err)
	assert.Nil(t, f.Labels)
	assert.Equal(t, 2, f.Len())

	writeFile(t, list, []byte("a.png\t1\nb.png\tcat\n"))
	_, err = ReadList(list)
	assert.EqualError(t, err, list+`:2: label "cat" is not a non-negative integer`)

	// cmd/curate's manifest.jsonl.
	manifest := filepath.Join(dir, "manifest.jsonl")
	writeFile(t, manifest, []byte(`{"path":"pool/x.jpg","source":"web","reason":"retrieved","similarity":0.7,"cluster":3}
{"path":"/abs/y.png","reason":"curated","label":2}
`))
	f, err = ReadList(manifest)
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, "pool/x.jpg"), "/abs/y.png"}, f.Paths)
	assert.Equal(t, []int{-1, 2}, f.Labels)
	writeFile(t, manifest, []byte(`{"file":"x.jpg"}`+"\n"))
	_, err = ReadList(manifest)
	assert.ErrorContains(t, err, manifest+`:1: want a JSON object with a "path"`)
}

// memData is an in-memory Dataset: image i is a 1x1 of value i, unless
// bad[i]; load can block or count.
type memData struct {
	n       int
	bad     map[int]string
	gate    chan struct{} // when non-nil, Load of i >= free waits until it is closed
	free    int
	started atomic.Int64
	active  atomic.Int64
}

func (d *memData) Len() int          { return d.n }
func (d *memData) Path(i int) string { return fmt.Sprintf("img%03d", i) }
func (d *memData) Label(i int) int   { return i % 3 }
func (d *memData) Load(i int) (*RGB, error) {
	d.started.Add(1)
	d.active.Add(1)
	defer d.active.Add(-1)
	if d.gate != nil && i >= d.free {
		<-d.gate
	}
	switch d.bad[i] {
	case "":
		return &RGB{H: 1, W: 1, Pix: []uint8{uint8(i), 0, 0}}, nil
	case "panic":
		panic("boom")
	case "plain":
		return nil, errors.New("plain failure")
	}
	return nil, &ImageError{d.Path(i), Corrupt, d.bad[i], nil}
}

func collect(t *testing.T, l *Loader, order []int) [][]int {
	var out [][]int
	for b, err := range l.Batches(context.Background(), order) {
		require.NoError(t, err)
		require.Len(t, b.Images, len(b.Indices))
		for k, i := range b.Indices {
			assert.Equal(t, uint8(i), b.Images[k].Pix[0], "image matches its index")
			assert.Equal(t, i%3, b.Labels[k])
		}
		out = append(out, b.Indices)
	}
	return out
}

func TestLoaderOrderAndRejects(t *testing.T) {
	d := &memData{n: 23, bad: map[int]string{2: "bad header", 7: "panic", 8: "plain", 20: "bad pixels"}}
	l := &Loader{Data: d, BatchSize: 5, Workers: 3}
	got := collect(t, l, nil)
	// Bad files are skipped and the next good ones fill the batch.
	assert.Equal(t, [][]int{{0, 1, 3, 4, 5}, {6, 9, 10, 11, 12}, {13, 14, 15, 16, 17}, {18, 19, 21, 22}}, got)
	assert.Equal(t, []Reject{
		{"img002", Corrupt, "bad header"},
		{"img007", Corrupt, "decoder panic: boom"},
		{"img008", Other, "plain failure"},
		{"img020", Corrupt, "bad pixels"},
	}, l.Rejects.List())
	assert.Equal(t, map[Problem]int{Corrupt: 3, Other: 1}, l.Rejects.Counts())

	// A second epoch in another order: same rejects, recorded once, and
	// not decoded again.
	before := d.started.Load()
	order := Permutation(d.n, 7, 1)
	l.DropLast = true
	got = collect(t, l, order)
	assert.Equal(t, int64(d.n-4), d.started.Load()-before)
	var want []int
	for _, i := range order {
		if d.bad[i] == "" {
			want = append(want, i)
		}
	}
	assert.Equal(t, [][]int{want[0:5], want[5:10], want[10:15]}, got, "order kept, last short batch dropped")
	assert.Equal(t, 4, l.Rejects.Len())

	// The rejects file: one JSON object per line.
	path := filepath.Join(t.TempDir(), "rejects.jsonl")
	require.NoError(t, l.Rejects.WriteFile(path))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var lines []Reject
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Reject
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
		lines = append(lines, r)
	}
	assert.Equal(t, l.Rejects.List(), lines)
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(raw), `{"path":"img002","problem":"corrupt","reason":"bad header"}`+"\n"), string(raw))
}

// TestLoaderFiles runs the loader over real files, with the bad files of
// TestDecodeErrors mixed in.
func TestLoaderFiles(t *testing.T) {
	root := t.TempDir()
	for i := range 6 {
		writeFile(t, filepath.Join(root, fmt.Sprintf("good%d.png", i)), grayPNG(t, uint8(10*i)))
	}
	writeFile(t, filepath.Join(root, "empty.jpg"), nil)
	writeFile(t, filepath.Join(root, "text.jpg"), []byte("not a jpeg"))
	p := grayPNG(t, 0)
	writeFile(t, filepath.Join(root, "trunc.png"), p[:len(p)/2])
	writeFile(t, filepath.Join(root, "tiny.png"), encodePNG(t, image.NewGray(image.Rect(0, 0, 1, 1))))
	writeFile(t, filepath.Join(root, "bomb.png"), pngHeader(100000, 100000))
	require.NoError(t, os.Symlink(filepath.Join(root, "gone.png"), filepath.Join(root, "broken.png")))

	f, err := ScanFolder(root)
	require.NoError(t, err)
	f.Options.MinSide = 14
	l := &Loader{Data: f, BatchSize: 4, Workers: 2}
	var values []uint8
	for b, err := range l.Batches(context.Background(), nil) {
		require.NoError(t, err)
		for _, m := range b.Images {
			values = append(values, m.Pix[0])
		}
	}
	assert.Equal(t, []uint8{0, 10, 20, 30, 40, 50}, values)
	problems := map[string]Problem{}
	for _, r := range l.Rejects.List() {
		problems[filepath.Base(r.Path)] = r.Problem
		assert.NotEmpty(t, r.Reason)
	}
	assert.Equal(t, map[string]Problem{
		"bomb.png": TooLarge, "broken.png": Unreadable, "empty.jpg": Empty,
		"text.jpg": NotAnImage, "tiny.png": TooSmall, "trunc.png": Truncated,
	}, problems)
}

func TestLoaderCancelAndBreak(t *testing.T) {
	t.Run("cancel", func(t *testing.T) {
		d := &memData{n: 100, gate: make(chan struct{}), free: 2} // only the first batch loads
		l := &Loader{Data: d, BatchSize: 2, Workers: 3, Ahead: 4}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var batches int
		var last error
		for b, err := range l.Batches(ctx, nil) {
			if err != nil {
				last = err
				break
			}
			batches++
			assert.Equal(t, []int{0, 1}, b.Indices)
			// Workers run ahead while the consumer is busy, but no more
			// than Ahead images beyond those consumed.
			require.Eventually(t, func() bool { return d.active.Load() == 3 }, time.Second, time.Millisecond)
			assert.LessOrEqual(t, d.started.Load(), int64(2+4))
			cancel()
			close(d.gate) // unblock the workers stuck in Load
		}
		assert.Equal(t, 1, batches)
		assert.ErrorIs(t, last, context.Canceled)
		assert.Equal(t, int64(0), d.active.Load(), "workers stopped before Batches returned")
		assert.Equal(t, 0, l.Rejects.Len())
	})
	t.Run("break", func(t *testing.T) {
		d := &memData{n: 1000}
		l := &Loader{Data: d, BatchSize: 10, Workers: 4}
		for b := range l.Batches(context.Background(), nil) {
			assert.Equal(t, 0, b.Indices[0])
			break
		}
		assert.Equal(t, int64(0), d.active.Load())
		assert.Less(t, d.started.Load(), int64(100), "stopped early")
	})
	t.Run("deadline while waiting", func(t *testing.T) {
		d := &memData{n: 10, gate: make(chan struct{})}
		l := &Loader{Data: d, BatchSize: 2, Workers: 2}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // let the stuck workers finish after the deadline
			defer wg.Done()
			<-ctx.Done()
			close(d.gate)
		}()
		var errs []error
		for b, err := range l.Batches(ctx, nil) {
			assert.Nil(t, b)
			errs = append(errs, err)
		}
		wg.Wait()
		require.Len(t, errs, 1)
		assert.ErrorIs(t, errs[0], context.DeadlineExceeded)
	})
}

func TestLoaderBadArguments(t *testing.T) {
	d := &memData{n: 3}
	for _, c := range []struct {
		l     *Loader
		order []int
		msg   string
	}{
		{&Loader{Data: d}, nil, "loader: batch size 0, want > 0"},
		{&Loader{BatchSize: 1}, nil, "loader: no dataset"},
		{&Loader{Data: d, BatchSize: 1}, []int{0, 3}, "loader: order holds index 3, dataset has 3 images"},
	} {
		var errs []error
		for _, err := range c.l.Batches(context.Background(), c.order) {
			errs = append(errs, err)
		}
		require.Len(t, errs, 1)
		assert.EqualError(t, errs[0], c.msg)
	}
}

func TestPermutation(t *testing.T) {
	p := Permutation(10, 1, 0)
	// Pinned: a change here changes every training run's data order.
	assert.Equal(t, []int{7, 6, 1, 3, 2, 4, 8, 9, 0, 5}, p)
	assert.Equal(t, p, Permutation(10, 1, 0))
	assert.NotEqual(t, p, Permutation(10, 1, 1))
	assert.NotEqual(t, p, Permutation(10, 2, 0))
	assert.Empty(t, Permutation(0, 1, 0))
	assert.Equal(t, []int{0}, Permutation(1, 1, 0))

	big := Permutation(1001, 3, 4)
	sorted := slices.Clone(big)
	slices.Sort(sorted)
	assert.Equal(t, identity(1001), sorted)

	// Each of 5 items lands first about equally often over 5000 epochs:
	// expected 1000, binomial sd 28; allow 5 sd.
	var first [5]int
	for e := range 5000 {
		first[Permutation(5, 9, e)[0]]++
	}
	for i, c := range first {
		assert.InDelta(t, 1000, c, 140, "item %d", i)
	}
}
