//go:build !js

package nn

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFlatLayoutAlignsAndChunks(t *testing.T) {
	// Chunks of 256 floats: three tensors of 100 floats pad to 128 each, so
	// the third starts a second chunk.
	l := NewLayout(256 * 4)
	require.NoError(t, l.Add("a.weight", 10, 10))
	require.NoError(t, l.Add("a.bias", 100))
	require.NoError(t, l.Add("b.weight", 4, 25))
	require.ErrorContains(t, l.Add("a.bias", 3), `"a.bias" added twice`)
	require.ErrorContains(t, l.Add("huge", 300), "larger than one buffer")
	require.ErrorContains(t, l.Add("bad", 3, 0), "shape [3 0]")
	require.Equal(t, 300, l.Count())

	f, err := l.Alloc(dev, "params")
	require.NoError(t, err)
	defer f.Release()
	require.Len(t, f.Chunks, 2)
	require.Equal(t, uint64(0), f.Get("a.weight").Off)
	require.Equal(t, uint64(128*4), f.Get("a.bias").Off)
	require.Equal(t, uint64(0), f.Get("b.weight").Off)
	require.Len(t, f.Match("a."), 2)

	// Views are independent: writing one leaves the others untouched.
	data := make([]float32, 100)
	for i := range data {
		data[i] = float32(i)
	}
	require.NoError(t, dev.Write(f.Get("a.bias"), data))
	got, err := dev.Read(f.Get("a.weight"))
	require.NoError(t, err)
	require.Equal(t, make([]float32, 100), got)
	got, err = dev.Read(f.Get("a.bias"))
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.Panics(t, func() { f.Get("nope") })
}
