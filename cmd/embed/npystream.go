package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// npyStream writes a float32 .npy file whose first dimension grows as rows
// are appended: the header is written with room to spare and rewritten
// with the final row count on Close, so features of any number of images
// stream to disk without being held in memory. After an interruption the
// file, once closed, holds the rows appended so far.
type npyStream struct {
	path string
	f    *os.File
	w    *bufio.Writer
	tail []int // the shape after the first dimension
	row  int   // values per row
	rows int
	buf  []byte
}

// npyHeaderLen is the fixed size of magic, version, length and header
// text: a multiple of 64, as numpy aligns data, and long enough for any
// shape of up to eight 20-digit dimensions.
const npyHeaderLen = 256

func createNpy(path string, tail ...int) (*npyStream, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	s := &npyStream{path: path, f: f, w: bufio.NewWriterSize(f, 1<<20), tail: tail, row: 1}
	for _, d := range tail {
		s.row *= d
	}
	if _, err := s.w.Write(s.header()); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// header returns the version 1.0 header for the current row count.
func (s *npyStream) header() []byte {
	dims := []string{strconv.Itoa(s.rows)}
	for _, d := range s.tail {
		dims = append(dims, strconv.Itoa(d))
	}
	tuple := strings.Join(dims, ", ")
	if len(dims) == 1 {
		tuple += ","
	}
	text := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", tuple)
	n := npyHeaderLen - 10 // magic (6), version (2), length (2)
	text += strings.Repeat(" ", n-1-len(text)) + "\n"
	h := append([]byte("\x93NUMPY\x01\x00"), byte(n), byte(n>>8))
	return append(h, text...)
}

// Append writes whole rows.
func (s *npyStream) Append(x []float32) error {
	if len(x)%s.row != 0 {
		return fmt.Errorf("%s: %d values are not whole rows of %d", s.path, len(x), s.row)
	}
	if cap(s.buf) < 4*len(x) {
		s.buf = make([]byte, 4*len(x))
	}
	b := s.buf[:4*len(x)]
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	s.rows += len(x) / s.row
	return nil
}

// Close flushes the data and writes the final header.
func (s *npyStream) Close() error {
	err := s.w.Flush()
	if err == nil {
		_, err = s.f.WriteAt(s.header(), 0)
	}
	if err2 := s.f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	return nil
}
