//go:build wip

package nn

import "github.com/webdino/webdino/gpu"

// Attention kernel shape: each workgroup holds attWG rows (queries, or keys in
// the dk/dv pass) of one (batch, head) and walks the other side in blocks of
// attBlk rows. Small workgroups waste little on odd T (257 = 16*16 + 1).
const (
	attWG  = 16
	attBlk = 8
	// attMaxDh bounds the per-invocation register rows (4 of them in the
	// dk/dv pass).
	attMaxDh = 128
)

// attnShape is the checked geometry of one attention call.
type attnShape struct{ B, T, H, D, Dh int }

// attnCheck validates qkv [B, T, 3*D] against heads and returns the shape.
func attnCheck(rec *gpu.Recorder, op string, qkv *gpu.Tensor, heads int) (attnShape, error) {
	if len(qkv.Shape) != 3 || qkv.Dim(2)%3 != 0 {
		return attnShape{}, shapeErr(rec, op, "qkv %s: want [B, T, 3*D]", qkv)
	}
	s := attnShape{B: qkv.Dim(0), T: qkv.Dim(1), H: heads, D: qkv.Dim(2) / 3}
	if heads <= 0 || s.D%heads != 0 {
		return s, shapeErr(rec, op, "qkv %s: D = %d is not divisible by %d heads", qkv, s.D, heads)
	}
	s.Dh = s.D / heads
	if s.Dh%4 != 0 || s.Dh > attMaxDh {
		return s, shapeErr(rec, op, "qkv %s with %d heads: head size %d unsupported (want a multiple of 4 up to %d)",
			qkv, heads, s.Dh, attMaxDh)
	}
	return s, nil
}

// attnShapeIs reports whether t has exactly the given shape.
func attnShapeIs(t *gpu.Tensor, shape ...int) bool {
	if len(t.Shape) != len(shape) {
		return false
	}
	for i, v := range shape {
		if t.Shape[i] != v {
			return false
		}
	}
	return true
}

func (s attnShape) data() any {
	return struct{ WG, DV, BLK int }{attWG, s.Dh / 4, attBlk}
}

func (s attnShape) params(scale float32) []uint32 {
	return []uint32{gpu.U32(s.T), gpu.U32(s.H), gpu.U32(s.D / 4), gpu.F32(scale)}
}

// rowGroups is the grid of the per-row kernels: (row blocks, heads, batch).
func (s attnShape) rowGroups() [3]uint32 {
	return [3]uint32{uint32((s.T + attWG - 1) / attWG), uint32(s.H), uint32(s.B)}
}

// Attention records multi-head self-attention without mask,
// out = softmax(scale q k^T) v per (batch, head), with heads concatenated:
// qkv [B, T, 3*D] is the fused qkv Linear's output (q, k, v each split into
// heads of Dh = D/heads columns), out is [B, T, D] (what the projection
// consumes) and lse [B, heads, T] receives each row's log-sum-exp of the
// scaled scores, which AttentionBackward needs. scale is normally Dh^-0.5.
//
// Flash-attention style: one pass of an online softmax over key blocks, so
// no T x T score matrix is ever stored; the extra memory is lse, O(B*H*T).
// Head sizes that are multiples of 4 up to 128 are supported.
//
// attn0, if not nil, is [B, heads, T] and receives the softmax row of query
// 0 (the CLS token) for every head, for attention maps; it costs one extra
// O(B*H*T*Dh) pass.
func Attention(rec *gpu.Recorder, out, lse, attn0, qkv *gpu.Tensor, heads int, scale float32) error {
	const op = "attention"
	if err := notNil(rec, op, []string{"out", "lse", "qkv"}, out, lse, qkv); err != nil {
		return err
	}
	s, err := attnCheck(rec, op, qkv, heads)
	if err != nil {
		return err
	}
	if !attnShapeIs(out, s.B, s.T, s.D) {
		return shapeErr(rec, op, "qkv %s -> out %s: want [%d %d %d]", qkv, out, s.B, s.T, s.D)
	}
	if !attnShapeIs(lse, s.B, s.H, s.T) {
		return shapeErr(rec, op, "qkv %s, %d heads -> lse %s: want [%d %d %d]", qkv, heads, lse, s.B, s.H, s.T)
	}
	if attn0 != nil && !attnShapeIs(attn0, s.B, s.H, s.T) {
		return shapeErr(rec, op, "qkv %s, %d heads -> attn0 %s: want [%d %d %d]", qkv, heads, attn0, s.B, s.H, s.T)
	}
	k := gpu.Kernel{Name: "attention_fwd", Data: s.data(), Access: []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	if err := rec.Dispatch(k, s.rowGroups(), s.params(scale), qkv, out, lse); err != nil {
		return err
	}
	if attn0 == nil {
		return nil
	}
	k = gpu.Kernel{Name: "attention_probs0", Data: s.data(), Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, s.rowGroups(), s.params(scale), qkv, lse, attn0)
}

// AttentionBackward records the gradient of Attention: given qkv, the
// forward's out and lse, and dout = dL/dout [B, T, D], it writes dqkv
// [B, T, 3*D] in qkv's layout (ready for the qkv Linear's backward).
// delta [B, heads, T] is scratch for rowsum(dout * out).
//
// Probabilities are recomputed block by block from lse, so memory stays
// O(B*H*T). One pass over key blocks per query gives dq, another over query
// blocks per key gives dk and dv: every output row has one writer, so no
// atomics are needed.
func AttentionBackward(rec *gpu.Recorder, dqkv, delta, qkv, out, lse, dout *gpu.Tensor, heads int, scale float32) error {
	const op = "attention_backward"
	if err := notNil(rec, op, []string{"dqkv", "delta", "qkv", "out", "lse", "dout"}, dqkv, delta, qkv, out, lse, dout); err != nil {
		return err
	}
	s, err := attnCheck(rec, op, qkv, heads)
	if err != nil {
		return err
	}
	if !attnShapeIs(dqkv, qkv.Shape...) {
		return shapeErr(rec, op, "qkv %s -> dqkv %s: shapes differ", qkv, dqkv)
	}
	for _, t := range []struct {
		name string
		t    *gpu.Tensor
		want []int
	}{
		{"out", out, []int{s.B, s.T, s.D}}, {"dout", dout, []int{s.B, s.T, s.D}},
		{"lse", lse, []int{s.B, s.H, s.T}}, {"delta", delta, []int{s.B, s.H, s.T}},
	} {
		if !attnShapeIs(t.t, t.want...) {
			return shapeErr(rec, op, "qkv %s, %d heads: %s %s, want %v", qkv, heads, t.name, t.t, t.want)
		}
	}
	k := gpu.Kernel{Name: "attention_delta", Data: s.data(), Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}}
	if err := rec.Dispatch(k, rec.Groups(s.B*s.H*s.T, 64), s.params(scale), dout, out, delta); err != nil {
		return err
	}
	access := []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}
	for _, name := range []string{"attention_bwd_dq", "attention_bwd_dkv"} {
		k := gpu.Kernel{Name: name, Data: s.data(), Access: access}
		if err := rec.Dispatch(k, s.rowGroups(), s.params(scale), qkv, dout, lse, delta, dqkv); err != nil {
			return err
		}
	}
	return nil
}
