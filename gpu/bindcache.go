package gpu

import (
	"fmt"
	"strings"

	"github.com/cogentcore/webgpu/wgpu"
)

// maxBindGroups bounds the bind-group cache; past it a submission flushes
// what it has encoded and the cache starts over (Recorder.submit). wgpu-native
// on lavapipe crashed in CreateBindGroup at about 64900 live groups (a
// ViT-S/14 training step with local crops, when each dispatch had a group of
// its own), so the bound stays well under it.
const maxBindGroups = 1 << 15

// bindCache keeps the bind groups of earlier submissions: a training step
// records the same dispatches on the same buffers every time, and creating
// thousands of bind groups per step was CPU time the GPU waited for. A group
// is dropped when a buffer it binds is released, and all of them when the
// parameter arena is replaced. Guarded by Device.mu.
type bindCache struct {
	groups   map[string]*wgpu.BindGroup
	byBuffer map[*Buffer][]string // keys of the groups that bind the buffer
}

// bindKey names a bind group: its layout, the parameter arena and each
// bound view. The parameters' slot and the offsets of Uniform views are
// dynamic offsets (dynamicOffsets), not part of the group: a recording
// binds each slot once, and matmul_bcast a window of A per dispatch, so
// groups that included them were one per dispatch, tens of thousands for
// a ViT-L forward, more than the cache holds: every forward created them
// all again (and lavapipe crashed on the churn, docs/lavapipe.md).
func bindKey(o *op, arena *wgpu.Buffer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%p|%p", o.k.layout, arena)
	for i, t := range o.bufs {
		if o.k.access[i] == Uniform {
			fmt.Fprintf(&b, "|%p:%d", t.Buf, t.Bytes())
		} else {
			fmt.Fprintf(&b, "|%p+%d:%d", t.Buf, t.Off, t.Bytes())
		}
	}
	return b.String()
}

// dynamicOffsets are o's dynamic offsets in binding order: its parameter
// slot, then the offset of each Uniform view.
func dynamicOffsets(o *op) []uint32 {
	offs := []uint32{uint32(o.slot) * MaxParams * 4}
	for i, t := range o.bufs {
		if o.k.access[i] == Uniform {
			offs = append(offs, uint32(t.Off))
		}
	}
	return offs
}

// bindGroup returns o's bind group on the parameter arena, from the cache
// or created and cached. Its uniform bindings start at offset 0: the
// dispatch adds dynamicOffsets.
func (d *Device) bindGroup(o *op, arena *wgpu.Buffer) (*wgpu.BindGroup, error) {
	key := bindKey(o, arena)
	d.mu.Lock()
	defer d.mu.Unlock()
	if g, ok := d.binds.groups[key]; ok {
		return g, nil
	}
	entries := []wgpu.BindGroupEntry{{Binding: 0, Buffer: arena, Offset: 0, Size: MaxParams * 4}}
	for i, t := range o.bufs {
		off := t.Off
		if o.k.access[i] == Uniform {
			off = 0
		}
		entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(i + 1), Buffer: t.Buf.buf, Offset: off, Size: t.Bytes()})
	}
	g, err := d.dev.CreateBindGroup(&wgpu.BindGroupDescriptor{Layout: o.k.layout, Entries: entries})
	if err != nil {
		return nil, err
	}
	if d.binds.groups == nil {
		d.binds.reset()
	}
	d.binds.groups[key] = g
	for _, t := range o.bufs {
		d.binds.byBuffer[t.Buf] = append(d.binds.byBuffer[t.Buf], key)
	}
	return g, nil
}

// bindsFull reports whether the cache holds maxBindGroups groups. Its
// groups may be set in the pass being encoded, which must end and be
// submitted before they are released (wgpu-native panics with "BindGroup
// does not exist" otherwise), so only Recorder.submit starts it over.
func (d *Device) bindsFull() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.binds.groups) >= maxBindGroups
}

// resetBinds releases every cached group.
func (d *Device) resetBinds() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.binds.reset()
}

// dropBuffer releases the cached groups that bind b.
func (c *bindCache) dropBuffer(b *Buffer) {
	for _, key := range c.byBuffer[b] {
		if g, ok := c.groups[key]; ok {
			g.Release()
			delete(c.groups, key)
		}
	}
	delete(c.byBuffer, b)
}

// reset releases every cached group.
func (c *bindCache) reset() {
	for _, g := range c.groups {
		g.Release()
	}
	c.groups = map[string]*wgpu.BindGroup{}
	c.byBuffer = map[*Buffer][]string{}
}
