package dist

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// freeAddr returns a loopback address with a port the OS just handed out.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// joinAll runs Join for every entry of opts, starting rank 0 delay after
// the others, and returns the groups and errors in the order of opts.
func joinAll(ctx context.Context, opts []Options, delay time.Duration) ([]*Group, []error) {
	gs, errs := make([]*Group, len(opts)), make([]error, len(opts))
	var wg sync.WaitGroup
	for _, first := range []bool{true, false} {
		for i, o := range opts {
			if (o.Rank != 0) == first {
				wg.Go(func() { gs[i], errs[i] = Join(ctx, o) })
			}
		}
		time.Sleep(delay)
	}
	wg.Wait()
	return gs, errs
}

// group forms a group of size ranks on loopback, closed at the end of
// the test, starting rank 0 delay after the others.
func group(t *testing.T, size int, timeout, delay time.Duration) []*Group {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := freeAddr(t)
	opts := make([]Options, size)
	for r := range opts {
		opts[r] = Options{Rank: r, Size: size, Addr: addr, Timeout: timeout}
	}
	gs, errs := joinAll(ctx, opts, delay)
	for r, g := range gs {
		require.NoError(t, errs[r])
		require.Equal(t, r, g.Rank())
		require.Equal(t, size, g.Size())
		t.Cleanup(func() { g.Close() })
	}
	return gs
}

// each runs f on every rank at once and returns the errors by rank,
// failing the test if a rank hangs.
func each(t *testing.T, gs []*Group, f func(g *Group) error) []error {
	errs := make([]error, len(gs))
	var wg sync.WaitGroup
	for r, g := range gs {
		wg.Go(func() { errs[r] = f(g) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("collective hangs")
	}
	return errs
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

func TestSizeOne(t *testing.T) {
	g, err := Join(context.Background(), Options{Size: 1})
	require.NoError(t, err)
	require.Equal(t, 0, g.Rank())
	require.Equal(t, 1, g.Size())
	x := []float32{1, -2, float32(math.NaN())}
	require.NoError(t, g.AllReduceSum(x))
	require.NoError(t, g.AllReduceMax(x))
	require.Equal(t, []float32{1, -2}, x[:2])
	out, err := g.AllGather([]byte("a"))
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("a")}, out)
	require.NoError(t, g.Barrier())
	require.NoError(t, g.Close())
	require.NoError(t, g.Close())
}

func TestCollectives(t *testing.T) {
	for _, size := range []int{2, 3, 4} {
		gs := group(t, size, 0, 0)
		rng := rand.New(rand.NewPCG(1, uint64(size)))
		for _, n := range []int{0, 1, 2, 7, 1000, 100003} {
			in := make([][]float32, size)
			for r := range in {
				in[r] = make([]float32, n)
				for i := range in[r] {
					in[r][i] = float32(rng.NormFloat64() * math.Exp2(float64(rng.IntN(20)-10)))
				}
			}
			reduce := func(f func(*Group, []float32) error) [][]float32 {
				xs := make([][]float32, size)
				for r := range xs {
					xs[r] = slices.Clone(in[r])
				}
				noErrors(t, each(t, gs, func(g *Group) error { return f(g, xs[g.Rank()]) }))
				bits := func(x []float32) []uint32 {
					b := make([]uint32, len(x))
					for i, v := range x {
						b[i] = math.Float32bits(v)
					}
					return b
				}
				for r := range xs { // bit-identical on every rank
					require.Equal(t, bits(xs[0]), bits(xs[r]), "size %d n %d rank %d", size, n, r)
				}
				return xs
			}

			sum := reduce((*Group).AllReduceSum)
			require.Equal(t, sum, reduce((*Group).AllReduceSum), "not reproducible")
			mx := reduce((*Group).AllReduceMax)
			for i := range n {
				var want, abs float64
				wantMax := float32(math.Inf(-1))
				for r := range in {
					want += float64(in[r][i])
					abs += math.Abs(float64(in[r][i]))
					wantMax = max(wantMax, in[r][i])
				}
				// Summing size float32s in any order errs by at most
				// (size-1) ulps of the running sums, far below 1e-6.
				if math.Abs(float64(sum[0][i])-want) > 1e-6*abs || mx[0][i] != wantMax {
					t.Fatalf("size %d n %d element %d: sum %v, want %v; max %v, want %v", size, n, i, sum[0][i], want, mx[0][i], wantMax)
				}
			}
		}

		// NaN on one rank propagates; the others' maxima are ignored.
		xs := make([][]float32, size)
		for r := range xs {
			xs[r] = []float32{float32(r), float32(r)}
		}
		xs[size-1][0] = float32(math.NaN())
		noErrors(t, each(t, gs, func(g *Group) error { return g.AllReduceMax(xs[g.Rank()]) }))
		for _, x := range xs {
			require.True(t, math.IsNaN(float64(x[0])))
			require.Equal(t, float32(size-1), x[1])
		}

		// Distinct blobs, rank 0's empty.
		blob := func(r int) []byte { return bytes.Repeat([]byte{byte(r)}, 3*r) }
		outs := make([][][]byte, size)
		noErrors(t, each(t, gs, func(g *Group) (err error) {
			outs[g.Rank()], err = g.AllGather(blob(g.Rank()))
			return err
		}))
		for _, out := range outs {
			require.Len(t, out, size)
			for r := range out {
				require.Equal(t, blob(r), out[r])
			}
		}

		var arrived atomic.Int32
		noErrors(t, each(t, gs, func(g *Group) error {
			arrived.Add(1)
			if err := g.Barrier(); err != nil {
				return err
			}
			if n := arrived.Load(); n != int32(size) {
				return fmt.Errorf("rank %d left the barrier with %d of %d ranks arrived", g.Rank(), n, size)
			}
			return nil
		}))
	}
}

func TestMismatch(t *testing.T) {
	gs := group(t, 3, 0, 0)
	errs := each(t, gs, func(g *Group) error {
		return g.AllReduceSum(make([]float32, 4+g.Rank()/2)) // rank 2 passes 5
	})
	require.EqualError(t, errs[0], "dist: rank 0: AllReduceSum of 4 floats, but rank 2 passed 5")
	require.EqualError(t, errs[1], "dist: rank 1: AllReduceSum of 4 floats, but rank 2 passed 5")
	require.EqualError(t, errs[2], "dist: rank 2: AllReduceSum of 5 floats, but rank 0 passed 4")
	errs = each(t, gs, func(g *Group) error {
		if g.Rank() == 1 {
			return g.Barrier()
		}
		return g.AllReduceMax(nil)
	})
	for _, err := range errs {
		require.ErrorContains(t, err, "but rank")
	}

	// Mismatches are caught before any data moves: the group still works.
	x := [][]float32{{1}, {2}, {3}}
	noErrors(t, each(t, gs, func(g *Group) error { return g.AllReduceSum(x[g.Rank()]) }))
	require.Equal(t, [][]float32{{6}, {6}, {6}}, x)
}

func TestDeadRank(t *testing.T) {
	gs := group(t, 3, 0, 0)
	require.NoError(t, gs[1].Close())
	require.NoError(t, gs[1].Close())
	errs := each(t, []*Group{gs[0], gs[2]}, func(g *Group) error { return g.AllReduceSum(make([]float32, 1000)) })
	for _, err := range errs {
		require.Error(t, err)
	}
	// The group stays failed with the first error.
	require.Equal(t, errs[0], gs[0].Barrier())
}

func TestTimeout(t *testing.T) {
	gs := group(t, 2, 200*time.Millisecond, 0)
	start := time.Now()
	err := gs[0].AllReduceSum(make([]float32, 10)) // rank 1 never joins in
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.ErrorContains(t, err, "dist: rank 0: recv from rank 1")
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestJoinErrors(t *testing.T) {
	// A rank that has not reached rank 0 when it fails keeps dialing,
	// since rank 0 may start later, until its context ends: each case
	// has its own.
	ctx := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}

	_, err := Join(ctx(time.Second), Options{Rank: 2, Size: 2})
	require.ErrorContains(t, err, "out of range")

	addr := freeAddr(t)
	_, errs := joinAll(ctx(2*time.Second), []Options{{Rank: 0, Size: 3, Addr: addr}, {Rank: 1, Size: 3, Addr: addr}, {Rank: 2, Size: 4, Addr: addr}}, 0)
	require.ErrorContains(t, errs[0], "rank 2 has size 4, but rank 0 has size 3")
	require.Error(t, errs[1])
	require.ErrorContains(t, errs[2], "refused by rank 0: rank 2 has size 4")

	addr = freeAddr(t)
	_, errs = joinAll(ctx(2*time.Second), []Options{{Rank: 0, Size: 3, Addr: addr}, {Rank: 1, Size: 3, Addr: addr}, {Rank: 1, Size: 3, Addr: addr}}, 0)
	require.ErrorContains(t, errs[0], "rank 1 joined twice")
	require.Error(t, errs[1])
	require.Error(t, errs[2])

	// A client speaking another protocol.
	addr = freeAddr(t)
	errc := make(chan error)
	go func() {
		_, err := Join(ctx(2*time.Second), Options{Rank: 0, Size: 2, Addr: addr})
		errc <- err
	}()
	var c net.Conn
	require.Eventually(t, func() bool { c, err = net.Dial("tcp", addr); return err == nil }, time.Second, 10*time.Millisecond)
	defer c.Close()
	_, err = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	require.NoError(t, err)
	require.ErrorContains(t, <-errc, "not a dist peer")

	// Ranks that never come: cancelling returns promptly with ctx's error.
	addr = freeAddr(t)
	cctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, errs = joinAll(cctx, []Options{{Rank: 0, Size: 3, Addr: addr}, {Rank: 1, Size: 3, Addr: addr}}, 0)
	for _, err := range errs {
		require.ErrorIs(t, err, context.Canceled)
	}
	require.Less(t, time.Since(start), time.Second)

	// Nobody listening at all.
	_, err = Join(ctx(200*time.Millisecond), Options{Rank: 1, Size: 2, Addr: freeAddr(t)})
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestJoinRetries(t *testing.T) {
	// Ranks 1..3 dial in vain until rank 0 starts listening.
	gs := group(t, 4, 0, 300*time.Millisecond)
	x := [][]float32{{1, 2}, {3, 4}, {5, 6}, {7, 8}}
	noErrors(t, each(t, gs, func(g *Group) error { return g.AllReduceSum(x[g.Rank()]) }))
	for _, v := range x {
		require.Equal(t, []float32{16, 20}, v)
	}
}
