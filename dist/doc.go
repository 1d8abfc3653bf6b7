// Package dist is the transport for data-parallel training: a process
// group of Size ranks, one process per GPU, possibly on different
// machines, with collective operations on float32 slices and byte blobs.
//
// # Why TCP through host memory
//
// WebGPU gives a process no way to let one GPU read another's memory or
// to share buffers between devices, so there is no NCCL-style
// peer-to-peer path. Gradients are read back to host memory, exchanged
// over plain TCP between the processes, and uploaded again. This works
// the same between two GPUs in one machine (over loopback) and between
// machines.
//
// # Ring all-reduce
//
// The ranks form a ring: each one sends only to rank (r+1)%N and
// receives only from rank (r-1+N)%N. AllReduceSum and AllReduceMax
// split the buffer into N chunks of about len/N elements and run two
// phases of N-1 steps each. In the reduce-scatter phase every rank sends
// one chunk to its successor while receiving another from its
// predecessor and folding it into its own; after N-1 steps each rank
// holds one chunk fully reduced over all ranks. In the all-gather phase
// the reduced chunks travel once more around the ring and overwrite the
// partial ones. Each rank thus sends (and receives) 2(N-1)/N of the
// buffer, which for large N approaches twice the buffer whatever the
// number of ranks: the algorithm is bandwidth-optimal, and a step's send
// and receive run concurrently so every link is busy in both phases.
//
// # Determinism
//
// The chunk boundaries depend only on the length and N, and chunk c is
// always accumulated in the same order, starting at rank c and
// continuing around the ring, so a sum is reproducible from run to run
// for the same Size. The all-gather phase copies the final values rather
// than recomputing them, so every rank ends up with the same bits, and
// replicas of a model updated from the reduced gradients do not drift
// apart.
//
// Every collective starts by passing a small header (operation, length)
// around the ring, so that each rank sees every other rank's: a
// rank calling a different collective or passing a different length is
// reported, with both values, on every rank instead of corrupting data,
// and the group remains usable. An I/O error (a dead peer, an expired
// Options.Timeout) is fatal: the group closes itself, which spreads the
// failure around the ring instead of leaving the other ranks blocked.
//
// # Finding each other
//
// Rank 0 listens on Options.Addr. Every other rank opens its own ring
// listener (by default on the local address it used to reach rank 0, so
// that the address is reachable from the other machines too), dials
// rank 0, retrying until the context ends since rank 0 may start later,
// and announces its rank, Size and ring address. Once all ranks have
// arrived, rank 0 checks them (duplicate ranks, wrong Size, a foreign
// protocol) and sends everyone the list of ring addresses; each rank
// then dials its successor and accepts its predecessor. Rank N-1's
// connection to rank 0 doubles as the ring link from N-1 to 0, so rank 0
// needs no second listener.
package dist
