package dist

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"time"
)

// magic opens every rendezvous and ring handshake: "WDD" and the
// protocol version, 1.
const magic = 0x57444401

// Options configure Join.
type Options struct {
	Rank, Size int // this process's rank in [0, Size), Size >= 1
	// Addr is rank 0's rendezvous address "host:port": rank 0 listens
	// there, the others dial it, retrying until the context ends since
	// rank 0 may start later.
	Addr string
	// Listen is the address this rank's ring listener binds to; by
	// default port 0 on the local address this rank reached rank 0 from,
	// which the other machines can reach too. An unspecified host (":0")
	// is advertised as that address as well. Rank 0 has no ring listener.
	Listen string
	// Timeout is the I/O deadline of each collective; 0 means none, and
	// a dead peer then shows up as a closed connection.
	Timeout time.Duration
}

// hello is what a rank tells rank 0, followed by its ring address, and
// what the two ends of a ring connection tell each other.
type hello struct {
	Magic, Rank, Size uint32
}

// peer is a rank that has connected to rank 0.
type peer struct {
	c    net.Conn
	h    hello
	addr string // its ring listener's
}

// Join forms the group: it returns when all Size ranks are connected, or
// when ctx ends or an error occurs. With Size 1 it uses no network.
func Join(ctx context.Context, o Options) (*Group, error) {
	if o.Size < 1 || o.Rank < 0 || o.Rank >= o.Size {
		return nil, fmt.Errorf("dist: rank %d out of range [0, %d)", o.Rank, o.Size)
	}
	g := &Group{rank: o.Rank, size: o.Size, timeout: o.Timeout}
	if o.Size == 1 {
		return g, nil
	}
	var cs closers
	stop := context.AfterFunc(ctx, func() { cs.closeExcept() })
	err := g.connect(ctx, o, &cs)
	if stop() && err == nil {
		cs.closeExcept(g.next, g.prev)
		return g, nil
	}
	cs.closeExcept()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("dist: rank %d: join: %w", o.Rank, context.Cause(ctx))
	}
	return nil, err
}

// connect runs the rendezvous, links the ring and ends with a barrier,
// so that every rank's links are up when Join returns. It adds every
// listener and connection to cs, which closes them if ctx ends.
func (g *Group) connect(ctx context.Context, o Options, cs *closers) error {
	var addrs []string
	if g.rank == 0 {
		ln, err := net.Listen("tcp", o.Addr)
		if err != nil {
			return fmt.Errorf("dist: rank 0: join: %w", err)
		}
		cs.add(ln)
		peers, err := g.await(ln, cs)
		if err != nil {
			return err
		}
		reply := []byte{0}
		addrs = make([]string, g.size)
		for _, p := range peers[1:] {
			addrs[p.h.Rank] = p.addr
			reply = appendString(reply, p.addr)
		}
		for _, p := range peers[1:] {
			if _, err := p.c.Write(reply); err != nil {
				return fmt.Errorf("dist: rank 0: join: send addresses to rank %d: %w", p.h.Rank, err)
			}
		}
		// Rank N-1's rendezvous connection doubles as its ring link to 0.
		g.prev = peers[g.size-1].c
	} else {
		c, err := dialRetry(ctx, o.Addr)
		if err != nil {
			return fmt.Errorf("dist: rank %d: join: dial rank 0 at %s: %w", g.rank, o.Addr, err)
		}
		cs.add(c)
		local := c.LocalAddr().(*net.TCPAddr)
		listen := o.Listen
		if listen == "" {
			listen = (&net.TCPAddr{IP: local.IP, Zone: local.Zone}).String()
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("dist: rank %d: join: ring listener: %w", g.rank, err)
		}
		cs.add(ln)
		adv := ln.Addr().(*net.TCPAddr)
		if adv.IP.IsUnspecified() {
			adv = &net.TCPAddr{IP: local.IP, Zone: local.Zone, Port: adv.Port}
		}
		msg, _ := binary.Append(nil, binary.LittleEndian, hello{magic, uint32(g.rank), uint32(g.size)})
		if _, err := c.Write(appendString(msg, adv.String())); err != nil {
			return fmt.Errorf("dist: rank %d: join: send to rank 0: %w", g.rank, err)
		}
		if addrs, err = g.readAddrs(c); err != nil {
			return err
		}
		if g.rank == g.size-1 {
			g.next = c
		}
		// Accept before dialing: rank 0, whose link from N-1 is already
		// there, dials first, and the handshakes run in a chain to N-1.
		if g.prev, err = ln.Accept(); err != nil {
			return fmt.Errorf("dist: rank %d: join: accept rank %d: %w", g.rank, g.rank-1, err)
		}
		cs.add(g.prev)
		if err := g.handshake(g.prev, g.rank-1); err != nil {
			return err
		}
	}
	if g.rank != g.size-1 {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addrs[g.rank+1])
		if err != nil {
			return fmt.Errorf("dist: rank %d: join: dial rank %d at %s: %w", g.rank, g.rank+1, addrs[g.rank+1], err)
		}
		cs.add(c)
		if err := g.handshake(c, g.rank+1); err != nil {
			return err
		}
		g.next = c
	}
	g.w = bufio.NewWriterSize(g.next, bufSize)
	g.r = bufio.NewReaderSize(g.prev, bufSize)
	return g.Barrier()
}

// await collects the hellos of ranks 1..Size-1 on rank 0, refusing (and
// failing on) a foreign protocol, a wrong Size, a rank out of range or a
// duplicate rank. It returns the peers indexed by rank.
func (g *Group) await(ln net.Listener, cs *closers) ([]*peer, error) {
	type result struct {
		p   *peer
		err error
	}
	results, done := make(chan result), make(chan struct{})
	defer close(done)
	report := func(r result) {
		select {
		case results <- r:
		case <-done:
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				report(result{err: fmt.Errorf("dist: rank 0: join: accept: %w", err)})
				return
			}
			cs.add(c)
			go func() {
				p, err := readHello(c)
				if err != nil {
					err = fmt.Errorf("dist: rank 0: join: hello from %s: %w", c.RemoteAddr(), err)
				}
				report(result{p, err})
			}()
		}
	}()
	peers := make([]*peer, g.size)
	for range g.size - 1 {
		r := <-results
		if r.err != nil {
			return nil, r.err
		}
		if err := g.admit(peers, r.p.h); err != nil {
			r.p.c.Write(appendString([]byte{1}, err.Error())) // best effort: tell the peer why
			return nil, fmt.Errorf("dist: rank 0: join: %s: %w", r.p.c.RemoteAddr(), err)
		}
		peers[r.p.h.Rank] = r.p
	}
	return peers, nil
}

func (g *Group) admit(peers []*peer, h hello) error {
	switch {
	case h.Magic != magic:
		return fmt.Errorf("protocol magic %#x, want %#x: not a dist peer, or another version", h.Magic, magic)
	case int(h.Size) != g.size:
		return fmt.Errorf("rank %d has size %d, but rank 0 has size %d", h.Rank, h.Size, g.size)
	case h.Rank == 0 || int(h.Rank) >= g.size:
		return fmt.Errorf("rank %d out of range [1, %d)", h.Rank, g.size)
	case peers[h.Rank] != nil:
		return fmt.Errorf("rank %d joined twice", h.Rank)
	}
	return nil
}

func readHello(c net.Conn) (*peer, error) {
	p := &peer{c: c}
	err := binary.Read(c, binary.LittleEndian, &p.h)
	if err == nil && p.h.Magic == magic { // a foreign peer may send nothing more
		p.addr, err = readString(c)
	}
	return p, err
}

// readAddrs reads rank 0's answer to this rank's hello: the ring
// addresses of all ranks, or why it was refused.
func (g *Group) readAddrs(c net.Conn) ([]string, error) {
	var ok [1]byte
	if _, err := io.ReadFull(c, ok[:]); err != nil {
		return nil, fmt.Errorf("dist: rank %d: join: recv from rank 0: %w", g.rank, err)
	}
	if ok[0] != 0 {
		why, err := readString(c)
		if err != nil {
			return nil, fmt.Errorf("dist: rank %d: join: refused by rank 0: %w", g.rank, err)
		}
		return nil, fmt.Errorf("dist: rank %d: join: refused by rank 0: %s", g.rank, why)
	}
	addrs := make([]string, g.size)
	for i := range addrs[1:] {
		var err error
		if addrs[i+1], err = readString(c); err != nil {
			return nil, fmt.Errorf("dist: rank %d: join: recv addresses from rank 0: %w", g.rank, err)
		}
	}
	return addrs, nil
}

// handshake exchanges hellos over a new ring connection, checking that
// the peer is rank want of a group of the same size.
func (g *Group) handshake(c net.Conn, want int) error {
	msg, _ := binary.Append(nil, binary.LittleEndian, hello{magic, uint32(g.rank), uint32(g.size)})
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("dist: rank %d: join: send to rank %d: %w", g.rank, want, err)
	}
	var h hello
	if err := binary.Read(c, binary.LittleEndian, &h); err != nil {
		return fmt.Errorf("dist: rank %d: join: recv from rank %d: %w", g.rank, want, err)
	}
	if h != (hello{magic, uint32(want), uint32(g.size)}) {
		return fmt.Errorf("dist: rank %d: join: ring peer %s says it is rank %d of %d (magic %#x), want rank %d of %d",
			g.rank, c.RemoteAddr(), h.Rank, h.Size, h.Magic, want, g.size)
	}
	return nil
}

// dialRetry dials addr until it answers or ctx ends, backing off up to a
// second between tries.
func dialRetry(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

func appendString(b []byte, s string) []byte {
	s = s[:min(len(s), math.MaxUint16)]
	return append(binary.LittleEndian.AppendUint16(b, uint16(len(s))), s...)
}

func readString(r io.Reader) (string, error) {
	var n uint16
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		return "", err
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return string(b), err
}

// closers holds the listeners and connections of a Join in progress, so
// that they can be closed when its context ends, unblocking whatever is
// waiting on them, and when it is over.
type closers struct {
	mu   sync.Mutex
	done bool
	cs   []io.Closer
}

// add holds c, or closes it right away if Join is already over.
func (cs *closers) add(c io.Closer) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.done {
		c.Close()
		return
	}
	cs.cs = append(cs.cs, c)
}

// closeExcept closes everything held but keep, now and from now on.
func (cs *closers) closeExcept(keep ...io.Closer) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.done = true
	for _, c := range cs.cs {
		if !slices.Contains(keep, c) {
			c.Close()
		}
	}
	cs.cs = nil
}
