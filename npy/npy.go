// Package npy reads and writes NumPy .npy arrays: the exchange format of the
// test fixtures (made by the PyTorch reference) and of exported features.
//
// Reading accepts little-endian float32 ('<f4'), int64 ('<i8') and uint8
// ('|u1') arrays in C order, format versions 1 to 3; writing produces
// version 1.0 float32 files that numpy.load reads.
package npy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
)

const magic = "\x93NUMPY"

// maxHeader bounds the header of a file we read; numpy writes under 100 bytes.
const maxHeader = 1 << 16

// Array is one array; exactly one of the data slices is set, by dtype.
type Array struct {
	Shape   []int
	Float32 []float32 // dtype '<f4'
	Int64   []int64   // dtype '<i8'
	Uint8   []uint8   // dtype '|u1'
}

// DType is the numpy descr of the array.
func (a *Array) DType() string {
	switch {
	case a.Int64 != nil:
		return "<i8"
	case a.Uint8 != nil:
		return "|u1"
	}
	return "<f4"
}

// Numel is the number of elements the shape holds.
func (a *Array) Numel() int {
	n := 1
	for _, s := range a.Shape {
		n *= s
	}
	return n
}

var (
	reDescr   = regexp.MustCompile(`'descr'\s*:\s*'([^']*)'`)
	reFortran = regexp.MustCompile(`'fortran_order'\s*:\s*(True|False)`)
	reShape   = regexp.MustCompile(`'shape'\s*:\s*\(([^)]*)\)`)
)

// Read parses one array from r.
func Read(r io.Reader) (*Array, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("npy: reading magic: %w", err)
	}
	if string(pre[:6]) != magic {
		return nil, fmt.Errorf("npy: not a .npy file (starts with %q)", pre[:6])
	}
	var hlen int
	switch pre[6] {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy: reading header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy: reading header length: %w", err)
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return nil, fmt.Errorf("npy: format version %d.%d not supported (want 1.x to 3.x)", pre[6], pre[7])
	}
	if hlen > maxHeader {
		return nil, fmt.Errorf("npy: header of %d bytes is larger than %d", hlen, maxHeader)
	}
	hb := make([]byte, hlen)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, fmt.Errorf("npy: reading %d-byte header: %w", hlen, err)
	}
	h := string(hb)
	descr, fortran, shape := reDescr.FindStringSubmatch(h), reFortran.FindStringSubmatch(h), reShape.FindStringSubmatch(h)
	if descr == nil || fortran == nil || shape == nil {
		return nil, fmt.Errorf("npy: header %q lacks descr, fortran_order or shape", strings.TrimSpace(h))
	}
	if fortran[1] == "True" {
		return nil, errors.New("npy: Fortran-order arrays are not supported (save with np.ascontiguousarray)")
	}
	a := &Array{Shape: []int{}}
	numel := 1
	for _, f := range strings.Split(shape[1], ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("npy: bad dimension %q in shape (%s)", f, shape[1])
		}
		if d > 0 && numel > math.MaxInt32/d {
			return nil, fmt.Errorf("npy: shape (%s) has too many elements", shape[1])
		}
		numel *= d
		a.Shape = append(a.Shape, d)
	}
	var size int
	switch descr[1] {
	case "<f4":
		size = 4
	case "<i8":
		size = 8
	case "|u1", "<u1":
		size = 1
	default:
		return nil, fmt.Errorf("npy: dtype %q not supported (want '<f4', '<i8' or '|u1')", descr[1])
	}
	raw, err := readN(r, numel*size)
	if err != nil {
		return nil, fmt.Errorf("npy: reading %d elements of %s: %w", numel, descr[1], err)
	}
	switch size {
	case 4:
		a.Float32 = make([]float32, numel)
		for i := range a.Float32 {
			a.Float32[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case 8:
		a.Int64 = make([]int64, numel)
		for i := range a.Int64 {
			a.Int64[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	case 1:
		a.Uint8 = raw
	}
	return a, nil
}

// readN reads n bytes, growing the buffer as data arrives so that a header
// claiming more data than the stream holds fails without a large allocation.
func readN(r io.Reader, n int) ([]byte, error) {
	var buf bytes.Buffer
	got, err := io.Copy(&buf, io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, err
	}
	if int(got) != n {
		return nil, fmt.Errorf("file ends after %d of %d data bytes", got, n)
	}
	return buf.Bytes(), nil
}

// ReadFile reads the array stored at path; errors name the file.
func ReadFile(path string) (*Array, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a, err := Read(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// ReadFloat32File reads a float32 array from path.
func ReadFloat32File(path string) ([]float32, []int, error) {
	a, err := ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if a.Float32 == nil {
		return nil, nil, fmt.Errorf("%s: npy: dtype %s, want float32 ('<f4')", path, a.DType())
	}
	return a.Float32, a.Shape, nil
}

// WriteFloat32 writes data with the given C-order shape as a version 1.0
// .npy file.
func WriteFloat32(w io.Writer, shape []int, data []float32) error {
	n := 1
	dims := make([]string, len(shape))
	for i, s := range shape {
		if s < 0 {
			return fmt.Errorf("npy: negative dimension in shape %v", shape)
		}
		n *= s
		dims[i] = strconv.Itoa(s)
	}
	if n != len(data) {
		return fmt.Errorf("npy: shape %v holds %d elements, data has %d", shape, n, len(data))
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	h := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", tuple)
	// Pad with spaces so the data starts at a multiple of 64 bytes, ending in '\n'.
	total := len(magic) + 4 + len(h) + 1
	h += strings.Repeat(" ", (64-total%64)%64) + "\n"
	if len(h) > math.MaxUint16 {
		return fmt.Errorf("npy: shape %v gives a header too long for format 1.0", shape)
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(magic)
	bw.Write([]byte{1, 0, byte(len(h)), byte(len(h) >> 8)})
	bw.WriteString(h)
	var b [4]byte
	for _, v := range data {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		bw.Write(b[:])
	}
	return bw.Flush()
}

// WriteFloat32File writes a .npy file at path.
func WriteFloat32File(path string, shape []int, data []float32) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := WriteFloat32(f, shape, data); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
