package curate

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// IVFOpts configure BuildIVF.
type IVFOpts struct {
	Lists  int    // inverted lists (k-means clusters); about sqrt(n) is usual
	Iters  int    // k-means iterations (10)
	Seed   uint64 // k-means++ seed
	Sample int    // k-means points (0: all); the rest are only assigned
	// Int8 stores the lists as 8-bit codes, a quarter of the memory (and
	// of a GPU's reads): each dimension scaled by its largest magnitude in
	// the base and rounded to 127 steps, so a score is off by at most
	// sum_d |q_d| s_d / 254 (s_d that scale). Needs d % 4 == 0.
	Int8 bool
	// packRows, when positive, caps the rows of one packed buffer below
	// what one binding holds (tests of indexes in several buffers).
	packRows int
}

// IVF is an inverted-file index: the base is partitioned by k-means and a
// query is compared only with the rows of the nprobe lists whose
// centroids score highest, so a search costs about nprobe/Lists of an
// exact one (plus the coarse step) at some loss of recall.
type IVF struct {
	dev        *gpu.Device
	D          int
	KM         *KMeans
	cent, bias *gpu.Tensor
	packs      []*gpu.Tensor // lists packed into bindable buffers
	list       []ivfList
	order      []int       // packed position (list start + r) -> base row
	scale      []float32   // Int8: per-dimension scale of the codes (nil: float lists)
	Stats      SearchStats // of the last Search
}

type ivfList struct {
	pack, row, size int // buffer, first row in it, rows
	first           int // first entry in order
}

// BuildIVF clusters base (rows of d; normalise them for cosine
// similarity) and packs its rows list by list on the GPU. base streams in
// blocks (an embedded pool on disk): the CPU holds the k-means sample and,
// while packing, the lists as the GPU will (a quarter of the pool with
// Int8).
func BuildIVF(ctx context.Context, dev *gpu.Device, base Rows, o IVFOpts) (ix *IVF, err error) {
	n, d := base.Len(), base.Dim()
	if o.Int8 && d%4 != 0 {
		return nil, fmt.Errorf("ivf: 8-bit lists need a dimension that is a multiple of 4, not %d", d)
	}
	if o.Iters == 0 {
		o.Iters = 10
	}
	whole := o.Sample <= 0 || o.Sample >= n
	var sample []float32
	if whole {
		sample = make([]float32, n*d)
		err = base.Read(0, n, sample)
	} else {
		sample, err = readRowsAt(base, randPerm(n, o.Seed)[:o.Sample])
	}
	if err != nil {
		return nil, fmt.Errorf("ivf: %w", err)
	}
	km, err := KMeansFit(ctx, dev, sample, d, KMeansOpts{K: o.Lists, Iters: o.Iters, Seed: o.Seed})
	if err != nil {
		return nil, fmt.Errorf("ivf: %w", err)
	}
	assign := km.Assign
	if !whole {
		if assign, _, err = km.Predict(ctx, dev, base, 0); err != nil {
			return nil, fmt.Errorf("ivf: %w", err)
		}
	}
	ix = &IVF{dev: dev, D: d, KM: km, list: make([]ivfList, o.Lists)}
	defer func() {
		if err != nil {
			ix.Release()
		}
	}()
	// Lists start at rows whose offset is 256-byte aligned; a row is d
	// floats, or d/4 words of codes.
	words := d
	if o.Int8 {
		words = d / 4
		if ix.scale, err = codeScale(base); err != nil {
			return nil, fmt.Errorf("ivf: %w", err)
		}
	}
	g := 64 / gcd(words, 64)
	limit := int(dev.Limits().MaxStorageBinding/4) / words / g * g
	if o.packRows > 0 {
		limit = min(limit, o.packRows)
	}
	// Lay the lists out in packs, then stream base into their places.
	sizes := make([]int, o.Lists)
	for _, a := range assign {
		sizes[a]++
	}
	var packRows []int // rows of each pack
	rows, first := 0, 0
	for l, size := range sizes {
		if size > limit {
			return nil, fmt.Errorf("ivf: list %d holds %d rows, more than one binding (%d): use more lists", l, size, limit)
		}
		if len(packRows) == 0 || rows+size > limit {
			packRows = append(packRows, 0)
			rows = 0
		}
		ix.list[l] = ivfList{pack: len(packRows) - 1, row: rows, first: first}
		rows += (size + g - 1) / g * g
		packRows[len(packRows)-1] = max(rows, 1) // an empty pack still binds one row
		first += size
	}
	packs := make([][]uint32, len(packRows))
	for p, r := range packRows {
		packs[p] = make([]uint32, r*words)
	}
	ix.order = make([]int, n)
	const block = 65536
	buf := make([]float32, min(n, block)*d)
	for i0 := 0; i0 < n; i0 += block {
		i1 := min(n, i0+block)
		if err = base.Read(i0, i1, buf[:(i1-i0)*d]); err != nil {
			return nil, fmt.Errorf("ivf: %w", err)
		}
		for i := i0; i < i1; i++ {
			L := &ix.list[assign[i]]
			at := (L.row + L.size) * words
			ix.encode(packs[L.pack][at:at+words], buf[(i-i0)*d:(i-i0+1)*d])
			ix.order[L.first+L.size] = i
			L.size++
		}
	}
	for p, words32 := range packs {
		t, err := dev.NewTensor("ivf lists", packRows[p], words)
		if err == nil {
			ix.packs = append(ix.packs, t)
			err = dev.WriteU32(t, words32)
		}
		if err != nil {
			return nil, fmt.Errorf("ivf: %w", err)
		}
		packs[p] = nil
	}
	if ix.cent, err = dev.Upload("ivf centroids", km.Centroids, o.Lists, d); err != nil {
		return nil, fmt.Errorf("ivf: %w", err)
	}
	bias := make([]float32, o.Lists)
	for l := range bias {
		var s float64
		for _, v := range km.Centroids[l*d : (l+1)*d] {
			s += float64(v) * float64(v)
		}
		bias[l] = float32(-s / 2)
	}
	if ix.bias, err = dev.Upload("ivf bias", bias, o.Lists); err != nil {
		return nil, fmt.Errorf("ivf: %w", err)
	}
	return ix, nil
}

// codeScale is the per-dimension scale of 8-bit codes: the largest
// magnitude of each dimension among the rows of x (1 where all are 0).
func codeScale(x Rows) ([]float32, error) {
	d, n := x.Dim(), x.Len()
	s := make([]float32, d)
	const block = 65536
	buf := make([]float32, min(n, block)*d)
	for i0 := 0; i0 < n; i0 += block {
		i1 := min(n, i0+block)
		if err := x.Read(i0, i1, buf[:(i1-i0)*d]); err != nil {
			return nil, err
		}
		for i, v := range buf[:(i1-i0)*d] {
			s[i%d] = max(s[i%d], float32(math.Abs(float64(v))))
		}
	}
	for j := range s {
		if s[j] == 0 {
			s[j] = 1
		}
	}
	return s, nil
}

// encode writes a list row as the words the lists hold: its floats' bits,
// or with Int8 four codes a word, code j in bits 8j..8j+7 (what WGSL's
// unpack4x8snorm reads back as code/127).
func (ix *IVF) encode(dst []uint32, row []float32) {
	if ix.scale == nil {
		for j, v := range row {
			dst[j] = math.Float32bits(v)
		}
		return
	}
	for j := range dst {
		var w uint32
		for c := range 4 {
			q := math.Round(float64(row[4*j+c]/ix.scale[4*j+c]) * 127)
			w |= uint32(uint8(int8(min(max(q, -127), 127)))) << (8 * c)
		}
		dst[j] = w
	}
}

// readRowsAt reads the rows idx of x, in that order.
func readRowsAt(x Rows, idx []int) ([]float32, error) {
	d := x.Dim()
	out := make([]float32, len(idx)*d)
	for k, i := range idx {
		if err := x.Read(i, i+1, out[k*d:(k+1)*d]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func randPerm(n int, seed uint64) []int {
	return newRand(seed).Perm(n)
}

// ScoreBound is how far Search's similarity of query q with any row can be
// from the exact one with 8-bit lists: sum_d |q_d| s_d / 254 (each code is
// within half a step, s_d / 254, of its value) plus 1e-4 for the float
// rounding of the sum; 0 with float lists.
func (ix *IVF) ScoreBound(q []float32) float32 {
	if ix.scale == nil {
		return 0
	}
	var b float64
	for j, v := range q {
		b += math.Abs(float64(v)) * float64(ix.scale[j]) / 254
	}
	return float32(b) + 1e-4 // and the GPU's float rounding of the sum
}

// ListBytes is the GPU memory of the lists.
func (ix *IVF) ListBytes() uint64 {
	var n uint64
	for _, p := range ix.packs {
		n += p.Bytes()
	}
	return n
}

// Release frees the index's GPU memory.
func (ix *IVF) Release() {
	for _, t := range append([]*gpu.Tensor{ix.cent, ix.bias}, ix.packs...) {
		if t != nil {
			t.Buf.Release()
		}
	}
}

// Probe returns, per query, the nprobe lists to visit: those whose
// centroid is nearest (the assignment score x.c - |c|^2/2).
func (ix *IVF) Probe(ctx context.Context, query []float32, nprobe int) ([]int, error) {
	lists := len(ix.list)
	nprobe = min(nprobe, lists)
	if nprobe < 1 || nprobe > nn.MaxTopK {
		return nil, fmt.Errorf("ivf: nprobe %d, want 1..%d", nprobe, nn.MaxTopK)
	}
	d := ix.D
	nq := len(query) / d
	limit := int(ix.dev.Limits().MaxStorageBinding / 4)
	rows := max(1, min(nq, limit/lists, limit/d, 65536))
	out := make([]int, 0, nq*nprobe)
	for q0 := 0; q0 < nq; q0 += rows {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q1 := min(nq, q0+rows)
		err := withTensors(ix.dev, [][]int{{q1 - q0, d}, {q1 - q0, lists}, {q1 - q0, nprobe}, {q1 - q0, nprobe}}, func(t []*gpu.Tensor) error {
			if err := ix.dev.Write(t[0], query[q0*d:q1*d]); err != nil {
				return err
			}
			rec := ix.dev.Record()
			nn.MatMul(rec, t[1], t[0], ix.cent, nn.MatMulOpts{TransB: true, Bias: ix.bias})
			nn.TopK(rec, t[2], t[3], t[1], nprobe, 0)
			if err := rec.Submit(); err != nil {
				return err
			}
			p, err := ix.dev.ReadU32(t[3])
			for _, l := range p {
				out = append(out, int(l))
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("ivf probe: %w", err)
		}
	}
	return out, nil
}

// withTensors allocates zeroed tensors of the shapes, calls f, frees them.
func withTensors(dev *gpu.Device, shapes [][]int, f func([]*gpu.Tensor) error) error {
	ts := make([]*gpu.Tensor, len(shapes))
	defer func() {
		for _, t := range ts {
			if t != nil {
				t.Buf.Release()
			}
		}
	}()
	for i, s := range shapes {
		t, err := dev.NewTensor("curate scratch", s...)
		if err != nil {
			return err
		}
		ts[i] = t
	}
	return f(ts)
}

// ivfBudget bounds the similarity scores of one submission (floats).
const ivfBudget = 8 << 20

// SearchStats says where the time of the last Search went: the coarse
// step, and per batch of lists the CPU's gathering and upload of queries,
// the recording and submission of the products, the waits for their
// results and the CPU's merging of them.
type SearchStats struct {
	Probe, Prepare, Submit, Wait, Merge time.Duration
	Batches, Lists                      int // submissions, and per-list products in them
}

// ivfSeg is one item of a batch: a list, the queries that probe it, and
// where the batch's buffers hold them (gathered query rows from q, scores
// from s, top-k results from o).
type ivfSeg struct {
	l, q, s, o int
	qs         []int
}

// ivfBatch is one submission of Search.
type ivfBatch struct {
	segs              []ivfSeg
	qRows, sLen, oLen int
	tiles             [][]uint32 // per pack of lists: ivf_scores' tiles
	rows              []uint32   // TopKRows' rows: one per segment and query
}

// Search returns the k nearest indexed rows of each query among the rows
// of its nprobe lists. Per list, the queries that probe it are gathered
// and compared with the list's rows; lists go to the GPU in batches
// bounded by ivfBudget scores, each batch in one dispatch of similarities
// per pack of lists and one of top-k (whatever the number of lists), its
// results read back while the next batch runs; the lists' sorted results
// merge on the CPU.
// ix.Stats says where the time went.
func (ix *IVF) Search(ctx context.Context, query []float32, k, nprobe int) (*eval.Neighbours, error) {
	d := ix.D
	if len(query)%d != 0 || len(query) == 0 {
		return nil, fmt.Errorf("ivf search: %d values are not rows of %d", len(query), d)
	}
	if k < 1 || k > nn.MaxTopK {
		return nil, fmt.Errorf("ivf search: k = %d, want 1..%d", k, nn.MaxTopK)
	}
	ix.Stats = SearchStats{}
	start := time.Now()
	probe, err := ix.Probe(ctx, query, nprobe)
	if err != nil {
		return nil, err
	}
	ix.Stats.Probe = time.Since(start)
	nprobe = len(probe) / (len(query) / d)
	nq := len(query) / d
	byList := make([][]int, len(ix.list))
	for q := range nq {
		for _, l := range probe[q*nprobe : (q+1)*nprobe] {
			if ix.list[l].size > 0 {
				byList[l] = append(byList[l], q)
			}
		}
	}
	out := &eval.Neighbours{K: k, Index: make([]int, nq*k), Similar: make([]float32, nq*k)}
	for i := range out.Index {
		out.Index[i], out.Similar[i] = -1, float32(math.Inf(-1))
	}
	sizes := make([]int, len(ix.list))
	for l, L := range ix.list {
		sizes[l] = L.size
	}
	batches := ix.plan(ivfItems(byList, sizes, ivfBudget), k)
	if len(batches) == 0 {
		return out, nil
	}
	if ix.scale != nil {
		// code/127 . (s q) is the dequantised row's dot product with q.
		scaled := make([]float32, len(query))
		for i, v := range query {
			scaled[i] = v * ix.scale[i%d]
		}
		query = scaled
	}
	// Scratch for the largest batch, shared by all: the GPU runs them in
	// order, and each one's results are copied out before the next starts.
	var maxQ, maxS, maxO, maxT, maxR int
	for _, b := range batches {
		maxQ, maxS, maxO = max(maxQ, b.qRows), max(maxS, b.sLen), max(maxO, b.oLen)
		maxT, maxR = max(maxT, b.tileValues()), max(maxR, len(b.rows))
	}
	err = withTensors(ix.dev, [][]int{{maxQ, d}, {maxS}, {maxO}, {maxO}, {maxT}, {maxR}}, func(t []*gpu.Tensor) error {
		gathered := make([]float32, maxQ*d)
		results := make([]float32, 2*maxO)
		var prev *ivfBatch
		var read *gpu.PendingRead
		defer func() {
			if read != nil {
				read.Discard()
			}
		}()
		for i := range batches {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := &batches[i]
			next, err := ix.submit(b, query, gathered, k, t)
			if err != nil {
				return err
			}
			if prev != nil {
				if err := ix.merge(prev, read, results, k, out); err != nil {
					next.Discard()
					return err
				}
			}
			prev, read = b, next
		}
		if prev != nil {
			err := ix.merge(prev, read, results, k, out)
			read = nil
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ivf search: %w", err)
	}
	return out, nil
}

// The tile of ivf_scores: a workgroup of ivfWG invocations compares up to
// ivfRows list rows, ivfRPL per invocation, with up to ivfTQ queries.
const ivfTQ, ivfRPL, ivfWG = 8, 2, 64

const ivfRows = ivfRPL * ivfWG

// plan cuts the items into batches of at most ivfBudget scores (or one
// item, where a single one exceeds it) and lays out each batch: its
// gathered queries, scores and top-k results one segment after another,
// the tiles of ivf_scores per pack of lists, and the rows of TopKRows.
func (ix *IVF) plan(items []ivfItem, k int) []ivfBatch {
	var batches []ivfBatch
	for i0 := 0; i0 < len(items); {
		b := ivfBatch{tiles: make([][]uint32, len(ix.packs))}
		i1 := i0
		for ; i1 < len(items); i1++ {
			it := items[i1]
			m, L := len(it.qs), ix.list[it.l]
			if len(b.segs) > 0 && b.sLen+m*L.size > ivfBudget {
				break
			}
			seg := ivfSeg{it.l, b.qRows, b.sLen, b.oLen, it.qs}
			b.segs = append(b.segs, seg)
			for q0 := 0; q0 < m; q0 += ivfTQ {
				for r0 := 0; r0 < L.size; r0 += ivfRows {
					b.tiles[L.pack] = append(b.tiles[L.pack],
						uint32(seg.q+q0), uint32(min(ivfTQ, m-q0)), uint32(L.row+r0), uint32(min(ivfRows, L.size-r0)),
						uint32(seg.s+q0*L.size+r0), uint32(L.size), 0, 0)
				}
			}
			for j := range m {
				b.rows = append(b.rows, uint32(seg.s+j*L.size), uint32(L.size), uint32(seg.o+j*k), 0)
			}
			b.qRows += m
			b.sLen += m * L.size
			b.oLen += m * k
		}
		batches = append(batches, b)
		i0 = i1
	}
	return batches
}

// tileValues is the number of tile values of the batch, all packs'.
func (b *ivfBatch) tileValues() int {
	n := 0
	for _, t := range b.tiles {
		n += len(t)
	}
	return n
}

// submit uploads a batch's queries and tables, records and submits its
// similarities (one ivf_scores per pack) and top-k (one TopKRows), and
// starts reading the results back (values, then indices).
func (ix *IVF) submit(b *ivfBatch, query, gathered []float32, k int, t []*gpu.Tensor) (*gpu.PendingRead, error) {
	d := ix.D
	start := time.Now()
	for _, s := range b.segs {
		for j, q := range s.qs {
			copy(gathered[(s.q+j)*d:(s.q+j+1)*d], query[q*d:(q+1)*d])
		}
	}
	qs, _ := t[0].View(0, b.qRows, d)
	tiles, _ := t[4].View(0, b.tileValues())
	rows, _ := t[5].View(0, len(b.rows))
	if err := ix.dev.Write(qs, gathered[:b.qRows*d]); err != nil {
		return nil, err
	}
	if err := ix.dev.WriteU32(tiles, slices.Concat(b.tiles...)); err != nil {
		return nil, err
	}
	if err := ix.dev.WriteU32(rows, b.rows); err != nil {
		return nil, err
	}
	ix.Stats.Prepare += time.Since(start)
	start = time.Now()
	rec := ix.dev.Record()
	at := 0
	for p, pt := range b.tiles {
		if len(pt) == 0 {
			continue
		}
		view, _ := t[4].View(at, len(pt))
		ivfScores(rec, t[1], t[0], ix.packs[p], view, d, ix.scale != nil)
		at += len(pt)
	}
	vals, _ := t[2].View(0, b.oLen)
	idxs, _ := t[3].View(0, b.oLen)
	nn.TopKRows(rec, vals, idxs, t[1], rows, k)
	if err := rec.Submit(); err != nil {
		return nil, err
	}
	read, err := ix.dev.StartRead(vals, idxs)
	ix.Stats.Submit += time.Since(start)
	ix.Stats.Batches++
	ix.Stats.Lists += len(b.segs)
	return read, err
}

// ivfScores records ivf_scores: for each tile of tiles (8 values each, see
// shaders/knn.wgsl), the similarities of its queries in q [*, d] with its
// rows of the list pack x [*, d] (int8: [*, d/4] words of codes) into
// scores.
func ivfScores(rec *gpu.Recorder, scores, q, x, tiles *gpu.Tensor, d int, int8 bool) error {
	vec := d%4 == 0
	d4 := d
	if vec {
		d4 = d / 4
	}
	n := tiles.Len() / 8
	k := gpu.Kernel{Name: "ivf_scores", Data: struct {
		TQ, RPL, WG int
		Vec, Int8   bool
	}{ivfTQ, ivfRPL, ivfWG, vec, int8}, Access: []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}}
	return rec.Dispatch(k, nn.RowGroups(n), []uint32{gpu.U32(n), gpu.U32(d4)}, q, x, tiles, scores)
}

// merge waits for a batch's results (read, into results) and merges each
// query's top k of each list into out.
func (ix *IVF) merge(b *ivfBatch, read *gpu.PendingRead, results []float32, k int, out *eval.Neighbours) error {
	start := time.Now()
	err := read.Wait()
	ix.Stats.Wait += time.Since(start)
	if err == nil {
		err = read.Into(results[:2*b.oLen])
	}
	if err != nil {
		read.Discard()
		return err
	}
	start = time.Now()
	vals, idxs := results[:b.oLen], results[b.oLen:2*b.oLen]
	ids := make([]uint32, k)
	for _, s := range b.segs {
		L := ix.list[s.l]
		for j, q := range s.qs {
			at := s.o + j*k
			for c, p := range idxs[at : at+k] {
				// The indices' bits, read back among the floats; lists of
				// fewer than k rows pad with 0xffffffff.
				ids[c] = math.Float32bits(p)
				if ids[c] != math.MaxUint32 {
					ids[c] = uint32(ix.order[L.first+int(ids[c])])
				}
			}
			eval.MergeTop(out.Similar[q*k:(q+1)*k], out.Index[q*k:(q+1)*k], vals[at:at+k], ids)
		}
	}
	ix.Stats.Merge += time.Since(start)
	return nil
}

// ivfItem is a list and some of the queries that probe it.
type ivfItem struct {
	l  int
	qs []int
}

// ivfItems splits the queries of each list (byList[l], against sizes[l]
// rows) into items of at most budget scores, or one query where a single
// one exceeds it: a popular list can draw most of the queries, and its
// scores must still fit a storage binding.
func ivfItems(byList [][]int, sizes []int, budget int) []ivfItem {
	var items []ivfItem
	for l, qs := range byList {
		per := max(1, budget/max(sizes[l], 1))
		for len(qs) > 0 {
			n := min(per, len(qs))
			items = append(items, ivfItem{l, qs[:n]})
			qs = qs[n:]
		}
	}
	return items
}

// Recall is the fraction of the exact top-k (per query) that approx found.
func Recall(exact, approx *eval.Neighbours, k int) float64 {
	nq := len(exact.Index) / exact.K
	hit, all := 0, 0
	for q := range nq {
		found := map[int]bool{}
		for _, i := range approx.Index[q*approx.K : q*approx.K+min(k, approx.K)] {
			found[i] = true
		}
		for _, i := range exact.Index[q*exact.K : q*exact.K+min(k, exact.K)] {
			if i >= 0 {
				all++
				if found[i] {
					hit++
				}
			}
		}
	}
	return float64(hit) / float64(max(1, all))
}

// Rerank scores each query's candidates (rows of base [*, d], cand.K per
// query, -1 for none) exactly, in float64, and keeps the k best of each,
// most similar first: what makes the approximate scores of 8-bit lists
// exact again and restores the order they blur.
func Rerank(query, base []float32, d int, cand *eval.Neighbours, k int) *eval.Neighbours {
	nq := len(query) / d
	out := &eval.Neighbours{K: k, Index: make([]int, nq*k), Similar: make([]float32, nq*k)}
	type scored struct {
		i int
		s float64
	}
	c := make([]scored, 0, cand.K)
	for q := range nq {
		qv := query[q*d : (q+1)*d]
		c = c[:0]
		for _, i := range cand.Index[q*cand.K : (q+1)*cand.K] {
			if i < 0 {
				continue
			}
			var s float64
			for j, v := range base[i*d : (i+1)*d] {
				s += float64(v) * float64(qv[j])
			}
			c = append(c, scored{i, s})
		}
		slices.SortFunc(c, func(a, b scored) int {
			switch {
			case a.s > b.s:
				return -1
			case a.s < b.s:
				return 1
			}
			return a.i - b.i
		})
		for j := range k {
			out.Index[q*k+j], out.Similar[q*k+j] = -1, float32(math.Inf(-1))
			if j < len(c) {
				out.Index[q*k+j], out.Similar[q*k+j] = c[j].i, float32(c[j].s)
			}
		}
	}
	return out
}
