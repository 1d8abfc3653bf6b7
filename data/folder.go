package data

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Dataset is an indexed set of images with optional integer labels.
type Dataset interface {
	Len() int
	Path(i int) string // identifies image i in errors and rejects
	Label(i int) int   // -1 when unlabelled
	Load(i int) (*RGB, error)
}

// ImageExtensions are the file name extensions (lower case) that folder
// scans pick up, compared case-insensitively.
var ImageExtensions = []string{".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}

// Files is a Dataset of image files.
type Files struct {
	Paths   []string
	Labels  []int         // per path, -1 where unknown; nil when unlabelled
	Classes []string      // class names by label (ImageFolder layout), else nil
	Skipped []Reject      // directories the scan could not read
	Options DecodeOptions // limits applied by Load
}

func (f *Files) Len() int                 { return len(f.Paths) }
func (f *Files) Path(i int) string        { return f.Paths[i] }
func (f *Files) Load(i int) (*RGB, error) { return LoadImage(f.Paths[i], f.Options) }

func (f *Files) Label(i int) int {
	if f.Labels == nil {
		return -1
	}
	return f.Labels[i]
}

// ScanFolder finds every image below root, recursively, sorted by directory
// then file name (the order of torchvision's ImageFolder). Symbolic links
// are followed; hidden entries (names starting with ".", such as macOS
// "._x.jpg" resource forks) are skipped.
func ScanFolder(root string) (*Files, error) {
	f := &Files{}
	if err := f.scan(root, nil); err != nil {
		return nil, err
	}
	sortPaths(f.Paths)
	return f, nil
}

// ScanImageFolder reads the ImageFolder layout root/<class>/**/<image>:
// labels index the class directory names in sorted order; files directly
// in root are ignored. A class without images keeps its label index.
func ScanImageFolder(root string) (*Files, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("image folder: %w", err)
	}
	f := &Files{}
	for _, e := range entries {
		if hidden(e.Name()) {
			continue
		}
		if fi, err := os.Stat(filepath.Join(root, e.Name())); err == nil && fi.IsDir() {
			f.Classes = append(f.Classes, e.Name()) // ReadDir sorts by name
		}
	}
	if len(f.Classes) == 0 {
		return nil, fmt.Errorf("image folder %s: no class directories", root)
	}
	for label, class := range f.Classes {
		start := len(f.Paths)
		if err := f.scan(filepath.Join(root, class), nil); err != nil {
			return nil, err
		}
		sortPaths(f.Paths[start:])
		for range f.Paths[start:] {
			f.Labels = append(f.Labels, label)
		}
	}
	return f, nil
}

// ReadList reads a list file: one image path per line, optionally followed
// by a tab and an integer label, or one JSON object per line with "path"
// (and optionally "label"), as cmd/curate's manifest.jsonl. Relative paths
// are relative to the list file's directory; blank lines and lines starting
// with # are skipped. The file's order is kept. Labels is nil when no line
// has a label, else lines without one get -1.
func ReadList(path string) (*Files, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	defer file.Close()
	f, labelled := &Files{}, false
	dir := filepath.Dir(path)
	sc := bufio.NewScanner(file)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, labelText, hasLabel := strings.Cut(text, "\t")
		label := -1
		if strings.HasPrefix(strings.TrimSpace(text), "{") {
			var row struct {
				Path  string `json:"path"`
				Label *int   `json:"label"`
			}
			if err := json.Unmarshal([]byte(text), &row); err != nil || row.Path == "" {
				return nil, fmt.Errorf("%s:%d: want a JSON object with a \"path\" (%v)", path, line, err)
			}
			name, hasLabel = row.Path, false
			if row.Label != nil && *row.Label >= 0 {
				label, labelled = *row.Label, true
			}
		}
		if hasLabel {
			label, err = strconv.Atoi(strings.TrimSpace(labelText))
			if err != nil || label < 0 {
				return nil, fmt.Errorf("%s:%d: label %q is not a non-negative integer", path, line, labelText)
			}
			labelled = true
		}
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		f.Paths = append(f.Paths, name)
		f.Labels = append(f.Labels, label)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", path, err)
	}
	if !labelled {
		f.Labels = nil
	}
	return f, nil
}

// scan appends the images below dir to f.Paths. seen holds the resolved
// directories on the current path, to stop symbolic link cycles.
func (f *Files) scan(dir string, seen []string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	entries, err2 := os.ReadDir(dir)
	if err == nil {
		err = err2
	}
	if err != nil {
		if seen == nil {
			return fmt.Errorf("scan: %w", err)
		}
		f.Skipped = append(f.Skipped, Reject{dir, Unreadable, err.Error()})
		return nil
	}
	if slices.Contains(seen, real) {
		return nil
	}
	seen = append(seen, real)
	for _, e := range entries {
		name := e.Name()
		if hidden(name) {
			continue
		}
		path := filepath.Join(dir, name)
		isDir := e.IsDir()
		if e.Type()&os.ModeSymlink != 0 {
			fi, err := os.Stat(path)
			isDir = err == nil && fi.IsDir() // a broken link to an image is kept: Load reports it
		}
		if isDir {
			if err := f.scan(path, seen); err != nil {
				return err
			}
		} else if slices.Contains(ImageExtensions, strings.ToLower(filepath.Ext(name))) {
			f.Paths = append(f.Paths, path)
		}
	}
	return nil
}

func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// sortPaths sorts by directory, then by file name, so that the files of a
// directory come before those of its subdirectories.
func sortPaths(p []string) {
	slices.SortFunc(p, func(a, b string) int {
		if c := strings.Compare(filepath.Dir(a), filepath.Dir(b)); c != 0 {
			return c
		}
		return strings.Compare(filepath.Base(a), filepath.Base(b))
	})
}

// Reject records a file that could not be used.
type Reject struct {
	Path    string  `json:"path"`
	Problem Problem `json:"problem"`
	Reason  string  `json:"reason"`
}

// Other is the Problem of a load error that is not an ImageError (from a
// Dataset other than Files).
const Other Problem = "other"

// Rejects collects bad files, each path once, safely from many goroutines.
// The zero value is ready to use.
type Rejects struct {
	mu   sync.Mutex
	list []Reject
	seen map[string]bool
}

// Add records path with the error that rejected it, unless already recorded.
func (r *Rejects) Add(path string, err error) {
	rej := Reject{Path: path, Problem: Other, Reason: err.Error()}
	var ie *ImageError
	if errors.As(err, &ie) {
		rej.Problem, rej.Reason = ie.Problem, ie.Detail
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	if !r.seen[path] {
		r.seen[path] = true
		r.list = append(r.list, rej)
	}
}

// Has reports whether path was rejected.
func (r *Rejects) Has(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[path]
}

// List returns the rejects in the order they were recorded.
func (r *Rejects) List() []Reject {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.list)
}

// Len returns the number of rejected files.
func (r *Rejects) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.list)
}

// Counts returns the number of rejects per Problem.
func (r *Rejects) Counts() map[Problem]int {
	c := map[Problem]int{}
	for _, rej := range r.List() {
		c[rej.Problem]++
	}
	return c
}

// WriteJSONL writes one JSON object per reject and line:
// {"path":...,"problem":...,"reason":...}.
func (r *Rejects) WriteJSONL(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, rej := range r.List() {
		if err := enc.Encode(rej); err != nil {
			return err
		}
	}
	return nil
}

// WriteFile writes the rejects as JSON lines to path.
func (r *Rejects) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	err = r.WriteJSONL(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}

// Batch is a run of decoded images in dataset order.
type Batch struct {
	Indices []int // dataset indices
	Images  []*RGB
	Labels  []int
}

// Loader decodes a Dataset in parallel and yields batches in order. A file
// that fails to load is skipped and recorded in Rejects; batches are filled
// with the next good images, so all but the last have BatchSize images and
// their content does not depend on worker timing.
type Loader struct {
	Data      Dataset
	BatchSize int
	Workers   int      // parallel decoders; 0 means GOMAXPROCS
	Ahead     int      // images decoded ahead of the consumer; 0 means 2*BatchSize
	DropLast  bool     // drop a final batch shorter than BatchSize
	Rejects   *Rejects // bad files; created by Batches when nil
}

// Batches visits the dataset indices in order (nil means 0..Len-1; pass
// Permutation for a training epoch). Decoding continues in the background,
// at most Ahead images ahead, while the loop body runs. Breaking out of the
// loop stops the workers. When ctx ends, the sequence yields ctx.Err() and
// stops. Files already in Rejects are skipped without decoding again.
func (l *Loader) Batches(ctx context.Context, order []int) iter.Seq2[*Batch, error] {
	return func(yield func(*Batch, error) bool) {
		if err := l.check(order); err != nil {
			yield(nil, err)
			return
		}
		if order == nil {
			order = identity(l.Data.Len())
		}
		if l.Rejects == nil {
			l.Rejects = &Rejects{}
		}
		workers := l.Workers
		if workers <= 0 {
			workers = runtime.GOMAXPROCS(0)
		}
		ahead := l.Ahead
		if ahead <= 0 {
			ahead = 2 * l.BatchSize
		}

		type result struct {
			img *RGB
			err error
		}
		type job struct {
			index int
			out   chan result // capacity 1: a worker never blocks on it
		}
		// The consumer checks ctx itself: a derived context learns of the
		// parent's end a moment later.
		stop, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		// pending holds the jobs in order; its capacity bounds the
		// look-ahead. The feeder queues each job there before handing it to
		// a worker, so the consumer waits only on jobs already handed out.
		pending, jobs := make(chan job, ahead), make(chan job)
		wg.Add(1 + workers)
		go func() {
			defer wg.Done()
			defer close(pending)
			defer close(jobs)
			for _, i := range order {
				j := job{i, make(chan result, 1)}
				select {
				case pending <- j:
				case <-stop.Done():
					return
				}
				select {
				case jobs <- j:
				case <-stop.Done():
					return
				}
			}
		}()
		for range workers {
			go func() {
				defer wg.Done()
				for j := range jobs {
					img, err := l.load(j.index)
					j.out <- result{img, err}
				}
			}()
		}

		b := &Batch{}
		for j := range pending {
			var r result
			select {
			case r = <-j.out:
			case <-ctx.Done():
				yield(nil, ctx.Err())
				return
			}
			if r.err != nil {
				if r.err != errAlreadyRejected {
					l.Rejects.Add(l.Data.Path(j.index), r.err)
				}
				continue
			}
			b.Indices = append(b.Indices, j.index)
			b.Images = append(b.Images, r.img)
			b.Labels = append(b.Labels, l.Data.Label(j.index))
			if len(b.Images) == l.BatchSize {
				if ctx.Err() != nil {
					yield(nil, ctx.Err())
					return
				}
				if !yield(b, nil) {
					return
				}
				b = &Batch{}
			}
		}
		if ctx.Err() != nil {
			yield(nil, ctx.Err())
			return
		}
		if len(b.Images) > 0 && !l.DropLast {
			yield(b, nil)
		}
	}
}

var errAlreadyRejected = errors.New("already rejected")

// load decodes image i, turning a decoder panic into an error so that one
// malicious file cannot stop the job.
func (l *Loader) load(i int) (img *RGB, err error) {
	if l.Rejects.Has(l.Data.Path(i)) {
		return nil, errAlreadyRejected
	}
	defer func() {
		if p := recover(); p != nil {
			img, err = nil, &ImageError{l.Data.Path(i), Corrupt, fmt.Sprintf("decoder panic: %v", p), nil}
		}
	}()
	return l.Data.Load(i)
}

func (l *Loader) check(order []int) error {
	if l.Data == nil {
		return errors.New("loader: no dataset")
	}
	if l.BatchSize <= 0 {
		return fmt.Errorf("loader: batch size %d, want > 0", l.BatchSize)
	}
	n := l.Data.Len()
	for _, i := range order {
		if i < 0 || i >= n {
			return fmt.Errorf("loader: order holds index %d, dataset has %d images", i, n)
		}
	}
	return nil
}

func identity(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	return p
}

// Permutation returns a random order of 0..n-1 determined by seed and
// epoch alone: a Fisher-Yates shuffle driven by PCG (stream = epoch), with
// its own bounded draw so that the result does not change with Go releases.
func Permutation(n int, seed uint64, epoch int) []int {
	rng := rand.NewPCG(seed, uint64(epoch))
	p := identity(n)
	for i := n - 1; i > 0; i-- {
		j := bounded(rng, uint64(i+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// bounded returns a uniform draw from [0, n) by Lemire's multiply-and-reject.
func bounded(rng *rand.PCG, n uint64) int {
	hi, lo := bits.Mul64(rng.Uint64(), n)
	if lo < n {
		for threshold := -n % n; lo < threshold; {
			hi, lo = bits.Mul64(rng.Uint64(), n)
		}
	}
	return int(hi)
}
