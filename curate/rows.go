package curate

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/webdino/webdino/eval"
)

// Rows is eval.Rows: a float32 matrix read in row ranges, so that the
// searches can stream sides larger than memory from disk.
type Rows = eval.Rows

// Mat is eval.Mat, a Rows held in memory.
type Mat = eval.Mat

// Shards is a Rows over .npy files [n_i, D] of float32, concatenated in
// order, read on demand with ReadAt: only the requested rows are in
// memory.
type Shards struct {
	files []*os.File
	paths []string
	start []int // first row of each file; start[len] = total
	off   []int64
	d     int
}

// OpenShards opens the .npy files in order as one matrix.
func OpenShards(paths []string) (*Shards, error) {
	s := &Shards{start: []int{0}, d: -1}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		shape, off, err := npyHeader(f)
		if err != nil {
			f.Close()
			s.Close()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if len(shape) != 2 || (s.d >= 0 && shape[1] != s.d) {
			f.Close()
			s.Close()
			return nil, fmt.Errorf("%s: shape %v, want [rows, %d]", p, shape, s.d)
		}
		s.d = shape[1]
		s.files = append(s.files, f)
		s.paths = append(s.paths, p)
		s.off = append(s.off, off)
		s.start = append(s.start, s.start[len(s.start)-1]+shape[0])
	}
	if s.d < 0 {
		return nil, fmt.Errorf("no embedding files")
	}
	return s, nil
}

func (s *Shards) Len() int { return s.start[len(s.start)-1] }
func (s *Shards) Dim() int { return s.d }

// Close closes the files.
func (s *Shards) Close() error {
	var first error
	for _, f := range s.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (s *Shards) Read(i, j int, dst []float32) error {
	if i < 0 || j > s.Len() || i > j {
		return fmt.Errorf("rows [%d, %d) of %d", i, j, s.Len())
	}
	var buf []byte
	for f := range s.files {
		a, b := max(i, s.start[f]), min(j, s.start[f+1])
		if a >= b {
			continue
		}
		n := (b - a) * s.d
		if cap(buf) < 4*n {
			buf = make([]byte, 4*n)
		}
		buf = buf[:4*n]
		if _, err := s.files[f].ReadAt(buf, s.off[f]+int64(a-s.start[f])*int64(s.d)*4); err != nil {
			return fmt.Errorf("%s: %w", s.paths[f], err)
		}
		out := dst[(a-i)*s.d:]
		for k := 0; k < n; k++ {
			out[k] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*k:]))
		}
	}
	return nil
}

var (
	npyShape = regexp.MustCompile(`'shape'\s*:\s*\(([^)]*)\)`)
	npyDescr = regexp.MustCompile(`'descr'\s*:\s*'<f4'`)
)

// npyHeader parses a C-order float32 .npy header and returns the shape and
// the data offset.
func npyHeader(r io.Reader) ([]int, int64, error) {
	br := bufio.NewReader(r)
	pre := make([]byte, 10)
	if _, err := io.ReadFull(br, pre); err != nil || string(pre[:6]) != "\x93NUMPY" {
		return nil, 0, fmt.Errorf("not a .npy file")
	}
	hl, off := int(binary.LittleEndian.Uint16(pre[8:])), int64(10)
	if pre[6] >= 2 { // versions 2 and 3 have a 4-byte header length
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, 0, err
		}
		hl |= int(binary.LittleEndian.Uint16(b[:])) << 16
		off += 2
	}
	h := make([]byte, hl)
	if _, err := io.ReadFull(br, h); err != nil {
		return nil, 0, fmt.Errorf("truncated header")
	}
	text := string(h)
	if !npyDescr.MatchString(text) || strings.Contains(text, "'fortran_order': True") {
		return nil, 0, fmt.Errorf("want a C-order float32 array, header %q", strings.TrimSpace(text))
	}
	m := npyShape.FindStringSubmatch(text)
	if m == nil {
		return nil, 0, fmt.Errorf("no shape in header %q", text)
	}
	var shape []int
	for _, f := range strings.Split(m[1], ",") {
		if f = strings.TrimSpace(f); f != "" {
			v, err := strconv.Atoi(f)
			if err != nil {
				return nil, 0, fmt.Errorf("shape %q", m[1])
			}
			shape = append(shape, v)
		}
	}
	return shape, off + int64(hl), nil
}

// Paths are the files of the shards, in order.
func (s *Shards) Paths() []string { return s.paths }
