//go:build !js

package curate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/eval"
)

// blobImage is a side x side grey picture of a few soft blobs, smooth and
// different from image to image as garments are.
func blobImage(rng *rand.Rand, side int) *data.RGB {
	img := &data.RGB{H: side, W: side, Pix: make([]uint8, 3*side*side)}
	type blob struct{ x, y, r, a float64 }
	var blobs []blob
	for range 5 {
		blobs = append(blobs, blob{rng.Float64() * float64(side), rng.Float64() * float64(side), (0.08 + 0.2*rng.Float64()) * float64(side), rng.Float64()*2 - 0.5})
	}
	for y := range side {
		for x := range side {
			v := 0.3
			for _, b := range blobs {
				dx, dy := float64(x)-b.x, float64(y)-b.y
				v += b.a * math.Exp(-(dx*dx+dy*dy)/(2*b.r*b.r))
			}
			c := clampByte(255 * v / 2)
			img.Pix[3*(y*side+x)], img.Pix[3*(y*side+x)+1], img.Pix[3*(y*side+x)+2] = c, c, c
		}
	}
	return img
}

func TestNewThumbAveragesAndInterpolates(t *testing.T) {
	img := &data.RGB{H: 4, W: 4, Pix: make([]uint8, 48)}
	for j := range 16 {
		img.Pix[3*j], img.Pix[3*j+1], img.Pix[3*j+2] = uint8(j*10), uint8(j*10), uint8(j*10)
	}
	th := NewThumb(img, 2)
	// Each thumbnail pixel is the mean of a 2 x 2 block.
	for y := range 2 {
		for x := range 2 {
			j := 2*y*4 + 2*x
			want := float64(10*(j+j+1+j+4+j+5)) / 4 / 255
			require.InDelta(t, want, th.Pix[y*2+x], 1e-6, "pixel %d,%d", x, y)
		}
	}
	// Enlarging interpolates between neighbours: row 0's second pixel of 8
	// sits a quarter of the way from source pixel 0 to 1.
	big := NewThumb(img, 8)
	require.InDelta(t, 0.25*10.0/255, big.Pix[1], 1e-6)
	require.InDelta(t, 0, big.Pix[0], 1e-6)
}

// editedPairs is pairs of blob images: each with an exact copy, a crop of
// 75-90% of each side, a brightness and contrast change, a crop of its
// mirror image and an unrelated image, in that order.
func editedPairs(t *testing.T, n, side int) ([]Thumb, []Pair, []bool) {
	rng := rand.New(rand.NewPCG(5, 6))
	var thumbs []Thumb
	var pairs []Pair
	var copies []bool
	for range n {
		img := blobImage(rng, side)
		thumbs = append(thumbs, NewThumb(img, side))
		a := len(thumbs) - 1
		for _, e := range [][]Edit{{EditCopy}, {EditCrop}, {EditJitter}, {EditFlip, EditCrop}} {
			c := img
			for _, e := range e {
				var err error
				c, err = ApplyEdit(c, e, rng)
				require.NoError(t, err)
			}
			thumbs = append(thumbs, NewThumb(c, side))
			pairs, copies = append(pairs, Pair{I: a, J: len(thumbs) - 1}), append(copies, true)
		}
		thumbs = append(thumbs, NewThumb(blobImage(rng, side), side))
		pairs, copies = append(pairs, Pair{I: a, J: len(thumbs) - 1}), append(copies, false)
	}
	return thumbs, pairs, copies
}

func TestAlignedCorrelationFindsCrops(t *testing.T) {
	thumbs, pairs, copies := editedPairs(t, 12, 28)
	o := DefaultVerify
	for p, pr := range pairs {
		r := AlignedCorrelation(thumbs[pr.I], thumbs[pr.J], o)
		require.Equal(t, r, AlignedCorrelation(thumbs[pr.J], thumbs[pr.I], o), "pair %d: symmetric", p)
		if copies[p] {
			require.Greater(t, r, 0.995, "pair %d: a copy, a crop or a jitter", p)
		} else {
			require.Less(t, r, o.Threshold, "pair %d: unrelated", p)
		}
	}
	// Without the crop search a crop is no copy, nor a mirrored one without
	// the mirror: the search is what finds them.
	crop, mirrored := pairs[1], pairs[3]
	require.Less(t, AlignedCorrelation(thumbs[crop.I], thumbs[crop.J], VerifyOpts{MinScale: 1, Threshold: o.Threshold, Mirror: true}), 0.99)
	require.Less(t, AlignedCorrelation(thumbs[mirrored.I], thumbs[mirrored.J], VerifyOpts{MinScale: o.MinScale, Threshold: o.Threshold}), 0.99)
}

func TestVerifyPairsMatchesReference(t *testing.T) {
	for _, side := range []int{12, 28, 32} {
		thumbs, pairs, copies := editedPairs(t, 10, side)
		for _, mirror := range []bool{false, true} {
			o := DefaultVerify
			o.Mirror = mirror
			// Chunks of 7 pairs: thumbnails shared across chunks and a
			// short last one.
			var done []int64
			got, err := verifyPairs(context.Background(), dev, pairs, thumbs, o, func(d, _ int64) { done = append(done, d) }, 7)
			require.NoError(t, err)
			require.Equal(t, []int64{7, 14, 21, 28, 35, 42, 49, 50}, done)
			for p, pr := range pairs {
				want := AlignedCorrelation(thumbs[pr.I], thumbs[pr.J], o)
				require.InDelta(t, want, got[p], 2e-4, "side %d, mirror %v, pair %d (copy %v)", side, mirror, p, copies[p])
			}
		}
	}
}

func TestVerifyPairsChecksThumbnails(t *testing.T) {
	a := Thumb{Side: 8, Pix: make([]float32, 64)}
	b := Thumb{Side: 9, Pix: make([]float32, 81)}
	_, err := VerifyPairs(context.Background(), dev, []Pair{{I: 0, J: 1}}, []Thumb{a, b}, DefaultVerify, nil)
	require.ErrorContains(t, err, "thumbnails of sides 8 and 9")
	_, err = VerifyPairs(context.Background(), dev, []Pair{{I: 0, J: 2}}, []Thumb{a, a}, DefaultVerify, nil)
	require.ErrorContains(t, err, "pair (0, 2) of 2 thumbnails")
	_, err = VerifyPairs(context.Background(), dev, nil, nil, VerifyOpts{MinScale: 0, Threshold: 0.9}, nil)
	require.ErrorContains(t, err, "min scale 0")
}

func TestDedupVerifiedJoinsVerifiedPairs(t *testing.T) {
	// Rows 0-1 are near in cosine, 2-3 only verified, 3-4 neither.
	blocks := []eval.Block{{First: 0, Neighbours: &eval.Neighbours{K: 2,
		Index:   []int{0, 1, 1, 0, 2, 3, 3, 2, 4, 3},
		Similar: []float32{1, 0.9, 1, 0.9, 1, 0.4, 1, 0.4, 1, 0.3},
	}}}
	pairs := CandidatePairs(blocks, 0.35)
	require.Equal(t, []Pair{{0, 1, 0.9}, {2, 3, 0.4}}, pairs)
	d := DedupVerified(5, blocks, 0.8, pairs, []float64{0.5, 0.995}, DefaultVerify)
	require.Equal(t, []int{0, 0, 2, 2, 4}, d.Component)
	d = DedupVerified(5, blocks, 0.8, pairs, []float64{0.5, 0.98}, DefaultVerify)
	require.Equal(t, []int{0, 0, 2, 3, 4}, d.Component)
}

// TestAlignedCorrelationFindsCropsBetweenPixels verifies 128-pixel
// pictures on 32-pixel thumbnails: a crop's edges then fall between
// thumbnail pixels, which the refinement's fractional boxes must follow,
// and a crop re-encoded as JPEG must still pass.
func TestAlignedCorrelationFindsCropsBetweenPixels(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	o := DefaultVerify
	for i := range 12 {
		img := blobImage(rng, 128)
		crop, err := ApplyEdit(img, EditCrop, rng)
		require.NoError(t, err)
		jpeg, err := ApplyEdit(crop, EditJPEG, rng)
		require.NoError(t, err)
		a := NewThumb(img, 32)
		require.Greater(t, AlignedCorrelation(a, NewThumb(crop, 32), o), 0.995, "picture %d: crop", i)
		require.Greater(t, AlignedCorrelation(a, NewThumb(jpeg, 32), o), 0.995, "picture %d: crop as JPEG", i)
		require.Less(t, AlignedCorrelation(a, NewThumb(blobImage(rng, 128), 32), o), o.Threshold, "picture %d: unrelated", i)
	}
}

func TestMakeThumbsTakesTheSmallestSide(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	imgs := map[int]*data.RGB{1: blobImage(rng, 40), 2: blobImage(rng, 20), 4: blobImage(rng, 64)}
	load := func(r int) (*data.RGB, error) {
		if img, ok := imgs[r]; ok {
			return img, nil
		}
		return nil, fmt.Errorf("row %d: no such image", r)
	}
	thumbs, failed := MakeThumbs([]int{4, 1, 2, 3}, load, 32)
	require.Len(t, thumbs, 5)
	require.Equal(t, map[int]error{3: fmt.Errorf("row 3: no such image")}, failed)
	for _, r := range []int{1, 2, 4} {
		require.Equal(t, 20, thumbs[r].Side, "row %d: the 20-pixel image sets the side", r)
	}
	require.Equal(t, NewThumb(imgs[2], 20), thumbs[2], "the smallest is not resampled twice")
	require.Zero(t, thumbs[0].Side, "row 0 was not asked for")
	// The 64-pixel image went through 32 first: close to a direct 20.
	direct := NewThumb(imgs[4], 20)
	for i := range direct.Pix {
		require.InDelta(t, direct.Pix[i], thumbs[4].Pix[i], 0.03, "pixel %d", i)
	}
	thumbs, failed = MakeThumbs([]int{1, 4}, load, 32)
	require.Empty(t, failed)
	require.Equal(t, NewThumb(imgs[1], 32), thumbs[1], "no image below 32: all at 32")
}
