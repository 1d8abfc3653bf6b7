package curate

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"

	"github.com/webdino/webdino/data"
)

// Edit is a copy-detection edit: what turns an image into the kind of
// near-duplicate that deduplication must catch.
type Edit string

const (
	EditCopy   Edit = "copy"   // byte-identical
	EditFlip   Edit = "flip"   // mirrored left to right
	EditCrop   Edit = "crop"   // 75-90% of each side at a random place, resized back
	EditJitter Edit = "jitter" // contrast and brightness each scaled by 0.7-1.3
	EditJPEG   Edit = "jpeg"   // re-encoded as JPEG at quality 30-70
)

// Edits lists every edit.
var Edits = []Edit{EditCopy, EditFlip, EditCrop, EditJitter, EditJPEG}

// Planted is a data set whose duplicates are known: N images of a source
// followed by edited copies of some of them. It measures how well
// deduplication finds copies on a user's own images (cmd/curate calibrate).
type Planted struct {
	Src    data.Dataset
	Orig   []int         // source index of each original, Planted index 0..N-1
	Copies []PlantedCopy // Planted index N+j
}

// PlantedCopy is one planted near-duplicate.
type PlantedCopy struct {
	Of   int // Planted index of the original
	Edit Edit
	Seed uint64 // the edit's random draws
}

// NewPlanted samples n distinct images of src and gives the first groups of
// them 1-3 copies each, every copy with an edit drawn from edits.
func NewPlanted(src data.Dataset, n, groups int, edits []Edit, seed uint64) (*Planted, error) {
	switch {
	case n <= 0 || n > src.Len():
		return nil, fmt.Errorf("planted: %d originals from a source of %d images", n, src.Len())
	case groups < 0 || groups > n:
		return nil, fmt.Errorf("planted: %d groups of %d originals", groups, n)
	case len(edits) == 0 && groups > 0:
		return nil, fmt.Errorf("planted: no edits")
	}
	for _, e := range edits {
		if !validEdit(e) {
			return nil, fmt.Errorf("planted: unknown edit %q (want one of %v)", e, Edits)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x91a7))
	p := &Planted{Src: src, Orig: rng.Perm(src.Len())[:n]}
	for g := range groups {
		for range 1 + rng.IntN(3) {
			p.Copies = append(p.Copies, PlantedCopy{Of: g, Edit: edits[rng.IntN(len(edits))], Seed: rng.Uint64()})
		}
	}
	return p, nil
}

func validEdit(e Edit) bool {
	for _, v := range Edits {
		if e == v {
			return true
		}
	}
	return false
}

// Len is the number of originals and copies.
func (p *Planted) Len() int { return len(p.Orig) + len(p.Copies) }

// Path names an original by its source path, a copy by its original's path
// with "#edit-index" appended.
func (p *Planted) Path(i int) string {
	if i < len(p.Orig) {
		return p.Src.Path(p.Orig[i])
	}
	c := p.Copies[i-len(p.Orig)]
	return fmt.Sprintf("%s#%s-%d", p.Src.Path(p.Orig[c.Of]), c.Edit, i)
}

// Label is the source's label of the image or of its original.
func (p *Planted) Label(i int) int { return p.Src.Label(p.Orig[p.original(i)]) }

// EditOf is the edit of image i, "" for an original.
func (p *Planted) EditOf(i int) Edit {
	if i < len(p.Orig) {
		return ""
	}
	return p.Copies[i-len(p.Orig)].Edit
}

func (p *Planted) original(i int) int {
	if i < len(p.Orig) {
		return i
	}
	return p.Copies[i-len(p.Orig)].Of
}

// Truth is the component of every image under a perfect deduplication:
// its original's index, which is the lowest of the group, as in
// Dedup.Component.
func (p *Planted) Truth() []int {
	t := make([]int, p.Len())
	for i := range t {
		t[i] = p.original(i)
	}
	return t
}

// Load decodes the image, editing a copy with its own seed (the same
// pixels on every call).
func (p *Planted) Load(i int) (*data.RGB, error) {
	img, err := p.Src.Load(p.Orig[p.original(i)])
	if err != nil || i < len(p.Orig) {
		return img, err
	}
	c := p.Copies[i-len(p.Orig)]
	return ApplyEdit(img, c.Edit, rand.New(rand.NewPCG(c.Seed, 0x5eed)))
}

// ApplyEdit returns an edited copy of img.
func ApplyEdit(img *data.RGB, e Edit, rng *rand.Rand) (*data.RGB, error) {
	out := &data.RGB{H: img.H, W: img.W, Pix: append([]uint8(nil), img.Pix...)}
	switch e {
	case EditCopy:
	case EditFlip:
		for y := range img.H {
			for x := range img.W {
				copy(out.Pix[3*(y*img.W+x):3*(y*img.W+x)+3], img.Pix[3*(y*img.W+img.W-1-x):])
			}
		}
	case EditCrop:
		cw := max(1, int(math.Round(float64(img.W)*(0.75+0.15*rng.Float64()))))
		ch := max(1, int(math.Round(float64(img.H)*(0.75+0.15*rng.Float64()))))
		resizeBilinear(out, img, rng.IntN(img.W-cw+1), rng.IntN(img.H-ch+1), cw, ch)
	case EditJitter:
		contrast, bright := 0.7+0.6*rng.Float64(), 0.7+0.6*rng.Float64()
		mean := 0.0
		for _, v := range img.Pix {
			mean += float64(v)
		}
		mean /= float64(len(img.Pix))
		for j, v := range img.Pix {
			out.Pix[j] = clampByte(contrast*(float64(v)-mean) + bright*mean)
		}
	case EditJPEG:
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, toRGBA(img), &jpeg.Options{Quality: 30 + rng.IntN(41)}); err != nil {
			return nil, fmt.Errorf("jpeg edit: %w", err)
		}
		dec, err := data.Decode("edit.jpg", buf.Bytes(), data.DecodeOptions{})
		if err != nil {
			return nil, fmt.Errorf("jpeg edit: %w", err)
		}
		return dec, nil
	default:
		return nil, fmt.Errorf("unknown edit %q", e)
	}
	return out, nil
}

// resizeBilinear fills dst with the w x h window of src at (x0, y0),
// sampled at pixel centres.
func resizeBilinear(dst, src *data.RGB, x0, y0, w, h int) {
	for y := range dst.H {
		sy := min(max((float64(y)+0.5)*float64(h)/float64(dst.H)-0.5, 0), float64(h-1))
		iy := int(sy)
		fy := sy - float64(iy)
		iy1 := min(iy+1, h-1)
		for x := range dst.W {
			sx := min(max((float64(x)+0.5)*float64(w)/float64(dst.W)-0.5, 0), float64(w-1))
			ix := int(sx)
			fx := sx - float64(ix)
			ix1 := min(ix+1, w-1)
			at := func(yy, xx, c int) float64 { return float64(src.Pix[3*((y0+yy)*src.W+x0+xx)+c]) }
			for c := range 3 {
				top := at(iy, ix, c)*(1-fx) + at(iy, ix1, c)*fx
				bot := at(iy1, ix, c)*(1-fx) + at(iy1, ix1, c)*fx
				dst.Pix[3*(y*dst.W+x)+c] = clampByte(top*(1-fy) + bot*fy)
			}
		}
	}
}

func clampByte(v float64) uint8 { return uint8(min(max(math.Round(v), 0), 255)) }

func toRGBA(img *data.RGB) *image.RGBA {
	r := image.NewRGBA(image.Rect(0, 0, img.W, img.H))
	for j := range img.H * img.W {
		copy(r.Pix[4*j:4*j+3], img.Pix[3*j:3*j+3])
		r.Pix[4*j+3] = 255
	}
	return r
}

// Reach is, for every edit, the fraction of its planted copies joined to
// another image of their group (the original or a sibling copy) by an edge
// of the nearest-neighbour graph: nearest(i) lists image i's neighbours, in
// any order, and may include i; an edge runs either way. Deduplication on
// that graph drops no more copies at any threshold, except through chains
// of edges to images of other groups, which cost precision. So a low reach
// says that the descriptors or k miss that edit, and no threshold will help.
func (p *Planted) Reach(nearest func(i int) []int) map[Edit]float64 {
	reached := make([]bool, p.Len())
	for i := range p.Len() {
		for _, j := range nearest(i) {
			if j != i && j >= 0 && j < p.Len() && p.original(j) == p.original(i) {
				reached[i], reached[j] = true, true
			}
		}
	}
	found, total := map[Edit]int{}, map[Edit]int{}
	for i := len(p.Orig); i < p.Len(); i++ {
		total[p.EditOf(i)]++
		if reached[i] {
			found[p.EditOf(i)]++
		}
	}
	out := make(map[Edit]float64, len(total))
	for e, n := range total {
		out[e] = float64(found[e]) / float64(n)
	}
	return out
}

// DropPrecisionRecall scores a deduplication's drop decisions (an image is
// dropped when it is not the kept member of its component) against the
// truth's: precision is the fraction of dropped images that should be,
// recall the fraction of those that should be that are.
func DropPrecisionRecall(truth, component []int) (precision, recall float64) {
	tp, fp, fn := 0, 0, 0
	for i := range truth {
		should, did := truth[i] != i, component[i] != i
		switch {
		case should && did:
			tp++
		case did:
			fp++
		case should:
			fn++
		}
	}
	return float64(tp) / math.Max(1, float64(tp+fp)), float64(tp) / math.Max(1, float64(tp+fn))
}
