package npy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The files in testdata were written by numpy (scripts/reference/make_npy_fixtures.py).
func TestReadNumpyFiles(t *testing.T) {
	cases := []struct {
		file  string
		shape []int
		check func(t *testing.T, a *Array)
		err   string
	}{
		{file: "f32_2x3.npy", shape: []int{2, 3}, check: func(t *testing.T, a *Array) {
			require.Equal(t, []float32{-1, -0.5, 0, 0.5, 1, 1.5}, a.Float32)
			require.Equal(t, "<f4", a.DType())
		}},
		{file: "i64_4.npy", shape: []int{4}, check: func(t *testing.T, a *Array) {
			require.Equal(t, []int64{-3, 0, 7, 1 << 40}, a.Int64)
			require.Equal(t, "<i8", a.DType())
		}},
		{file: "u8_2x2x2.npy", shape: []int{2, 2, 2}, check: func(t *testing.T, a *Array) {
			require.Equal(t, []uint8{0, 30, 60, 90, 120, 150, 180, 210}, a.Uint8)
			require.Equal(t, "|u1", a.DType())
		}},
		{file: "f32_scalar.npy", shape: []int{}, check: func(t *testing.T, a *Array) {
			require.Equal(t, []float32{2.5}, a.Float32)
			require.Equal(t, 1, a.Numel())
		}},
		{file: "f32_fortran.npy", err: "f32_fortran.npy: npy: Fortran-order arrays are not supported"},
		{file: "f64_2.npy", err: `f64_2.npy: npy: dtype "<f8" not supported (want '<f4', '<i8' or '|u1')`},
		{file: "f32_bigendian.npy", err: `dtype ">f4" not supported`},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			a, err := ReadFile(filepath.Join("testdata", c.file))
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.shape, a.Shape)
			c.check(t, a)
		})
	}
	_, _, err := ReadFloat32File("testdata/i64_4.npy")
	require.ErrorContains(t, err, "testdata/i64_4.npy: npy: dtype <i8, want float32")
}

func TestWriteRoundTrip(t *testing.T) {
	for _, shape := range [][]int{{5}, {2, 3, 4}, {}, {0, 3}} {
		n := 1
		for _, s := range shape {
			n *= s
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(i)*0.25 - 3
		}
		var buf bytes.Buffer
		require.NoError(t, WriteFloat32(&buf, shape, data))
		require.Zero(t, (buf.Len()-4*n)%64, "data must start 64-byte aligned")
		a, err := Read(&buf)
		require.NoError(t, err)
		require.Equal(t, shape, a.Shape)
		require.Equal(t, data, a.Float32)
	}
	require.ErrorContains(t, WriteFloat32(&bytes.Buffer{}, []int{2, 2}, make([]float32, 3)),
		"npy: shape [2 2] holds 4 elements, data has 3")
}

// numpy itself must read what we write (skipped where numpy is missing).
func TestNumpyReadsOurFile(t *testing.T) {
	if _, err := exec.Command("/usr/bin/python3", "-c", "import numpy").CombinedOutput(); err != nil {
		t.Skip("no numpy for /usr/bin/python3")
	}
	path := filepath.Join(t.TempDir(), "x.npy")
	require.NoError(t, WriteFloat32File(path, []int{2, 3}, []float32{1, 2, 3, 4, 5, 6.5}))
	out, err := exec.Command("/usr/bin/python3", "-c",
		"import numpy, sys; a = numpy.load(sys.argv[1]); print(a.dtype, a.shape, a.sum())", path).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Equal(t, "float32 (2, 3) 21.5\n", string(out))
}

func TestReadBadInput(t *testing.T) {
	good, err := os.ReadFile("testdata/f32_2x3.npy")
	require.NoError(t, err)
	huge := append([]byte(nil), good[:10]...)
	huge = append(huge, []byte("{'descr': '<f4', 'fortran_order': False, 'shape': (50000, 40000), }")...)
	huge[8], huge[9] = byte(len(huge)-10), 0
	cases := []struct {
		name string
		in   []byte
		err  string
	}{
		{"empty", nil, "npy: reading magic: EOF"},
		{"zip", []byte("PK\x03\x04abcdefgh"), `npy: not a .npy file (starts with "PK\x03\x04ab")`},
		{"version", append([]byte(magic), 9, 0, 0, 0), "npy: format version 9.0 not supported (want 1.x to 3.x)"},
		{"short header", good[:40], "npy: reading 118-byte header: unexpected EOF"},
		{"truncated data", good[:len(good)-1], "npy: reading 6 elements of <f4: file ends after 23 of 24 data bytes"},
		{"huge claim", huge, "npy: reading 2000000000 elements of <f4: file ends after 0 of 8000000000 data bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(c.in))
			require.EqualError(t, err, c.err)
		})
	}
}
