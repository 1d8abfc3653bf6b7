package dist

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"time"
)

const (
	// bufSize is the size of the buffered reader and writer of each ring
	// connection, and so of the blocks floats are converted in.
	bufSize = 1 << 20
	// maxBlob bounds the blob lengths a peer may announce, so that a
	// corrupt or hostile header cannot make a rank allocate gigabytes.
	maxBlob = 1 << 30
)

// op identifies a collective in the header that starts it.
type op uint32

const (
	opBarrier op = iota + 1
	opSum
	opMax
	opGather
)

func (o op) String() string {
	switch o {
	case opBarrier:
		return "Barrier"
	case opSum:
		return "AllReduceSum"
	case opMax:
		return "AllReduceMax"
	case opGather:
		return "AllGather"
	}
	return fmt.Sprintf("op(%d)", uint32(o))
}

// header starts every collective; each rank sees every other rank's.
type header struct {
	Op op
	N  uint64 // length of the slice or blob
}

// Group is one rank's membership of a process group. It is not safe for
// concurrent collectives, but Close may be called at any time, from any
// goroutine, to abort one.
type Group struct {
	rank, size int
	timeout    time.Duration
	next, prev net.Conn      // ring links to rank+1 and from rank-1
	w          *bufio.Writer // on next
	r          *bufio.Reader // on prev
	err        error         // the I/O error that closed the group

	closeOnce sync.Once
	closeErr  error
}

// Rank returns this process's rank in [0, Size).
func (g *Group) Rank() int { return g.rank }

// Size returns the number of ranks.
func (g *Group) Size() int { return g.size }

// AllReduceSum replaces x on every rank by the element-wise sum over
// ranks. Every rank must pass the same length (a mismatch is an error
// naming both lengths). The result is bit-identical on every rank, and
// the same from run to run for the same Size.
func (g *Group) AllReduceSum(x []float32) error { return g.allReduce(opSum, x, add) }

// AllReduceMax replaces x on every rank by the element-wise maximum over
// ranks; a NaN on any rank makes the element NaN.
func (g *Group) AllReduceMax(x []float32) error { return g.allReduce(opMax, x, maximum) }

// AllGather returns every rank's blob, indexed by rank; blobs may differ
// in length. The entry for this rank is b itself.
func (g *Group) AllGather(b []byte) ([][]byte, error) {
	if g.size == 1 {
		return [][]byte{b}, nil
	}
	hs, err := g.begin(header{Op: opGather, N: uint64(len(b))})
	if err != nil {
		return nil, err
	}
	for i, h := range hs {
		if h.N > maxBlob {
			return nil, fmt.Errorf("dist: rank %d: AllGather: rank %d's blob of %d bytes exceeds the %d-byte limit", g.rank, i, h.N, maxBlob)
		}
	}
	out := make([][]byte, g.size)
	out[g.rank] = b
	// In step s, pass on the blob received in step s-1 (our own first).
	for s := range g.size - 1 {
		send, in := out[g.ring(g.rank-s)], g.ring(g.rank-s-1)
		out[in] = make([]byte, hs[in].N)
		if err := g.exchange(
			func() error { return g.sendBytes(send) },
			func() error { return g.recvBytes(out[in]) },
		); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Barrier returns when every rank has reached it.
func (g *Group) Barrier() error {
	if g.size == 1 {
		return nil
	}
	_, err := g.begin(header{Op: opBarrier})
	return err
}

// Close closes every connection; a peer blocked in a collective gets an
// error. It is safe to call more than once.
func (g *Group) Close() error {
	if g.next == nil {
		return nil
	}
	g.closeOnce.Do(func() { g.closeErr = errors.Join(g.next.Close(), g.prev.Close()) })
	return g.closeErr
}

func (g *Group) allReduce(o op, x []float32, combine func(dst []float32, src []byte)) error {
	if g.size == 1 {
		return nil
	}
	hs, err := g.begin(header{Op: o, N: uint64(len(x))})
	if err != nil {
		return err
	}
	for i, h := range hs {
		if h.N != uint64(len(x)) {
			return fmt.Errorf("dist: rank %d: %v of %d floats, but rank %d passed %d", g.rank, o, len(x), i, h.N)
		}
	}
	chunk := func(i int) []float32 {
		i = g.ring(i)
		return x[i*len(x)/g.size : (i+1)*len(x)/g.size]
	}
	// Reduce-scatter: pass on the chunk folded in the previous step;
	// afterwards this rank holds chunk rank+1 reduced over all ranks.
	for s := range g.size - 1 {
		if err := g.exchangeFloats(chunk(g.rank-s), chunk(g.rank-s-1), combine); err != nil {
			return err
		}
	}
	// All-gather: circulate the reduced chunks, overwriting partial ones.
	for s := range g.size - 1 {
		if err := g.exchangeFloats(chunk(g.rank+1-s), chunk(g.rank-s), store); err != nil {
			return err
		}
	}
	return nil
}

// begin starts a collective: it arms the deadlines and passes every
// rank's header around the ring, which makes it a barrier as well. The
// headers are checked to agree on the operation, so a mismatch is
// reported on every rank and the streams stay in step.
func (g *Group) begin(h header) ([]header, error) {
	if g.err != nil {
		return nil, g.err
	}
	if g.timeout > 0 {
		t := time.Now().Add(g.timeout)
		if err := errors.Join(g.next.SetWriteDeadline(t), g.prev.SetReadDeadline(t)); err != nil {
			return nil, g.fail(fmt.Errorf("dist: rank %d: set deadline: %w", g.rank, err))
		}
	}
	hs := make([]header, g.size)
	hs[g.rank] = h
	for s := range g.size - 1 {
		out, _ := binary.Append(nil, binary.LittleEndian, hs[g.ring(g.rank-s)])
		if err := g.sendBytes(out); err != nil {
			return nil, g.fail(err)
		}
		in := &hs[g.ring(g.rank-s-1)]
		if err := binary.Read(g.r, binary.LittleEndian, in); err != nil {
			return nil, g.fail(g.recvErr(err))
		}
	}
	for i, o := range hs {
		if o.Op != h.Op {
			return nil, fmt.Errorf("dist: rank %d: called %v, but rank %d called %v", g.rank, h.Op, i, o.Op)
		}
	}
	return hs, nil
}

// exchangeFloats sends out to the next rank while receiving the previous
// rank's values for in, which combine folds into in block by block.
func (g *Group) exchangeFloats(out, in []float32, combine func(dst []float32, src []byte)) error {
	return g.exchange(
		func() error { return g.sendFloats(out) },
		func() error { return g.recvFloats(in, combine) })
}

// exchange runs send in a goroutine while recv runs, so that two ranks
// both sending more than their socket buffers hold cannot deadlock.
// Whichever fails first closes the group to unblock the other.
func (g *Group) exchange(send, recv func() error) error {
	errc := make(chan error, 1)
	go func() {
		err := send()
		if err != nil {
			g.Close()
		}
		errc <- err
	}()
	rerr := recv()
	if rerr != nil {
		g.Close()
	}
	serr := <-errc
	switch {
	case rerr != nil && (serr == nil || !errors.Is(rerr, net.ErrClosed)):
		return g.fail(rerr)
	case serr != nil:
		return g.fail(serr)
	}
	return nil
}

func (g *Group) sendFloats(x []float32) error {
	for len(x) > 0 {
		if g.w.Available() < 4 {
			if err := g.w.Flush(); err != nil {
				return g.sendErr(err)
			}
		}
		b := g.w.AvailableBuffer()
		n := min(len(x), cap(b)/4)
		b = b[:4*n]
		for i, v := range x[:n] {
			binary.LittleEndian.PutUint32(b[4*i:4*i+4], math.Float32bits(v))
		}
		if _, err := g.w.Write(b); err != nil {
			return g.sendErr(err)
		}
		x = x[n:]
	}
	if err := g.w.Flush(); err != nil {
		return g.sendErr(err)
	}
	return nil
}

func (g *Group) sendBytes(b []byte) error {
	if _, err := g.w.Write(b); err != nil {
		return g.sendErr(err)
	}
	if err := g.w.Flush(); err != nil {
		return g.sendErr(err)
	}
	return nil
}

func (g *Group) sendErr(err error) error {
	return fmt.Errorf("dist: rank %d: send to rank %d: %w", g.rank, g.ring(g.rank+1), err)
}

// recvFloats folds the next len(x) floats from the previous rank into x
// with combine, a buffer at a time.
func (g *Group) recvFloats(x []float32, combine func(dst []float32, src []byte)) error {
	for len(x) > 0 {
		b, err := g.r.Peek(4 * min(len(x), bufSize/4))
		if err != nil {
			return g.recvErr(err)
		}
		n := len(b) / 4
		combine(x[:n], b)
		g.r.Discard(len(b))
		x = x[n:]
	}
	return nil
}

func (g *Group) recvBytes(b []byte) error {
	if _, err := io.ReadFull(g.r, b); err != nil {
		return g.recvErr(err)
	}
	return nil
}

func (g *Group) recvErr(err error) error {
	return fmt.Errorf("dist: rank %d: recv from rank %d: %w", g.rank, g.ring(g.rank-1), err)
}

// fail records err as the reason the group is unusable and closes it:
// the streams are out of step, and closing spreads the failure to the
// neighbours, and from them around the ring, instead of leaving them
// blocked.
func (g *Group) fail(err error) error {
	if g.err == nil {
		g.err = err
		g.Close()
	}
	return err
}

// ring maps i in [-size, 2*size) to a rank.
func (g *Group) ring(i int) int { return (i + g.size) % g.size }

func add(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i : 4*i+4]))
	}
}

func maximum(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	for i, d := range dst {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(src[4*i : 4*i+4])); v > d || v != v {
			dst[i] = v
		}
	}
}

func store(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i : 4*i+4]))
	}
}
