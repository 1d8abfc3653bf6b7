package train

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func countTrue(m []bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}

func TestBlockMaskRatios(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	m := NewBlockMasker(16, 16)
	for _, ratio := range []float64{0.1, 0.3, 0.5} {
		target := int(256 * ratio)
		var total float64
		const trials = 200
		for i := 0; i < trials; i++ {
			mask := m.Mask(rng, target)
			n := countTrue(mask)
			// Rectangles may overshoot the target by less than one block;
			// they never leave the grid.
			require.LessOrEqual(t, n, target+m.MaxBlock)
			total += float64(n)
		}
		mean := total / trials / float64(target)
		// BEiT-style masking lands close to its target on average.
		require.InDelta(t, 1.0, mean, 0.15, "ratio %.1f: mean masked/target %.3f", ratio, mean)
	}
}

func TestBlockMasksAreBlocky(t *testing.T) {
	// Masked patches come in rectangles: most masked patches have a masked
	// 4-neighbour, unlike a uniform random mask of the same size.
	rng := rand.New(rand.NewPCG(2, 2))
	m := NewBlockMasker(16, 16)
	neighbours, masked := 0, 0
	for i := 0; i < 50; i++ {
		mask := m.Mask(rng, 77)
		for y := 0; y < 16; y++ {
			for x := 0; x < 16; x++ {
				if !mask[y*16+x] {
					continue
				}
				masked++
				if (x > 0 && mask[y*16+x-1]) || (x < 15 && mask[y*16+x+1]) || (y > 0 && mask[(y-1)*16+x]) || (y < 15 && mask[(y+1)*16+x]) {
					neighbours++
				}
			}
		}
	}
	require.Greater(t, float64(neighbours)/float64(masked), 0.95)
}

func TestBatchMasksStratified(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	m := NewBlockMasker(16, 16)
	masks := m.BatchMasks(rng, 64, 0.5, 0.1, 0.5)
	require.Len(t, masks, 64)
	var ratios []float64
	empty := 0
	for _, mk := range masks {
		n := countTrue(mk)
		if n == 0 {
			empty++
			continue
		}
		ratios = append(ratios, float64(n)/256)
	}
	require.Equal(t, 32, empty, "half the crops are unmasked")
	lo, hi := 1.0, 0.0
	for _, r := range ratios {
		lo, hi = min(lo, r), max(hi, r)
	}
	require.Less(t, lo, 0.16, "the lowest stratum is near 0.1")
	require.Greater(t, hi, 0.42, "the highest stratum is near 0.5")
	// Same seed, same masks: runs are reproducible.
	again := m.BatchMasks(rand.New(rand.NewPCG(3, 3)), 64, 0.5, 0.1, 0.5)
	require.Equal(t, masks, again)
}

// MaxMaskedPatches holds every draw of BatchMasks (the iBOT buffers are
// sized by it) and is close to the largest draws, not twice them.
func TestMaxMaskedPatchesBoundsDraws(t *testing.T) {
	for _, batch := range []int{2, 5, 64} {
		c := Demo()
		c.Batch = batch
		g := c.Augment.GlobalSize / c.Model.PatchSize
		m := NewBlockMasker(g, g)
		bound := c.MaxMaskedPatches() - g*g // without the StepCrops slack
		most := 0
		for seed := range uint64(300) {
			total := 0
			for _, mask := range m.BatchMasks(rand.New(rand.NewPCG(seed, 1)), 2*batch, c.MaskProb, c.MaskRatio[0], c.MaskRatio[1]) {
				total += countTrue(mask)
			}
			require.LessOrEqual(t, total, bound, "batch %d seed %d", batch, seed)
			most = max(most, total)
		}
		require.GreaterOrEqual(t, float64(most), 0.8*float64(bound), "batch %d: bound %d, largest draw %d", batch, bound, most)
	}
}
