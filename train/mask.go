package train

import (
	"math"
	"math/rand/v2"
)

// BlockMasker draws BEiT-style block masks over a patch grid, as iBOT and
// DINOv2 use: rectangles of at least MinBlock patches with aspect ratio
// log-uniform in [MinAspect, 1/MinAspect], added until the target count is
// reached or no rectangle adds anything.
type BlockMasker struct {
	H, W      int     // patch grid
	MinBlock  int     // smallest rectangle area (4)
	MaxBlock  int     // largest rectangle area (half the grid)
	MinAspect float64 // 0.3
}

// NewBlockMasker returns DINOv2's masker for an h x w patch grid.
func NewBlockMasker(h, w int) BlockMasker {
	return BlockMasker{H: h, W: w, MinBlock: 4, MaxBlock: h * w / 2, MinAspect: 0.3}
}

// Mask returns a mask of H*W booleans with close to target masked patches.
func (m BlockMasker) Mask(rng *rand.Rand, target int) []bool {
	mask := make([]bool, m.H*m.W)
	count := 0
	for count < target {
		limit := min(target-count, m.MaxBlock)
		added := m.addBlock(rng, mask, limit)
		if added == 0 {
			break
		}
		count += added
	}
	return mask
}

// addBlock tries up to ten rectangles and applies the first that masks
// between 1 and limit new patches, returning how many it masked.
func (m BlockMasker) addBlock(rng *rand.Rand, mask []bool, limit int) int {
	logLo, logHi := math.Log(m.MinAspect), math.Log(1/m.MinAspect)
	for try := 0; try < 10; try++ {
		area := float64(m.MinBlock) + rng.Float64()*float64(limit-m.MinBlock)
		aspect := math.Exp(logLo + rng.Float64()*(logHi-logLo))
		h := int(math.Round(math.Sqrt(area * aspect)))
		w := int(math.Round(math.Sqrt(area / aspect)))
		if h < 1 || w < 1 || h >= m.H || w >= m.W {
			continue
		}
		top, left := rng.IntN(m.H-h+1), rng.IntN(m.W-w+1)
		already := 0
		for y := top; y < top+h; y++ {
			for x := left; x < left+w; x++ {
				if mask[y*m.W+x] {
					already++
				}
			}
		}
		added := h*w - already
		if added <= 0 || added > limit {
			continue
		}
		for y := top; y < top+h; y++ {
			for x := left; x < left+w; x++ {
				mask[y*m.W+x] = true
			}
		}
		return added
	}
	return 0
}

// BatchMasks draws the iBOT masks of n global crops: a fraction prob of them
// (DINOv2: half) get block masks whose ratios are stratified over
// [minRatio, maxRatio] (image i of k draws from the i-th of k equal
// sub-intervals), the rest none; the order is shuffled.
func (m BlockMasker) BatchMasks(rng *rand.Rand, n int, prob, minRatio, maxRatio float64) [][]bool {
	masks := make([][]bool, n)
	k := int(float64(n) * prob)
	N := m.H * m.W
	for i := 0; i < n; i++ {
		if i < k {
			lo := minRatio + (maxRatio-minRatio)*float64(i)/float64(k)
			hi := minRatio + (maxRatio-minRatio)*float64(i+1)/float64(k)
			ratio := lo + rng.Float64()*(hi-lo)
			masks[i] = m.Mask(rng, int(float64(N)*ratio))
		} else {
			masks[i] = make([]bool, N)
		}
	}
	rng.Shuffle(n, func(i, j int) { masks[i], masks[j] = masks[j], masks[i] })
	return masks
}
