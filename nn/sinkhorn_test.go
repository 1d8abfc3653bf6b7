//go:build !js

package nn

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/dist"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn/ref"
)

// sinkhorn runs SinkhornKnopp on logits [B, K] and returns q and the time of
// a second, warm run.
func sinkhorn(t *testing.T, l32 []float32, B, K int, temp float32, iters int) ([]float64, time.Duration) {
	t.Helper()
	logits, q, scratch := upload(t, l32, B, K), zeros(t, B, K), zeros(t, SinkhornScratchLen(B, K))
	rec := dev.Record()
	require.NoError(t, SinkhornKnopp(rec, q, logits, scratch, temp, iters))
	run(t, rec)
	require.NoError(t, SinkhornKnopp(rec, q, logits, scratch, temp, iters))
	d, err := rec.Run()
	require.NoError(t, err)
	return read(t, q), d
}

func TestSinkhornKnopp(t *testing.T) {
	rng := rand.New(rand.NewPCG(71, 72))
	// {B, K}: one sample, one prototype, odd shapes on both sides of the
	// row-kernel layout switch at K = 4096, and the recipe's K = 65536 with a
	// per-device batch of 64, which is also timed.
	for _, s := range [][2]int{{1, 1}, {1, 7}, {2, 1}, {3, 5}, {7, 4099}, {33, 257}, {64, 65536}} {
		B, K := s[0], s[1]
		t.Run(fmt.Sprintf("%dx%d", B, K), func(t *testing.T) {
			// Teacher logits are cosines times the head's norm g (1 at init);
			// std 1 gives spreads of ~10, (t - max)/T of ~250 at T = 0.04.
			l64, l32 := randn(rng, B*K, 1)
			got, d := sinkhorn(t, l32, B, K, 0.04, 3)
			if B*K > 1<<20 {
				t.Logf("SinkhornKnopp %dx%d, 3 iterations, on %s: %v", B, K, dev.Info().Type, d)
			}
			// (t - m)/T is rounded to f32 at magnitudes up to ~250: a relative
			// error of up to 250 * 6e-8 = 1.5e-5 in each exp, and f32 sums over
			// K terms; entries below ~1e-38 flush to 0 where the reference
			// keeps them, which atol covers.
			requireClose(t, ref.SinkhornKnopp(l64, B, K, 0.04, 3), got, 1e-12, 4e-5, "q")
			for b := 0; b < B; b++ {
				var s float64
				for _, v := range got[b*K : (b+1)*K] {
					s += v
				}
				require.InDelta(t, 1, s, 1e-5, "row %d sums to %g", b, s)
			}
		})
	}
}

// The GPU layouts of the per-sample sweep (32 or 256 lanes per row) run on
// lavapipe too.
func TestSinkhornKnoppLayouts(t *testing.T) {
	rng := rand.New(rand.NewPCG(75, 76))
	const B, K = 5, 4101
	l64, l32 := randn(rng, B*K, 1)
	want := ref.SinkhornKnopp(l64, B, K, 0.07, 3)
	for _, lay := range [][2]int{{256, 32}, {256, 256}} {
		rowLayoutOverride = &lay
		got, _ := sinkhorn(t, l32, B, K, 0.07, 3)
		rowLayoutOverride = nil
		// As in TestSinkhornKnopp, at T = 0.07.
		requireClose(t, want, got, 1e-12, 4e-5, fmt.Sprint(lay))
	}
}

// Per-prototype shifts of the logits cancel in the first prototype
// normalisation, while per-sample shifts do not: so the kernel's column max
// is exact, and a row max would not be.
func TestSinkhornKnoppShifts(t *testing.T) {
	rng := rand.New(rand.NewPCG(73, 74))
	const B, K, T = 4, 9, 0.07
	l, _ := randn(rng, B*K, 1)
	want := ref.SinkhornKnopp(l, B, K, T, 3)
	perK, perB := append([]float64(nil), l...), append([]float64(nil), l...)
	for b := 0; b < B; b++ {
		for k := 0; k < K; k++ {
			perK[b*K+k] += 0.3 * float64(k)
			perB[b*K+k] += 0.3 * float64(b)
		}
	}
	requireClose(t, want, ref.SinkhornKnopp(perK, B, K, T, 3), 1e-15, 1e-12, "shift per prototype")
	diff := 0.0
	for i, v := range ref.SinkhornKnopp(perB, B, K, T, 3) {
		diff = math.Max(diff, math.Abs(v-want[i]))
	}
	require.Greater(t, diff, 1e-3, "a shift per sample changes the result")

	// A prototype 40 below the others: with a global max its column would
	// underflow to 0 (0/0); the column max keeps it exact.
	// Logits on a grid of 2^-12, so subtracting 40 is exact in f32.
	l64, l32 := randn(rng, B*K, 1)
	for i := range l32 {
		l32[i] = float32(math.Round(l64[i]*4096) / 4096)
		l64[i] = float64(l32[i])
	}
	for b := 0; b < B; b++ {
		l32[b*K+3] -= 40
	}
	got, _ := sinkhorn(t, l32, B, K, 0.04, 3)
	// As in TestSinkhornKnopp.
	requireClose(t, ref.SinkhornKnopp(l64, B, K, 0.04, 3), got, 1e-12, 4e-5, "low prototype")
}

func TestSinkhornKnoppBadInputs(t *testing.T) {
	err := SinkhornKnopp(dev.Record(), zeros(t, 3, 6), zeros(t, 3, 5), zeros(t, 20), 0.04, 3)
	require.ErrorContains(t, err, "sinkhorn_knopp: logits [3x5] -> q [3x6]: shapes differ")
	err = SinkhornKnopp(dev.Record(), zeros(t, 3, 5), zeros(t, 3, 5), zeros(t, 7), 0.04, 3)
	require.ErrorContains(t, err, "sinkhorn_knopp: scratch [7]: want at least 8 elements for 3 x 5 logits")
	err = SinkhornKnopp(dev.Record(), zeros(t, 3, 5), zeros(t, 3, 5), zeros(t, 8), -1, 3)
	require.ErrorContains(t, err, "sinkhorn_knopp: temperature -1 must be positive")
	err = SinkhornKnopp(dev.Record(), zeros(t, 3, 5), zeros(t, 3, 5), zeros(t, 8), 0.04, 0)
	require.ErrorContains(t, err, "sinkhorn_knopp: 0 iterations, want at least 1")
	buf := zeros(t, 64+15)
	q, _ := buf.View(0, 3, 5)
	s, _ := buf.View(64, 8)
	rec := dev.Record()
	err = SinkhornKnopp(rec, q, zeros(t, 3, 5), s, 0.04, 3)
	require.ErrorContains(t, err, "share a buffer and one is written")
}

// Two replicas holding 3 and 4 of 7 samples (each on its own device, joined
// over loopback TCP) give the rows that one device gives for all 7.
func TestSinkhornKnoppAcross(t *testing.T) {
	rng := rand.New(rand.NewPCG(77, 78))
	const K = 257
	split := []int{3, 4}
	l64, l32 := randn(rng, 7*K, 1)
	// Prototype 5 lies 40 below the others on the second replica only: its
	// column max must come from the first.
	for b := 3; b < 7; b++ {
		l32[b*K+5] = float32(math.Round(l64[b*K+5]*4096)/4096 - 40)
		l64[b*K+5] = float64(l32[b*K+5])
	}
	second, err := gpu.Open()
	require.NoError(t, err)
	defer second.Close()
	addr := freeAddr(t)
	got := make([][]float32, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r, d := range []*gpu.Device{dev, second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = func() error {
				g, err := dist.Join(context.Background(), dist.Options{Rank: r, Size: 2, Addr: addr, Timeout: time.Minute})
				if err != nil {
					return err
				}
				defer g.Close()
				from, B := 3*r, split[r]
				logits, err1 := d.Upload("logits", l32[from*K:(from+B)*K], B, K)
				q, err2 := d.NewTensor("q", B, K)
				scratch, err3 := d.NewTensor("scratch", SinkhornScratchLen(B, K))
				if err := errors.Join(err1, err2, err3); err != nil {
					return err
				}
				defer func() { logits.Buf.Release(); q.Buf.Release(); scratch.Buf.Release() }()
				if err := SinkhornKnoppAcross(d, g, q, logits, scratch, 0.04, 3); err != nil {
					return err
				}
				got[r], err = d.Read(q)
				return err
			}()
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	all := make([]float64, 0, 7*K)
	for _, v := range append(got[0], got[1]...) {
		all = append(all, float64(v))
	}
	// As in TestSinkhornKnopp.
	requireClose(t, ref.SinkhornKnopp(l64, 7, K, 0.04, 3), all, 1e-12, 4e-5, "q across replicas")
}

// freeAddr is a loopback address with a port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}
