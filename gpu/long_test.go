//go:build !js

package gpu

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSyncOutlastsPollTimeout queues more than 5 s of work, the point at
// which wgpu-native's blocking poll gives up (and, on lavapipe, crashed the
// process when it was used to wait); Sync and Read must still wait it out.
func TestSyncOutlastsPollTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("queues 6 s of GPU work")
	}
	const n = 1 << 22
	x, err := dev.NewTensor("x", n)
	require.NoError(t, err)
	defer x.Buf.Release()
	rec := dev.Record()
	fill := func(v int) {
		require.NoError(t, rec.Dispatch(fillKernel(), rec.Groups(n, 256), []uint32{U32(n), F32(float32(v))}, x))
	}
	for i := 0; i < 10; i++ {
		fill(i)
	}
	ten, err := rec.Run()
	require.NoError(t, err)
	reps := int(6*time.Second/(ten/10)) + 1
	for i := 0; i < reps; i++ {
		fill(i)
	}
	start := time.Now()
	require.NoError(t, rec.Submit())
	got, err := dev.Read(x)
	require.NoError(t, err)
	t.Logf("%d fills of 16 MiB, read back after %v", reps, time.Since(start))
	require.Equal(t, float32(reps-1), got[n-1])
}
