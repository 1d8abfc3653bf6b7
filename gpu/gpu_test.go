//go:build !js

package gpu

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var dev *Device

func TestMain(m *testing.M) {
	d, err := Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "device:", d.Info())
	dev = d
	code := m.Run()
	d.Close()
	os.Exit(code)
}

func fillKernel() Kernel { return Kernel{Name: "fill", Access: []Access{ReadWrite}} }

func TestUploadReadRoundTrip(t *testing.T) {
	data := []float32{1, -2, 3.5, 1e-30, 7}
	x, err := dev.Upload("x", data, 5)
	require.NoError(t, err)
	defer x.Buf.Release()
	got, err := dev.Read(x)
	require.NoError(t, err)
	require.Equal(t, data, got)
}

// TestReadAllMatchesRead reads tensors of several sizes, a view at an
// offset among them, through one staging buffer, and a top-k pair of values
// and indices.
func TestReadAllMatchesRead(t *testing.T) {
	a, err := dev.Upload("a", []float32{1, 2, 3}, 3)
	require.NoError(t, err)
	defer a.Buf.Release()
	bData := make([]float32, 300)
	for i := range bData {
		bData[i] = float32(i) / 7
	}
	b, err := dev.Upload("b", bData, 3, 100)
	require.NoError(t, err)
	defer b.Buf.Release()
	row, err := b.View(200, 100)
	require.NoError(t, err)
	got, err := dev.ReadAll(a, row, b)
	require.NoError(t, err)
	require.Equal(t, [][]float32{{1, 2, 3}, bData[200:], bData}, got)
	one, err := dev.Read(row)
	require.NoError(t, err)
	require.Equal(t, bData[200:], one)

	ix, err := dev.NewTensor("ix", 3)
	require.NoError(t, err)
	defer ix.Buf.Release()
	require.NoError(t, dev.WriteU32(ix, []uint32{7, 0, 1 << 31}))
	v, idx, err := dev.ReadTopK(a, ix)
	require.NoError(t, err)
	require.Equal(t, []float32{1, 2, 3}, v)
	require.Equal(t, []uint32{7, 0, 1 << 31}, idx)
}

// TestWriteAllReadIntoRoundTrip moves one slice into tensors and views at
// offsets and back, through the kept staging buffers, twice with other
// values (a reused buffer must carry the new ones) and once larger (the
// kept buffers grow), and checks the length errors.
func TestWriteAllReadIntoRoundTrip(t *testing.T) {
	whole, err := dev.NewTensor("whole", 1000)
	require.NoError(t, err)
	defer whole.Buf.Release()
	a, err := whole.View(3, 97)
	require.NoError(t, err)
	b, err := whole.View(500, 2, 150)
	require.NoError(t, err)
	empty, err := whole.View(0, 0)
	require.NoError(t, err)
	c, err := dev.NewTensor("c", 41)
	require.NoError(t, err)
	defer c.Buf.Release()
	for round, ts := range [][]*Tensor{{a, empty, b, c}, {c, b, a}, {whole, c}} {
		n := 0
		for _, x := range ts {
			n += x.Len()
		}
		src := make([]float32, n)
		for i := range src {
			src[i] = float32(round*10000+i) / 3
		}
		require.NoError(t, dev.WriteAll(src, ts...))
		got := make([]float32, n)
		require.NoError(t, dev.ReadInto(got, ts...))
		require.Equal(t, src, got, "round %d", round)
		each, err := dev.ReadAll(ts...)
		require.NoError(t, err)
		off := 0
		for i, x := range ts {
			require.Equal(t, src[off:off+x.Len()], each[i], "round %d tensor %d", round, i)
			off += x.Len()
		}
	}
	require.ErrorContains(t, dev.WriteAll(make([]float32, 5), c), "write 5 values into 1 tensors of 41")
	require.ErrorContains(t, dev.ReadInto(make([]float32, 40), c), "read 1 tensors of 41 values into 40")
}

// TestStartReadSeesItsPointInTheQueue reads tensors while later work that
// overwrites them is submitted: Into returns the values as they were at
// StartRead, then a second round reuses the kept buffer. A garbage
// collection in between must not matter (see PendingRead.Wait).
func TestStartReadSeesItsPointInTheQueue(t *testing.T) {
	const n = 70001
	x, err := dev.NewTensor("x", n)
	require.NoError(t, err)
	defer x.Buf.Release()
	head, err := x.View(0, 5)
	require.NoError(t, err)
	fill := func(v float32) {
		rec := dev.Record()
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(v)}, x))
		require.NoError(t, rec.Submit())
	}
	for round := range 2 {
		v := float32(round + 1)
		fill(v)
		p, err := dev.StartRead(x, head)
		require.NoError(t, err)
		for range 20 {
			fill(-v)
		}
		churnHeap()
		got := make([]float32, n+5)
		require.NoError(t, p.Into(got))
		for i, g := range got {
			if g != v {
				t.Fatalf("round %d: element %d = %v, want %v (the value when the read started)", round, i, g, v)
			}
		}
	}
	p, err := dev.StartRead(x)
	require.NoError(t, err)
	require.ErrorContains(t, p.Into(make([]float32, 3)), "read 1 tensors of 70001 values into 3")
	p, err = dev.StartRead(head)
	require.NoError(t, err)
	p.Discard()
	all, err := dev.Read(x)
	require.NoError(t, err)
	require.Equal(t, float32(-2), all[n-1])
}

// Reads started one after another between fills each see their own point
// in the queue, collected in any order, through buffers that later rounds
// reuse (of other sizes: a kept buffer grows).
func TestStartReadsInFlightAtOnce(t *testing.T) {
	const n = 4099
	x, err := dev.NewTensor("x", n)
	require.NoError(t, err)
	defer x.Buf.Release()
	fill := func(v float32) {
		rec := dev.Record()
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(v)}, x))
		require.NoError(t, rec.Submit())
	}
	for round, size := range []int{n, 17, n} {
		view, err := x.View(n-size, size)
		require.NoError(t, err)
		var reads []*PendingRead
		for i := range 4 {
			fill(float32(10*round + i))
			p, err := dev.StartRead(view)
			require.NoError(t, err)
			reads = append(reads, p)
		}
		fill(-1)
		churnHeap()
		for _, i := range []int{2, 0, 3, 1} {
			got := make([]float32, size)
			require.NoError(t, reads[i].Into(got))
			for j, g := range got {
				if g != float32(10*round+i) {
					t.Fatalf("round %d, read %d: element %d = %v, want %v", round, i, j, g, 10*round+i)
				}
			}
		}
		require.Len(t, dev.pending.lent, 0, "round %d: every buffer given back", round)
		require.Len(t, dev.pending.free, 4, "round %d: four buffers kept", round)
	}
}

// churnHeap collects garbage and fills freed small objects with new values.
func churnHeap() {
	runtime.GC()
	keep := make([]*uint64, 0, 1<<16)
	for i := range 1 << 16 {
		v := uint64(i)*0x9e3779b97f4a7c15 | 1
		keep = append(keep, &v)
	}
	runtime.KeepAlive(keep)
}

func TestFillManyDispatchesOnePass(t *testing.T) {
	// 70000 elements need more than one 1-D grid row of 256-wide groups at
	// small limits; several fills of distinct views check ordering.
	const n = 70001
	x, err := dev.NewTensor("x", n)
	require.NoError(t, err)
	defer x.Buf.Release()
	rec := dev.Record()
	for v := 1; v <= 3; v++ {
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(float32(v))}, x))
	}
	_, err = rec.Run()
	require.NoError(t, err)
	got, err := dev.Read(x)
	require.NoError(t, err)
	for i, v := range got {
		if v != 3 {
			t.Fatalf("element %d = %v, want 3", i, v)
		}
	}
}

// TestRecordingPastTheBindGroupCache records more distinct bind groups (one
// per view of x) than the cache holds: the recording is submitted in
// parts, in order, and no group is released under an unsubmitted pass
// (wgpu-native panicked "BindGroup does not exist", and crashed at about
// 64900 live groups, before parts).
func TestRecordingPastTheBindGroupCache(t *testing.T) {
	const n = 64 // floats: a 256-byte view each
	views := maxBindGroups + 1000
	x, err := dev.NewTensor("x", views*n)
	require.NoError(t, err)
	defer x.Buf.Release()
	rec := dev.Record()
	last := make([]float32, views)
	for i := range views + 1000 {
		v := i % views
		view, err := x.View(v*n, n)
		require.NoError(t, err)
		last[v] = float32(i)
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(last[v])}, view))
	}
	_, err = rec.Run()
	require.NoError(t, err)
	got, err := dev.Read(x)
	require.NoError(t, err)
	for i, g := range got {
		require.Equal(t, last[i/n], g, "element %d: the last fill of its view wins", i)
	}
	dev.mu.Lock()
	cached := len(dev.binds.groups)
	dev.mu.Unlock()
	require.LessOrEqual(t, cached, maxBindGroups)
}

// TestLongRecordingsInParts records 100000 dispatches on one view: the
// recording is submitted in command buffers of at most maxEncoded
// dispatches, in order (lavapipe crashed executing one of 100000).
func TestLongRecordingsInParts(t *testing.T) {
	const n, count = 64, 100000
	x, err := dev.NewTensor("x", n)
	require.NoError(t, err)
	defer x.Buf.Release()
	rec := dev.Record()
	for i := range count {
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(float32(i))}, x))
	}
	_, err = rec.Run()
	require.NoError(t, err)
	got, err := dev.Read(x)
	require.NoError(t, err)
	require.Equal(t, float32(count-1), got[0], "the last fill wins")
}

// TestOneBindGroupPerBuffers: dispatches that differ only in their
// parameters share one bind group (the parameter slot is a dynamic offset),
// and each still reads its own parameters.
func TestOneBindGroupPerBuffers(t *testing.T) {
	const n = 64
	x, err := dev.NewTensor("x", 2*n)
	require.NoError(t, err)
	defer x.Buf.Release()
	first, err := x.View(0, n)
	require.NoError(t, err)
	second, err := x.View(n, n)
	require.NoError(t, err)
	dev.mu.Lock()
	before := len(dev.binds.groups)
	dev.mu.Unlock()
	rec := dev.Record()
	for i := range 10 {
		view := first
		if i == 8 {
			view = second
		}
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(float32(i))}, view))
	}
	_, err = rec.Run()
	require.NoError(t, err)
	got, err := dev.Read(x)
	require.NoError(t, err)
	require.Equal(t, float32(9), got[0], "the last fill of the first view")
	require.Equal(t, float32(8), got[n], "the second view's fill")
	dev.mu.Lock()
	after := len(dev.binds.groups)
	dev.mu.Unlock()
	require.Equal(t, 2, after-before, "one group per view")
}

func TestGroupsSplitLargeGrids(t *testing.T) {
	rec := dev.Record()
	max := int(dev.Limits().MaxWorkgroupsPerDim)
	g := rec.Groups((max+5)*256, 256)
	require.LessOrEqual(t, int(g[0]), max)
	require.GreaterOrEqual(t, int(g[0])*int(g[1]), max+5)
}

func TestBadInputFailsBeforeSubmit(t *testing.T) {
	_, err := dev.NewTensor("empty", 3, 0)
	require.ErrorContains(t, err, "zero or negative dimension")

	_, err = dev.NewBuffer("huge", dev.Limits().MaxBufferSize+4)
	require.ErrorContains(t, err, "exceeds the device's max buffer size")

	x, err := dev.NewTensor("x", 128)
	require.NoError(t, err)
	defer x.Buf.Release()
	rec := dev.Record()
	err = rec.Dispatch(fillKernel(), [3]uint32{1, 1, 1}, nil)
	require.ErrorContains(t, err, "fill: 0 tensors bound, it takes 1")
	require.Error(t, rec.Submit(), "a failed recording must not submit")

	v, err := x.View(3, 4)
	require.NoError(t, err)
	err = rec.Dispatch(fillKernel(), [3]uint32{1, 1, 1}, []uint32{4, 0}, v)
	require.ErrorContains(t, err, "not a multiple of the device's storage alignment")
	require.Error(t, rec.Submit())

	_, err = x.View(100, 64)
	require.ErrorContains(t, err, "outside")

	err = rec.Dispatch(Kernel{Name: "no_such_kernel"}, [3]uint32{1, 1, 1}, nil)
	require.ErrorContains(t, err, "no such kernel template")
	require.Error(t, rec.Submit())

	require.NoError(t, rec.Submit(), "the recorder is reusable after a failed submit")
}

func TestRunTimedMeasuresWork(t *testing.T) {
	const n = 1 << 22
	x, err := dev.NewTensor("x", n)
	require.NoError(t, err)
	defer x.Buf.Release()
	rec := dev.Record()
	small := func() {
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(256, 256), []uint32{U32(256), F32(1)}, x))
	}
	small()
	tSmall, err := rec.RunTimed()
	require.NoError(t, err)
	for i := 0; i < 20; i++ {
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(2)}, x))
	}
	tBig, err := rec.RunTimed()
	require.NoError(t, err)
	t.Logf("timestamps %v: one tiny dispatch %v, 20 fills of 16 MiB %v", dev.timestamps, tSmall, tBig)
	require.Greater(t, tBig, tSmall)
	got, err := dev.Read(x)
	require.NoError(t, err)
	require.Equal(t, float32(2), got[n-1])
}

// profiling sets a new profile on dev until the test ends and returns it
// with a zeroed tensor of n floats per name.
func profiling(t *testing.T, n int, names ...string) (*Profile, []*Tensor) {
	var ts []*Tensor
	for _, name := range names {
		x, err := dev.NewTensor(name, n)
		require.NoError(t, err)
		t.Cleanup(x.Buf.Release)
		ts = append(ts, x)
	}
	p := NewProfile()
	dev.SetProfile(p)
	t.Cleanup(func() { dev.SetProfile(nil) })
	return p, ts
}

func TestProfileTimesEachOp(t *testing.T) {
	const n = 1 << 22
	p, ts := profiling(t, n, "x", "y")
	x, y := ts[0], ts[1]
	rec := dev.Record()
	// One tiny fill, then eight of the whole tensor and a copy of it: the
	// profile must count each and charge the large ones more time.
	require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(256, 256), []uint32{U32(256), F32(1)}, y))
	for i := 0; i < 8; i++ {
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(3)}, x))
	}
	require.NoError(t, rec.Copy(y, x))
	require.NoError(t, rec.Submit())
	es := p.Entries()
	require.Len(t, es, 2)
	require.Equal(t, "fill", es[0].Kernel, "the fills take the most time")
	require.Equal(t, 9, es[0].Calls)
	require.Equal(t, ProfileEntry{Kernel: "copy", Calls: 1, Total: es[1].Total}, es[1])
	require.Positive(t, es[1].Total)
	got, err := dev.Read(y)
	require.NoError(t, err)
	require.Equal(t, float32(3), got[n-1], "profiled ops still run, in order")
}

func TestProfileLabelsDispatches(t *testing.T) {
	p, ts := profiling(t, 1024, "x")
	x := ts[0]
	rec := dev.Record()
	require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(1024, 256), []uint32{U32(1024), F32(3)}, x))
	pipelines := len(dev.kernels)
	labelled := fillKernel()
	labelled.Profile = "1024 floats"
	require.NoError(t, rec.Dispatch(labelled, rec.Groups(1024, 256), []uint32{U32(1024), F32(1)}, x))
	require.NoError(t, rec.Dispatch(labelled, rec.Groups(1024, 256), []uint32{U32(1024), F32(2)}, x))
	require.Equal(t, pipelines, len(dev.kernels), "a label compiles nothing new")
	require.NoError(t, rec.Submit())
	calls := map[string]int{}
	for _, e := range p.Entries() {
		calls[e.Kernel] = e.Calls
	}
	require.Equal(t, map[string]int{"fill 1024 floats": 2, "fill": 1}, calls, "one entry per label")
}

func TestBindGroupsAreReusedAndDropped(t *testing.T) {
	x, err := dev.NewTensor("x", 512)
	require.NoError(t, err)
	defer x.Buf.Release()
	record := func(ts ...*Tensor) error {
		rec := dev.Record()
		for i, t := range ts {
			if err := rec.Dispatch(fillKernel(), rec.Groups(t.Len(), 256), []uint32{U32(t.Len()), F32(float32(i + 1))}, t); err != nil {
				return err
			}
		}
		return rec.Submit()
	}
	require.NoError(t, record(x))
	cached := len(dev.binds.groups)
	require.NoError(t, record(x))
	require.Equal(t, cached, len(dev.binds.groups), "the same dispatch again reuses its bind group")

	y, err := dev.NewTensor("y", 512)
	require.NoError(t, err)
	require.NoError(t, record(x, y))
	require.Len(t, dev.binds.byBuffer[y.Buf], 1)
	y.Buf.Release()
	require.NotContains(t, dev.binds.byBuffer, y.Buf, "a released buffer's groups are dropped")
	for key := range dev.binds.groups {
		require.NotContains(t, key, fmt.Sprintf("%p", y.Buf))
	}

	// A new buffer (perhaps at the old one's address) binds afresh.
	z, err := dev.NewTensor("z", 512)
	require.NoError(t, err)
	defer z.Buf.Release()
	require.NoError(t, record(z, x))
	got, err := dev.Read(z)
	require.NoError(t, err)
	require.Equal(t, float32(1), got[511])
	got, err = dev.Read(x)
	require.NoError(t, err)
	require.Equal(t, float32(2), got[0])
}

func TestPipelinesCountsSpecialisations(t *testing.T) {
	x, err := dev.NewTensor("x", 8)
	require.NoError(t, err)
	defer x.Buf.Release()
	before := dev.Pipelines()
	for i := 0; i < 3; i++ {
		rec := dev.Record()
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(8, 256), []uint32{8, F32(1)}, x))
		require.NoError(t, rec.Submit())
	}
	dev.Sync()
	// fill may have been compiled by an earlier test: at most one new pipeline.
	require.LessOrEqual(t, dev.Pipelines()-before, 1)
	require.GreaterOrEqual(t, dev.Pipelines(), 1)
	k := fillKernel()
	k.Data = struct{ Unused int }{7} // another specialisation of the same template
	before = dev.Pipelines()
	rec := dev.Record()
	require.NoError(t, rec.Dispatch(k, rec.Groups(8, 256), []uint32{8, F32(1)}, x))
	require.NoError(t, rec.Submit())
	require.Equal(t, before+1, dev.Pipelines())
}

func TestWarmUpWaitsForCompilesAndSpeed(t *testing.T) {
	x, err := dev.NewTensor("x", 8)
	require.NoError(t, err)
	defer x.Buf.Release()
	specialisations := 0
	run := func(compile bool) {
		k := fillKernel()
		if compile { // a specialisation no earlier run compiled
			specialisations++
			k.Data = struct{ WarmUpTest, N int }{1, specialisations}
		}
		rec := dev.Record()
		require.NoError(t, rec.Dispatch(k, rec.Groups(8, 256), []uint32{8, F32(1)}, x))
		require.NoError(t, rec.Submit())
	}
	// A fake clock: each Start advances it by the next run's duration.
	clock := time.Unix(0, 0)
	fake := func(w *WarmUp, secs []float64) {
		i := 0
		w.now = func() time.Time {
			clock = clock.Add(time.Duration(secs[i/2]*float64(time.Second)) * time.Duration(i%2))
			i++
			return clock
		}
	}
	// warm makes one run of w and reports whether w calls it warm.
	warm := func(w *WarmUp, compile bool) bool {
		w.Start()
		run(compile)
		return w.Warm()
	}
	// Run 1 compiles; run 2 compiles nothing but is much faster; run 3 is
	// about as fast: warm after run 3.
	w := NewWarmUp(dev, 10)
	fake(w, []float64{5, 3, 2.9})
	require.False(t, warm(w, true), "run 1 compiled a pipeline")
	require.False(t, warm(w, false), "run 2 was 40% faster than run 1")
	require.True(t, warm(w, false), "run 3 compiled nothing and was no faster")
	require.Equal(t, 3, w.Runs())
	require.InDelta(t, 2.9, w.Last(), 1e-9)
	// A run that compiles is never warm, even as slow as the one before.
	w = NewWarmUp(dev, 10)
	fake(w, []float64{2, 2, 2})
	require.False(t, warm(w, true))
	require.False(t, warm(w, true), "run 2 compiled a pipeline")
	require.True(t, warm(w, false))
	// max runs end the wait, however fast the last run was.
	w = NewWarmUp(dev, 2)
	fake(w, []float64{1, 0.1})
	require.False(t, warm(w, false))
	require.True(t, warm(w, false), "max runs done")
	// Repeat: run 1 compiles, run 2 is as slow and compiles nothing.
	w = NewWarmUp(dev, 10)
	fake(w, []float64{2, 2, 2})
	calls := 0
	require.NoError(t, w.Repeat(func() error { calls++; run(calls == 1); return nil }))
	require.Equal(t, 2, calls)
	require.EqualError(t, w.Repeat(func() error { return errors.New("step failed") }), "step failed")
}

// WEBDINO_ADAPTER picks an adapter of Adapters() by index, and a bad index
// says which indices exist.
func TestAdapterEnv(t *testing.T) {
	all := Adapters()
	require.NotEmpty(t, all)
	t.Setenv(AdapterEnv, "0")
	d, err := Open()
	require.NoError(t, err)
	require.Equal(t, all[0].Name, d.Info().Name)
	d.Close()
	t.Setenv(AdapterEnv, fmt.Sprint(len(all)))
	_, err = Open()
	require.EqualError(t, err, fmt.Sprintf("WEBDINO_ADAPTER=%q: adapter %d: want an index below %d", fmt.Sprint(len(all)), len(all), len(all)))
	t.Setenv(AdapterEnv, "first")
	_, err = Open()
	require.EqualError(t, err, `WEBDINO_ADAPTER="first": want an adapter index (gpu.Adapters)`)
}
