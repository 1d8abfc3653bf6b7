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

	// Offsets and spans count the padding: chunks of 256 and 128 floats.
	for name, want := range map[string]int{"a.weight": 0, "a.bias": 128, "b.weight": 256, "": 384} {
		off, err := l.Offset(name)
		require.NoError(t, err)
		require.Equal(t, want, off, name)
	}
	_, err = l.Offset("nope")
	require.ErrorContains(t, err, `no tensor "nope"`)
	lengths := func(from, to string) []int {
		views, err := f.Span(from, to)
		require.NoError(t, err)
		var n []int
		for _, v := range views {
			n = append(n, v.Len())
		}
		return n
	}
	require.Equal(t, []int{128, 128}, lengths("a.bias", ""), "the rest of the first chunk, the second")
	require.Equal(t, []int{256, 128}, lengths("", ""))
	require.Equal(t, []int{128}, lengths("a.weight", "a.bias"))
	require.Equal(t, []int{256}, lengths("", "b.weight"))
	require.Empty(t, lengths("b.weight", "b.weight"))
	tail, err := f.Span("a.bias", "")
	require.NoError(t, err)
	require.Equal(t, f.Get("a.bias").Off, tail[0].Off)
	require.Equal(t, f.Get("b.weight").Buf, tail[1].Buf)
	_, err = f.Span("b.weight", "a.bias")
	require.ErrorContains(t, err, "runs backwards")
	_, err = f.Span("a.weight", "nope")
	require.ErrorContains(t, err, `no tensor "nope"`)
}
