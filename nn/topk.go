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
	kern := gpu.Kernel{Name: "topk", Data: topkData{K: k, WG: topkWG}, Access: []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	return rec.Dispatch(kern, RowGroups(R), []uint32{gpu.U32(R), gpu.U32(N), gpu.U32(indexBase)}, scores, values, indices)
}

// topkData is the topk kernel's template data.
type topkData struct {
	K, WG int
	Table bool
}

// rowGroups is a grid of one workgroup per row, over two dimensions past
// 65535 rows.
func RowGroups(R int) [3]uint32 {
	return [3]uint32{uint32(min(R, 65535)), uint32((R + 65534) / 65535), 1}
}

// TopKRows is TopK over rows of their own lengths in one dispatch: rows
// [R, 4] (u32) gives for each row the offset of its scores in scores,
// their number n, and where its k results go in values and indices (which
// the caller sizes); the indices are columns of the row (0..n-1), and rows
// with fewer than k scores pad as TopK's. The table's entries are not
// checked against the buffers: a kernel reads and writes nothing outside
// its bindings, but a wrong entry gives wrong results.
func TopKRows(rec *gpu.Recorder, values, indices, scores, rows *gpu.Tensor, k int) error {
	const op = "topk_rows"
	if err := notNil(rec, op, []string{"values", "indices", "scores", "rows"}, values, indices, scores, rows); err != nil {
		return err
	}
	if k < 1 || k > MaxTopK {
		return shapeErr(rec, op, "k = %d, want 1..%d", k, MaxTopK)
	}
	if rows.Len()%4 != 0 || values.Len() != indices.Len() {
		return shapeErr(rec, op, "rows %s (4 values a row), values %s and indices %s (of one size)", rows, values, indices)
	}
	R := rows.Len() / 4
	kern := gpu.Kernel{Name: "topk", Data: topkData{K: k, WG: topkWG, Table: true},
		Access: []gpu.Access{gpu.Read, gpu.ReadWrite, gpu.ReadWrite, gpu.Read}}
	return rec.Dispatch(kern, RowGroups(R), []uint32{gpu.U32(R), 0, 0}, scores, values, indices, rows)
}
