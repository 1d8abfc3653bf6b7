package data

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadFashionMNIST(t *testing.T) {
	g, err := LoadFashionMNIST(FashionMNISTDir, "t10k")
	require.NoError(t, err)
	require.Equal(t, 10000, g.N)
	require.Equal(t, 28, g.H)
	require.Equal(t, 28, g.W)
	counts := make([]int, 10)
	for _, l := range g.Labels {
		counts[l]++
	}
	for c, n := range counts {
		require.Equal(t, 1000, n, "class %d", c)
	}
}

func TestIdxErrors(t *testing.T) {
	_, err := LoadFashionMNIST(t.TempDir(), "t10k")
	require.ErrorContains(t, err, "dataset-fashion-mnist")
	_, err = LoadFashionMNIST(FashionMNISTDir, "valid")
	require.ErrorContains(t, err, `split "valid"`)

	dir := t.TempDir()
	bad := filepath.Join(dir, "t10k-images-idx3-ubyte")
	require.NoError(t, os.WriteFile(bad, []byte{0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2}, 0o644))
	_, err = readIdxImages(bad)
	require.ErrorContains(t, err, "truncated")
	require.NoError(t, os.WriteFile(bad, []byte{1, 2, 3, 4}, 0o644))
	_, err = readIdxImages(bad)
	require.ErrorContains(t, err, "not an idx file")
}
