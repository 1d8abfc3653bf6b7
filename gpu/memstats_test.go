//go:build !js

package gpu

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAllocatedCountsBuffers(t *testing.T) {
	cur0, _ := dev.Allocated()
	dev.ResetPeak()
	a, err := dev.NewTensor("a", 1000)
	require.NoError(t, err)
	b, err := dev.NewTensor("b", 3) // rounded to whole words: 12 bytes
	require.NoError(t, err)
	cur, peak := dev.Allocated()
	require.Equal(t, cur0+4012, cur)
	require.Equal(t, cur, peak)
	a.Buf.Release()
	a.Buf.Release() // a second release frees nothing
	cur, peak = dev.Allocated()
	require.Equal(t, cur0+12, cur)
	require.Equal(t, cur0+4012, peak)
	dev.ResetPeak()
	b.Buf.Release()
	cur, peak = dev.Allocated()
	require.Equal(t, cur0, cur)
	require.Equal(t, cur0+12, peak)
}
