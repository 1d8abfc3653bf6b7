//go:build !js

package gpu

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAllocatedCountsBuffers(t *testing.T) {
	cur0, _ := dev.Allocated()
	dev.ResetPeak()
	a, err := dev.NewTensor("a", 1000) // 4000 bytes, rounded to 4096
	require.NoError(t, err)
	b, err := dev.NewTensor("b", 3) // rounded to 256 bytes
	require.NoError(t, err)
	cur, peak := dev.Allocated()
	require.Equal(t, cur0+4352, cur)
	require.Equal(t, cur, peak)
	a.Buf.Release()
	a.Buf.Release() // a second release frees nothing
	cur, peak = dev.Allocated()
	require.Equal(t, cur0+256, cur)
	require.Equal(t, cur0+4352, peak)
	dev.ResetPeak()
	b.Buf.Release()
	cur, peak = dev.Allocated()
	require.Equal(t, cur0, cur)
	require.Equal(t, cur0+256, peak)
}
