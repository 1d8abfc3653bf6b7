package curate

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/eval"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// Copy verification: a descriptor's cosine ranks candidate pairs, and the
// pixels decide. Two images are copies when one, cut to some box and
// resized, correlates with the other almost perfectly. The search runs
// over boxes whose sides are at least MinScale of the image's (crops),
// both ways round, on small grey thumbnails: normalised correlation
// ignores brightness and contrast, and the box search makes it exact for
// crops, which descriptors of small images map far apart (docs/curation.md).

// Thumb is a square grey image with values in [0, 1], the resolution
// copies are verified at.
type Thumb struct {
	Side int
	Pix  []float32 // Side*Side, row-major
}

// DefaultThumbSide is the verification resolution: images larger than it
// are averaged down to it; MakeThumbs keeps smaller ones at their own side.
const DefaultThumbSide = 32

// MakeThumbs loads images rows (in parallel) and makes their thumbnails at
// one side: maxSide, or the smallest image's shorter side when that is
// less, since enlarging an image blurs it (Fashion-MNIST's 28-pixel
// garments verified at 32 lose precision 0.957 -> 0.940 and recall 0.969
// -> 0.959 in curate calibrate). thumbs has one entry per row index up to
// the largest; rows that failed to load have Side 0 and their error in
// failed.
func MakeThumbs(rows []int, load func(row int) (*data.RGB, error), maxSide int) (thumbs []Thumb, failed map[int]error) {
	n := 0
	for _, r := range rows {
		n = max(n, r+1)
	}
	thumbs = make([]Thumb, n)
	small := make([]*data.RGB, n) // images below maxSide, kept to remake
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= len(rows) {
					return
				}
				r := rows[k]
				img, err := load(r)
				switch {
				case err != nil:
					errs[r] = err
				case min(img.W, img.H) < maxSide:
					small[r] = img
				default:
					thumbs[r] = NewThumb(img, maxSide)
				}
			}
		}()
	}
	wg.Wait()
	side := maxSide
	for _, img := range small {
		if img != nil {
			side = min(side, img.W, img.H)
		}
	}
	failed = map[int]error{}
	for _, r := range rows {
		switch {
		case errs[r] != nil:
			failed[r] = errs[r]
		case small[r] != nil:
			thumbs[r] = NewThumb(small[r], side)
		case thumbs[r].Side != side:
			thumbs[r] = resizeThumb(thumbs[r], side)
		}
	}
	return thumbs, failed
}

// resizeThumb shrinks t to side (area average).
func resizeThumb(t Thumb, side int) Thumb {
	v := make([]float64, len(t.Pix))
	for i, x := range t.Pix {
		v[i] = float64(x)
	}
	return Thumb{Side: side, Pix: resample(v, t.Side, t.Side, side)}
}

// NewThumb is img's luminance resized to side x side (each axis on its
// own, so a crop that changed the aspect ratio still lines up): averaged
// over the source pixels each thumbnail pixel covers when shrinking,
// bilinear when enlarging.
func NewThumb(img *data.RGB, side int) Thumb {
	luma := make([]float64, img.W*img.H)
	for j := range luma {
		p := img.Pix[3*j : 3*j+3]
		luma[j] = (0.299*float64(p[0]) + 0.587*float64(p[1]) + 0.114*float64(p[2])) / 255
	}
	return Thumb{Side: side, Pix: resample(luma, img.W, img.H, side)}
}

// resample resizes the w x h image v to side x side, rows then columns.
func resample(v []float64, w, h, side int) []float32 {
	ry, rx := resampleMatrix(side, h), resampleMatrix(side, w)
	rows := make([]float64, side*w) // ry applied to v
	for y := range side {
		for _, tap := range ry[y] {
			for x := range w {
				rows[y*w+x] += tap.w * v[tap.i*w+x]
			}
		}
	}
	out := make([]float32, side*side)
	for y := range side {
		for x := range side {
			s := 0.0
			for _, tap := range rx[x] {
				s += tap.w * rows[y*w+tap.i]
			}
			out[y*side+x] = float32(s)
		}
	}
	return out
}

type tap struct {
	i int
	w float64
}

// resampleMatrix maps n source samples to m: bilinear taps when m >= n,
// the box average of each output pixel's footprint when m < n.
func resampleMatrix(m, n int) [][]tap {
	r := make([][]tap, m)
	scale := float64(n) / float64(m)
	for o := range m {
		if m >= n {
			s := min(max((float64(o)+0.5)*scale-0.5, 0), float64(n-1))
			i := int(s)
			f := s - float64(i)
			r[o] = append(r[o], tap{i, 1 - f})
			if f > 0 {
				r[o] = append(r[o], tap{i + 1, f})
			}
			continue
		}
		lo, hi := float64(o)*scale, float64(o+1)*scale
		for i := int(lo); i < n && float64(i) < hi; i++ {
			if w := min(hi, float64(i+1)) - max(lo, float64(i)); w > 0 {
				r[o] = append(r[o], tap{i, w / scale})
			}
		}
	}
	return r
}

// VerifyOpts set the copy verification's search.
type VerifyOpts struct {
	// MinScale is the smallest crop searched, as a fraction of each side.
	MinScale float64
	// Threshold is the aligned correlation above which a pair is a copy.
	Threshold float64
	// Mirror searches each image mirrored left to right as well: mirrored
	// crops are copies too (twice the work).
	Mirror bool
}

// DefaultVerify searches crops down to 70% of each side and accepts pairs
// that correlate above 0.99 once aligned (chosen with curate calibrate on
// Fashion-MNIST, whose unrelated garments are as alike as images get).
var DefaultVerify = VerifyOpts{MinScale: 0.7, Threshold: 0.99, Mirror: true}

// Validate checks the settings.
func (o VerifyOpts) Validate() error {
	if !(o.MinScale > 0 && o.MinScale <= 1) || !(o.Threshold > -1 && o.Threshold < 1) {
		return fmt.Errorf("verify: min scale %g, threshold %g: want a scale in (0, 1] and a correlation in (-1, 1)", o.MinScale, o.Threshold)
	}
	return nil
}

// box is a crop of a thumbnail, in its pixels.
type box struct{ x, y, w, h float64 }

const (
	// refineCandidates is how many of the coarse grid's best boxes are
	// refined: the best alone may lie in the wrong basin.
	refineCandidates = 8
	// coarseMargin and pixelMargin bound how far below the threshold a
	// true copy scores on the half-resolution grid (a crop re-encoded as
	// JPEG at quality 30 of a 28-pixel garment: 0.16) and after whole-pixel
	// refinement; boxes below them are given up.
	coarseMargin = 0.2
	pixelMargin  = 0.05
	// flatVariance is the variance (of a unit-norm centred image) below
	// which a resized crop counts as flat: it correlates with nothing.
	flatVariance = 1e-8
	// edgeSlack absorbs rounding in the crop-bounds checks.
	edgeSlack = 1e-4
	// MaxThumbSide bounds Thumb.Side: the coarse search holds two
	// half-resolution thumbnails in workgroup memory.
	MaxThumbSide = 64
)

// coarseFactor is the downsampling of the coarse grid: 2, or 1 for
// thumbnails too small to halve.
func coarseFactor(side int) int {
	if side < 16 {
		return 1
	}
	return 2
}

// coarseBoxes lists the whole-pixel crops of a side x side image whose
// sides are at least minScale of it: heights, widths, then top and left
// edges ascending.
func coarseBoxes(side int, minScale float64) []box {
	lo := int(math.Ceil(minScale*float64(side) - edgeSlack))
	var boxes []box
	for h := lo; h <= side; h++ {
		for w := lo; w <= side; w++ {
			for y := 0; y+h <= side; y++ {
				for x := 0; x+w <= side; x++ {
					boxes = append(boxes, box{float64(x), float64(y), float64(w), float64(h)})
				}
			}
		}
	}
	return boxes
}

// refineMoves are the pattern search's moves at a step of one: the box
// shifts, or one of its edges does.
var refineMoves = [12]box{
	{1, 0, 0, 0}, {-1, 0, 0, 0}, {0, 1, 0, 0}, {0, -1, 0, 0}, // shifts
	{0, 0, 1, 0}, {0, 0, -1, 0}, {0, 0, 0, 1}, {0, 0, 0, -1}, // right and bottom edges
	{-1, 0, 1, 0}, {1, 0, -1, 0}, {0, -1, 0, 1}, {0, 1, 0, -1}, // left and top edges
}

// refineSteps are the pattern search's step sizes in pixels, each half the
// last (verify_refine halves from 1).
var refineSteps = [4]float64{1, 0.5, 0.25, 0.125}

// AlignedCorrelation is the highest normalised correlation between one
// thumbnail and a crop of the other resized to its side, over crops whose
// sides are at least o.MinScale of the image's, both ways round: an exact
// copy, or an image and a crop of it, score 1. A grid of whole-pixel crops
// at half resolution picks the best few boxes, which a pattern search then
// refines to an eighth of a pixel at full resolution. Boxes whose
// correlation stays far below o.Threshold are not refined further, so
// scores well under it are lower bounds: they decide nothing.
//
// This is the float64 reference of VerifyPairs' kernels.
func AlignedCorrelation(a, b Thumb, o VerifyOpts) float64 {
	if a.Side != b.Side {
		panic(fmt.Sprintf("verify: thumbnails of sides %d and %d", a.Side, b.Side))
	}
	f := coarseFactor(a.Side)
	boxes := coarseBoxes(a.Side/f, o.MinScale)
	search := func(src, dst Thumb) float64 {
		return cropCorrelation(centred(halve(src, f).Pix), centred(halve(dst, f).Pix), centred(src.Pix), centred(dst.Pix), boxes, f, o)
	}
	r := max(search(a, b), search(b, a))
	if o.Mirror {
		r = max(r, search(mirror(a), b), search(mirror(b), a))
	}
	return r
}

// mirror is t flipped left to right.
func mirror(t Thumb) Thumb {
	m := Thumb{Side: t.Side, Pix: make([]float32, len(t.Pix))}
	for y := range t.Side {
		for x := range t.Side {
			m.Pix[y*t.Side+x] = t.Pix[y*t.Side+t.Side-1-x]
		}
	}
	return m
}

// cropCorrelation searches crops of src against dst, coarse then fine;
// each image is given centred to unit norm at both resolutions.
func cropCorrelation(coarseSrc, coarseDst, src, dst []float64, boxes []box, f int, o VerifyOpts) float64 {
	scores := make([]float64, len(boxes))
	out := make([]float64, len(coarseDst))
	for i, b := range boxes {
		sampleBox(coarseSrc, b, out)
		scores[i] = correlate(out, coarseDst)
	}
	order := make([]int, len(boxes))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int { return cmp.Compare(scores[j], scores[i]) })
	if scores[order[0]] < o.Threshold-coarseMargin {
		return scores[order[0]]
	}
	out = make([]float64, len(dst))
	result := math.Inf(-1)
	for _, i := range order[:min(refineCandidates, len(order))] {
		b := boxes[i]
		s := float64(f)
		result = max(result, refineBox(src, dst, box{b.x * s, b.y * s, b.w * s, b.h * s}, out, o))
	}
	return result
}

// refineBox is a pattern search from b: the box moves, or one of its
// edges does, by a step while that raises the correlation, the step
// halving from one pixel to an eighth. It gives up when the whole-pixel
// steps end more than pixelMargin below the threshold.
func refineBox(src, dst []float64, b box, out []float64, o VerifyOpts) float64 {
	side := math.Sqrt(float64(len(src)))
	minSide := o.MinScale*side - edgeSlack
	valid := func(b box) bool {
		return b.x >= 0 && b.y >= 0 && b.w >= minSide && b.h >= minSide && b.x+b.w <= side+edgeSlack && b.y+b.h <= side+edgeSlack
	}
	score := func(b box) float64 { sampleBox(src, b, out); return correlate(out, dst) }
	best := score(b)
	for _, step := range refineSteps {
		for moved := true; moved; {
			moved = false
			for _, m := range refineMoves {
				c := box{b.x + step*m.x, b.y + step*m.y, b.w + step*m.w, b.h + step*m.h}
				if !valid(c) {
					continue
				}
				if r := score(c); r > best {
					b, best, moved = c, r, true
				}
			}
		}
		if step == 1 && best < o.Threshold-pixelMargin {
			break
		}
	}
	return best
}

// halve averages f x f pixel blocks (f 1: a copy).
func halve(t Thumb, f int) Thumb {
	side := t.Side / f
	h := Thumb{Side: side, Pix: make([]float32, side*side)}
	for y := range side {
		for x := range side {
			var v float32
			for dy := range f {
				for dx := range f {
					v += t.Pix[(y*f+dy)*t.Side+x*f+dx]
				}
			}
			h.Pix[y*side+x] = v / float32(f*f)
		}
	}
	return h
}

// sampleBox resizes the crop b of the square image src to the square out:
// bilinear at pixel centres, clamped to the crop, as cutting the box out
// and resizing it would.
func sampleBox(src []float64, b box, out []float64) {
	n := int(math.Sqrt(float64(len(src))))
	side := int(math.Sqrt(float64(len(out))))
	coord := func(o int, start, size float64) (int, int, float64) {
		s := start + (float64(o)+0.5)*size/float64(side) - 0.5
		s = min(max(s, start), start+size-1)
		s = min(max(s, 0), float64(n-1))
		i := int(s)
		return i, min(i+1, n-1), s - float64(i)
	}
	for y := range side {
		y0, y1, fy := coord(y, b.y, b.h)
		for x := range side {
			x0, x1, fx := coord(x, b.x, b.w)
			top := src[y0*n+x0]*(1-fx) + src[y0*n+x1]*fx
			bot := src[y1*n+x0]*(1-fx) + src[y1*n+x1]*fx
			out[y*side+x] = top*(1-fy) + bot*fy
		}
	}
}

// centred is v minus its mean, scaled to unit norm (zero for a flat image).
// Correlation ignores both, and resampling commutes with them, so crops
// are cut from centred images.
func centred(v []float32) []float64 {
	c := make([]float64, len(v))
	mean := 0.0
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	norm := 0.0
	for i, x := range v {
		c[i] = float64(x) - mean
		norm += c[i] * c[i]
	}
	if norm > 0 {
		norm = 1 / math.Sqrt(norm)
	}
	for i := range c {
		c[i] *= norm
	}
	return c
}

// correlate is the normalised correlation of v with a centred unit target.
func correlate(v, target []float64) float64 {
	var sum, sumSq, dot float64
	for i, x := range v {
		sum += x
		sumSq += x * x
		dot += x * target[i]
	}
	variance := sumSq - sum*sum/float64(len(v))
	if variance <= flatVariance {
		return 0
	}
	// The target sums to zero, so the mean of v drops out of the product.
	return dot / math.Sqrt(variance)
}

// Pair is a candidate copy pair of pool rows, I < J, with the cosine
// similarity of their descriptors.
type Pair struct {
	I, J int
	Sim  float32
}

// CandidatePairs lists each pair of the neighbour blocks at or above floor
// once (found from either side), ordered by I then J.
func CandidatePairs(blocks []eval.Block, floor float32) []Pair {
	var pairs []Pair
	for _, b := range blocks {
		for r := 0; r*b.K < len(b.Index); r++ {
			i := b.First + r
			for j := r * b.K; j < (r+1)*b.K; j++ {
				nb, s := b.Index[j], b.Similar[j]
				if nb >= 0 && nb != i && s >= floor {
					pairs = append(pairs, Pair{min(i, nb), max(i, nb), s})
				}
			}
		}
	}
	slices.SortFunc(pairs, func(p, q Pair) int {
		if c := cmp.Compare(p.I, q.I); c != 0 {
			return c
		}
		return cmp.Compare(p.J, q.J)
	})
	return slices.CompactFunc(pairs, func(p, q Pair) bool { return p.I == q.I && p.J == q.J })
}

// verifyChunkPairs bounds the pairs of one GPU submission: their coarse
// scores take up to 4 x boxes floats each (two directions, mirrored too).
const verifyChunkPairs = 8192

// VerifyPairs is the aligned correlation (AlignedCorrelation) of every
// pair's thumbnails, computed on the GPU in chunks of pairs: the coarse
// grid's scores by verify_coarse, their best boxes by topk, the pattern
// search by verify_refine. Only the chunk's thumbnails are on the GPU at a
// time. progress, if not nil, hears the pairs done.
func VerifyPairs(ctx context.Context, dev *gpu.Device, pairs []Pair, thumbs []Thumb, o VerifyOpts, progress func(done, total int64)) ([]float64, error) {
	return verifyPairs(ctx, dev, pairs, thumbs, o, progress, verifyChunkPairs)
}

// verifyPairs is VerifyPairs in chunks of at most maxChunk pairs.
func verifyPairs(ctx context.Context, dev *gpu.Device, pairs []Pair, thumbs []Thumb, o VerifyOpts, progress func(done, total int64), maxChunk int) ([]float64, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	scores := make([]float64, len(pairs))
	if len(pairs) == 0 {
		return scores, nil
	}
	side := thumbs[pairs[0].I].Side
	for _, p := range pairs {
		for _, i := range [2]int{p.I, p.J} {
			if i < 0 || i >= len(thumbs) {
				return nil, fmt.Errorf("verify: pair (%d, %d) of %d thumbnails", p.I, p.J, len(thumbs))
			}
			if thumbs[i].Side != side {
				return nil, fmt.Errorf("verify: thumbnails of sides %d and %d; make them all one side", side, thumbs[i].Side)
			}
		}
	}
	if side < 2 || side > MaxThumbSide {
		return nil, fmt.Errorf("verify: thumbnail side %d, want 2..%d", side, MaxThumbSide)
	}
	f := coarseFactor(side)
	boxes := coarseBoxes(side/f, o.MinScale)
	v, err := newVerifier(dev, side, f, boxes, o)
	if err != nil {
		return nil, err
	}
	defer v.release()
	limit := int(dev.Limits().MaxStorageBinding / 4)
	chunk := max(1, min(maxChunk, limit/(4*len(boxes))))
	for first := 0; first < len(pairs); first += chunk {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		last := min(len(pairs), first+chunk)
		if err := v.run(pairs[first:last], thumbs, scores[first:last]); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		if progress != nil {
			progress(int64(last), int64(len(pairs)))
		}
	}
	return scores, nil
}

// verifier holds the kernels' settings and the boxes of the coarse grid.
type verifier struct {
	dev     *gpu.Device
	side, f int
	o       VerifyOpts
	boxes   *gpu.Tensor // [boxes, 4]: x, y, w, h in half-resolution pixels
	nBoxes  int
}

// verifyWG is the coarse kernel's workgroup size.
const verifyWG = 64

func newVerifier(dev *gpu.Device, side, f int, boxes []box, o VerifyOpts) (*verifier, error) {
	flat := make([]float32, 0, 4*len(boxes))
	for _, b := range boxes {
		flat = append(flat, float32(b.x), float32(b.y), float32(b.w), float32(b.h))
	}
	t, err := dev.Upload("verify boxes", flat, len(boxes), 4)
	if err != nil {
		return nil, err
	}
	return &verifier{dev: dev, side: side, f: f, o: o, boxes: t, nBoxes: len(boxes)}, nil
}

func (v *verifier) release() { v.boxes.Buf.Release() }

// run verifies one chunk of pairs into scores.
func (v *verifier) run(pairs []Pair, thumbs []Thumb, scores []float64) (err error) {
	// The chunk's thumbnails (and their mirror images), centred, at both
	// resolutions.
	var full, coarse []float32
	cs := v.side / v.f
	slots := 0
	add := func(t Thumb) uint32 {
		full = appendFloat32(full, centred(t.Pix))
		coarse = appendFloat32(coarse, centred(halve(t, v.f).Pix))
		slots++
		return uint32(slots - 1)
	}
	type slot struct{ plain, mirrored uint32 }
	slotOf := map[int]slot{}
	dirs := 2
	if v.o.Mirror {
		dirs = 4
	}
	tasks := make([]uint32, 0, 2*dirs*len(pairs))
	for _, p := range pairs {
		for _, i := range [2]int{p.I, p.J} {
			if _, ok := slotOf[i]; !ok {
				sl := slot{plain: add(thumbs[i])}
				if v.o.Mirror {
					sl.mirrored = add(mirror(thumbs[i]))
				}
				slotOf[i] = sl
			}
		}
		a, b := slotOf[p.I], slotOf[p.J]
		tasks = append(tasks, a.plain, b.plain, b.plain, a.plain)
		if v.o.Mirror {
			tasks = append(tasks, a.mirrored, b.plain, b.mirrored, a.plain)
		}
	}
	n, T := slots, dirs*len(pairs)
	dev := v.dev
	var owned []*gpu.Tensor
	defer func() {
		for _, t := range owned {
			t.Buf.Release()
		}
	}()
	alloc := func(label string, shape ...int) *gpu.Tensor {
		if err != nil {
			return nil
		}
		var t *gpu.Tensor
		if t, err = dev.NewTensor(label, shape...); err == nil {
			owned = append(owned, t)
		}
		return t
	}
	fullT, coarseT, taskT := alloc("verify thumbnails", n, v.side*v.side), alloc("verify coarse thumbnails", n, cs*cs), alloc("verify tasks", T, 2)
	scoreT, topV, topI, refined := alloc("verify coarse scores", T, v.nBoxes), alloc("verify top scores", T, refineCandidates), alloc("verify top boxes", T, refineCandidates), alloc("verify refined", T, refineCandidates)
	if err != nil {
		return err
	}
	if err := dev.Write(fullT, full); err != nil {
		return err
	}
	if err := dev.Write(coarseT, coarse); err != nil {
		return err
	}
	if err := dev.WriteU32(taskT, tasks); err != nil {
		return err
	}
	rec := dev.Record()
	rec.Dispatch(gpu.Kernel{Name: "verify_coarse", Data: verifyData{Side: cs, WG: verifyWG}, Access: []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}},
		nn.RowGroups(T), []uint32{gpu.U32(T), gpu.U32(v.nBoxes)}, coarseT, taskT, v.boxes, scoreT)
	nn.TopK(rec, topV, topI, scoreT, refineCandidates, 0)
	side := float64(v.side)
	moves := make([][4]float64, len(refineMoves))
	for i, m := range refineMoves {
		moves[i] = [4]float64{m.x, m.y, m.w, m.h}
	}
	refine := verifyData{Side: v.side, K: refineCandidates, Moves: moves, Steps: len(refineSteps), EdgeSlack: edgeSlack}
	rec.Dispatch(gpu.Kernel{Name: "verify_refine", Data: refine,
		Access: []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}},
		rec.Groups(T*refineCandidates, 64), []uint32{gpu.U32(T), gpu.F32(float32(v.f)), gpu.F32(float32(v.o.MinScale*side - edgeSlack)),
			gpu.F32(float32(v.o.Threshold - coarseMargin)), gpu.F32(float32(v.o.Threshold - pixelMargin))},
		fullT, taskT, v.boxes, topV, topI, refined)
	if err := rec.Submit(); err != nil {
		return err
	}
	r, err := dev.Read(refined)
	if err != nil {
		return err
	}
	for p := range pairs {
		best := math.Inf(-1)
		for _, x := range r[dirs*p*refineCandidates : dirs*(p+1)*refineCandidates] {
			best = max(best, float64(x))
		}
		scores[p] = best
	}
	return nil
}

// DedupVerified is DedupBlocks with the verified pairs added to the copy
// graph: those whose aligned correlation passes o.Threshold.
func DedupVerified(n int, blocks []eval.Block, threshold float32, pairs []Pair, scores []float64, o VerifyOpts) *Dedup {
	l := newLinker(n, threshold)
	for _, b := range blocks {
		l.add(b)
	}
	for p, s := range scores {
		if s > o.Threshold {
			l.uf.Union(pairs[p].I, pairs[p].J)
			l.d.Edges++
		}
	}
	return l.dedup()
}

// verifyData is the verify kernels' template data.
type verifyData struct {
	Side, WG, K int
	Moves       [][4]float64 // verify_refine: refineMoves
	Steps       int          // verify_refine: len(refineSteps), each half the last from 1
	EdgeSlack   float64
}

func appendFloat32(dst []float32, v []float64) []float32 {
	for _, x := range v {
		dst = append(dst, float32(x))
	}
	return dst
}
