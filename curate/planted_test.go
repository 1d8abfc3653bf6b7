//go:build !js

package curate

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/data"
)

// gradients is a source of n distinct 20x24 colour images: a diagonal
// ramp whose direction and colours depend on the index.
type gradients struct{ n int }

func (g gradients) Len() int          { return g.n }
func (g gradients) Path(i int) string { return fmt.Sprintf("grad/%d.png", i) }
func (g gradients) Label(i int) int   { return i % 3 }
func (g gradients) Load(i int) (*data.RGB, error) {
	const h, w = 20, 24
	img := &data.RGB{H: h, W: w, Pix: make([]uint8, h*w*3)}
	for y := range h {
		for x := range w {
			for c := range 3 {
				img.Pix[3*(y*w+x)+c] = uint8((x*(i+1+c) + y*(7*i+c)) % 256)
			}
		}
	}
	return img, nil
}

func meanAbsDiff(a, b *data.RGB) float64 {
	s := 0.0
	for j := range a.Pix {
		d := float64(a.Pix[j]) - float64(b.Pix[j])
		s += max(d, -d)
	}
	return s / float64(len(a.Pix))
}

func TestPlantedTruthAndPaths(t *testing.T) {
	p, err := NewPlanted(gradients{50}, 30, 10, Edits, 1)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(p.Copies), 10)
	require.LessOrEqual(t, len(p.Copies), 30)
	require.Equal(t, 30+len(p.Copies), p.Len())
	truth := p.Truth()
	seen := map[int]bool{}
	for i := range 30 {
		require.Equal(t, i, truth[i])
		require.Empty(t, p.EditOf(i))
		require.False(t, seen[p.Orig[i]], "originals are distinct source images")
		seen[p.Orig[i]] = true
	}
	for j, c := range p.Copies {
		i := 30 + j
		require.Less(t, c.Of, 10, "copies belong to the first groups originals")
		require.Equal(t, c.Of, truth[i])
		require.Equal(t, p.Label(c.Of), p.Label(i))
		require.Equal(t, fmt.Sprintf("%s#%s-%d", p.Path(c.Of), c.Edit, i), p.Path(i))
	}
	// A perfect deduplication scores 1 and 1; keeping everything finds
	// nothing; dropping every original as well costs precision.
	pr, rc := DropPrecisionRecall(truth, truth)
	require.Equal(t, [2]float64{1, 1}, [2]float64{pr, rc})
	keepAll := make([]int, len(truth))
	for i := range keepAll {
		keepAll[i] = i
	}
	pr, rc = DropPrecisionRecall(truth, keepAll)
	require.Equal(t, [2]float64{0, 0}, [2]float64{pr, rc})
	one := make([]int, len(truth)) // everything merged into image 0
	pr, rc = DropPrecisionRecall(truth, one)
	require.Equal(t, 1.0, rc)
	require.InDelta(t, float64(len(p.Copies))/float64(len(truth)-1), pr, 1e-12)

	_, err = NewPlanted(gradients{5}, 6, 1, Edits, 1)
	require.ErrorContains(t, err, "6 originals from a source of 5 images")
	_, err = NewPlanted(gradients{5}, 5, 1, []Edit{"rotate"}, 1)
	require.ErrorContains(t, err, `unknown edit "rotate"`)
}

// Reach counts a copy as reachable when an edge of the neighbour graph,
// either way, joins it to its original or a sibling copy, and never through
// itself or another group.
func TestPlantedReach(t *testing.T) {
	p := &Planted{Src: gradients{10}, Orig: []int{0, 1, 2, 3}, Copies: []PlantedCopy{
		{Of: 0, Edit: EditCrop}, {Of: 0, Edit: EditFlip}, {Of: 1, Edit: EditCrop}, {Of: 2, Edit: EditJPEG}, {Of: 3, Edit: EditJPEG},
	}}
	nearest := map[int][]int{
		4: {4, 1, 5}, // crop of 0: its sibling flip (5), which thereby counts too
		5: {5, 1, 2}, // flip of 0: only other groups in its own list
		6: {6, -1},   // crop of 1: itself and an empty slot
		7: {2},       // jpeg of 2: its original
		3: {8},       // original 3 lists its jpeg copy (8), which lists nothing
	}
	reach := p.Reach(func(i int) []int { return nearest[i] })
	require.Equal(t, map[Edit]float64{EditCrop: 0.5, EditFlip: 1, EditJPEG: 1}, reach)
}

func TestApplyEdit(t *testing.T) {
	src, err := gradients{9}.Load(4)
	require.NoError(t, err)
	edit := func(e Edit, seed uint64) *data.RGB {
		out, err := ApplyEdit(src, e, rand.New(rand.NewPCG(seed, 0)))
		require.NoError(t, err)
		require.Equal(t, [2]int{src.H, src.W}, [2]int{out.H, out.W}, e)
		return out
	}
	require.Equal(t, src.Pix, edit(EditCopy, 1).Pix)

	flip := edit(EditFlip, 1)
	for y := range src.H {
		for x := range src.W {
			for c := range 3 {
				require.Equal(t, src.Pix[3*(y*src.W+x)+c], flip.Pix[3*(y*src.W+src.W-1-x)+c])
			}
		}
	}
	require.Equal(t, flip.Pix, edit(EditFlip, 2).Pix, "a flip draws nothing")
	require.NotEqual(t, src.Pix, flip.Pix)

	// A crop is a magnified part: not the source, and the same for the
	// same seed (Planted.Load must give the same pixels every call).
	crop := edit(EditCrop, 3)
	require.NotEqual(t, src.Pix, crop.Pix)
	require.Equal(t, crop.Pix, edit(EditCrop, 3).Pix)

	// JPEG at quality 30-70 keeps the picture: a few levels of error.
	jp := edit(EditJPEG, 4)
	d := meanAbsDiff(src, jp)
	require.Greater(t, d, 0.0)
	require.Less(t, d, 40.0)

	// Jitter keeps the mean's place and scales contrast: the pixels stay
	// ordered as they were (ties aside) where they do not clip.
	jit := edit(EditJitter, 5)
	require.NotEqual(t, src.Pix, jit.Pix)
	for j := 1; j < len(src.Pix); j++ {
		if src.Pix[j] > src.Pix[j-1] && jit.Pix[j] != 0 && jit.Pix[j] != 255 && jit.Pix[j-1] != 0 && jit.Pix[j-1] != 255 {
			require.GreaterOrEqual(t, jit.Pix[j], jit.Pix[j-1])
		}
	}
}
