package nn

import "github.com/webdino/webdino/gpu"

// topkWG is the number of invocations that scan one row.
const topkWG = 64

// MaxTopK bounds k: every invocation keeps k candidates in registers and the
// workgroup holds topkWG*k of them (8 KiB of workgroup memory at k = 16..64).
const MaxTopK = 64

// TopK records, for every row of scores [R, N], the k largest values
// (descending) into values [R, k] and their column indices plus indexBase
// into indices [R, k] (a u32 tensor). indexBase lets a search over a pool in
// shards report pool-wide indices. Rows with fewer than k columns pad with
// -3.4e38 and index 0xffffffff.
func TopK(rec *gpu.Recorder, values, indices, scores *gpu.Tensor, k, indexBase int) error {
	const op = "topk"
	if err := notNil(rec, op, []string{"values", "indices", "scores"}, values, indices, scores); err != nil {
		return err
	}
	if k < 1 || k > MaxTopK {
		return shapeErr(rec, op, "k = %d, want 1..%d", k, MaxTopK)
	}
	N := scores.Dim(-1)
	R := scores.Len() / N
	if values.Len() != R*k || indices.Len() != R*k {
		return shapeErr(rec, op, "scores %s, k %d: values %s and indices %s must hold %d x %d", scores, k, values, indices, R, k)
	}
	groups := [3]uint32{uint32(min(R, 65535)), uint32((R + 65534) / 65535), 1}
	kern := gpu.Kernel{Name: "topk", Data: struct{ K, WG int }{k, topkWG}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	return rec.Dispatch(kern, groups, []uint32{gpu.U32(R), gpu.U32(N), gpu.U32(indexBase)}, scores, values, indices)
}
