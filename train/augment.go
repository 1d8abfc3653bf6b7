package train

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// AugmentConfig is DINOv2's multi-crop augmentation. Crop sizes are
// parameters (the Fashion-MNIST demo uses e.g. 28 -> global 28, local 14).
type AugmentConfig struct {
	GlobalSize, LocalSize int // output sides, multiples of Patch
	Locals                int // local crops per image
	Patch                 int
	GlobalScale           [2]float64 // area fraction of RandomResizedCrop
	LocalScale            [2]float64
	Ratio                 [2]float64 // aspect ratio w/h range
	FlipP                 float64
	JitterP               float64 // colour jitter, applied with p; ops in a random order
	Brightness, Contrast  float64 // factor drawn from [max(0, 1-x), 1+x]
	Saturation            float64
	Hue                   float64 // factor drawn from [-x, x]
	GrayP                 float64
	// BlurP is the probability of the Gaussian blur for global crop 1,
	// global crop 2 and local crops: the paper's 1.0, 0.1, 0.5. (The
	// reference code passes these to a RandomApply that keeps the image
	// with probability p, i.e. blurs with 1 - p: 0, 0.9, 0.5.)
	BlurP     [3]float64
	Sigma     [2]float64 // blur standard deviation, uniform
	SolarizeP float64    // global crop 2 only
	Norm      nn.Norm
}

// DINOv2Augment is the recipe's configuration: 2 global crops of 224 and 8
// local crops of 98 (patch 14).
func DINOv2Augment() AugmentConfig {
	return AugmentConfig{
		GlobalSize: 224, LocalSize: 98, Locals: 8, Patch: 14,
		GlobalScale: [2]float64{0.32, 1}, LocalScale: [2]float64{0.05, 0.32}, Ratio: [2]float64{3.0 / 4, 4.0 / 3},
		FlipP: 0.5, JitterP: 0.8, Brightness: 0.4, Contrast: 0.4, Saturation: 0.2, Hue: 0.1, GrayP: 0.2,
		BlurP: [3]float64{1, 0.1, 0.5}, Sigma: [2]float64{0.1, 2}, SolarizeP: 0.2, Norm: nn.ImageNetNorm,
	}
}

// Validate reports the first setting that cannot work.
func (c AugmentConfig) Validate() error {
	prob := func(p float64) bool { return p >= 0 && p <= 1 }
	switch {
	case c.Patch <= 0 || c.GlobalSize <= 0 || c.LocalSize <= 0 || c.GlobalSize%c.Patch != 0 || c.LocalSize%c.Patch != 0:
		return fmt.Errorf("augment: crop sizes %d and %d must be positive multiples of the patch size %d", c.GlobalSize, c.LocalSize, c.Patch)
	case c.Locals < 0:
		return fmt.Errorf("augment: %d local crops", c.Locals)
	case !(c.GlobalScale[0] > 0 && c.GlobalScale[0] <= c.GlobalScale[1] && c.GlobalScale[1] <= 1) ||
		!(c.LocalScale[0] > 0 && c.LocalScale[0] <= c.LocalScale[1] && c.LocalScale[1] <= 1):
		return fmt.Errorf("augment: scales %v, %v must be ranges within (0, 1]", c.GlobalScale, c.LocalScale)
	case !(c.Ratio[0] > 0 && c.Ratio[0] <= c.Ratio[1]):
		return fmt.Errorf("augment: ratio %v must be a positive range", c.Ratio)
	case !prob(c.FlipP) || !prob(c.JitterP) || !prob(c.GrayP) || !prob(c.SolarizeP) || !prob(c.BlurP[0]) || !prob(c.BlurP[1]) || !prob(c.BlurP[2]):
		return fmt.Errorf("augment: probabilities must lie in [0, 1]")
	case c.Brightness < 0 || c.Contrast < 0 || c.Saturation < 0 || c.Hue < 0 || c.Hue > 0.5:
		return fmt.Errorf("augment: jitter strengths must be >= 0 and hue <= 0.5")
	case !(c.Sigma[0] > 0 && c.Sigma[0] <= c.Sigma[1]):
		return fmt.Errorf("augment: blur sigma %v must be a positive range", c.Sigma)
	case min(c.GlobalSize, c.LocalSize) < 5 && max(c.BlurP[0], c.BlurP[1], c.BlurP[2]) > 0:
		return fmt.Errorf("augment: blurring crops of %d px: the 9-tap blur needs at least 5", min(c.GlobalSize, c.LocalSize))
	}
	return nil
}

// RandomResizedCrop draws torchvision's RandomResizedCrop box (top, left,
// height, width) in an h x w image: up to 10 tries of an area fraction
// uniform in scale and a log-uniform aspect ratio w/h, rounded half to even,
// kept when it fits; otherwise the largest centred box with the ratio
// clamped into range.
func RandomResizedCrop(rng *rand.Rand, h, w int, scale, ratio [2]float64) (top, left, ch, cw int) {
	area := float64(h * w)
	lr0, lr1 := math.Log(ratio[0]), math.Log(ratio[1])
	for try := 0; try < 10; try++ {
		target := area * (scale[0] + rng.Float64()*(scale[1]-scale[0]))
		ar := math.Exp(lr0 + rng.Float64()*(lr1-lr0))
		cw = int(math.RoundToEven(math.Sqrt(target * ar)))
		ch = int(math.RoundToEven(math.Sqrt(target / ar)))
		if cw > 0 && cw <= w && ch > 0 && ch <= h {
			return rng.IntN(h - ch + 1), rng.IntN(w - cw + 1), ch, cw
		}
	}
	in := float64(w) / float64(h)
	switch {
	case in < ratio[0]:
		cw, ch = w, int(math.RoundToEven(float64(w)/ratio[0]))
	case in > ratio[1]:
		ch, cw = h, int(math.RoundToEven(float64(h)*ratio[1]))
	default:
		ch, cw = h, w
	}
	return (h - ch) / 2, (w - cw) / 2, ch, cw
}

// Augmenter draws the multi-crop parameters on the CPU from a seeded PCG
// generator (so runs are reproducible, and resumable from the state
// MarshalBinary saves) and applies them on the GPU.
type Augmenter struct {
	Cfg           AugmentConfig
	src           *rand.PCG
	rng           *rand.Rand
	global, local *nn.CropPlan
}

// NewAugmenter checks cfg and seeds the generator.
func NewAugmenter(cfg AugmentConfig, seed uint64) (*Augmenter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src := rand.NewPCG(seed, 0x9e3779b97f4a7c15)
	return &Augmenter{Cfg: cfg, src: src, rng: rand.New(src)}, nil
}

// MarshalBinary saves the generator state; UnmarshalBinary restores it.
func (a *Augmenter) MarshalBinary() ([]byte, error) { return a.src.MarshalBinary() }

// UnmarshalBinary restores a state saved by MarshalBinary.
func (a *Augmenter) UnmarshalBinary(b []byte) error { return a.src.UnmarshalBinary(b) }

// Sample draws the crops of a batch of images of the given (h, w) sizes.
// The order is crop-major, as DINOv2's collate stacks them: global crop k
// of image b is global[k*B+b] (k = 0, 1), local crop k of image b is
// local[k*B+b]. For each image it draws global crop 1, global crop 2, then
// the local crops, each in the order box, flip, jitter, grayscale, blur,
// solarize.
func (a *Augmenter) Sample(sizes [][2]int) (global, local []nn.Crop) {
	c, B := a.Cfg, len(sizes)
	global, local = make([]nn.Crop, 2*B), make([]nn.Crop, c.Locals*B)
	for b, s := range sizes {
		for k := 0; k < 2; k++ {
			global[k*B+b] = a.crop(b, s, c.GlobalSize, c.GlobalScale, c.BlurP[k], k == 1)
		}
		for k := 0; k < c.Locals; k++ {
			local[k*B+b] = a.crop(b, s, c.LocalSize, c.LocalScale, c.BlurP[2], false)
		}
	}
	return global, local
}

func (a *Augmenter) crop(img int, size [2]int, out int, scale [2]float64, blurP float64, solarize bool) nn.Crop {
	c, r := a.Cfg, a.rng
	cr := nn.Crop{Image: img, RH: out, RW: out}
	cr.Top, cr.Left, cr.H, cr.W = RandomResizedCrop(r, size[0], size[1], scale, c.Ratio)
	cr.Flip = r.Float64() < c.FlipP
	ph := &cr.Photo
	if r.Float64() < c.JitterP {
		for _, i := range r.Perm(4) {
			ph.Jitter = append(ph.Jitter, nn.JitterOp(i))
		}
		uniform := func(lo, hi float64) float64 { return lo + r.Float64()*(hi-lo) }
		ph.Brightness = uniform(max(0, 1-c.Brightness), 1+c.Brightness)
		ph.Contrast = uniform(max(0, 1-c.Contrast), 1+c.Contrast)
		ph.Saturation = uniform(max(0, 1-c.Saturation), 1+c.Saturation)
		ph.Hue = uniform(-c.Hue, c.Hue)
	}
	ph.Gray = r.Float64() < c.GrayP
	if r.Float64() < blurP {
		ph.Sigma = c.Sigma[0] + r.Float64()*(c.Sigma[1]-c.Sigma[0])
	}
	ph.Solarize = solarize && r.Float64() < c.SolarizeP
	return cr
}

// Record draws the crops of batch and records them into global [2B, 3, G,
// G] and local [Locals*B, 3, L, L] (crop-major, see Sample), normalised by
// Cfg.Norm. The plans it fills are reused by the next call: submit the
// recording before calling Record again.
func (a *Augmenter) Record(rec *gpu.Recorder, global, local *gpu.Tensor, batch *nn.ImageBatch) error {
	if batch == nil {
		return rec.Fail(fmt.Errorf("augment: batch is nil"))
	}
	sizes := make([][2]int, batch.Len())
	for i := range sizes {
		sizes[i][0], sizes[i][1] = batch.Size(i)
	}
	gc, lc := a.Sample(sizes)
	c := a.Cfg
	if err := a.fill(rec, &a.global, batch, gc, c.GlobalSize); err != nil {
		return err
	}
	if err := nn.Augment(rec, global, batch, a.global, c.Norm); err != nil {
		return err
	}
	if c.Locals == 0 {
		return nil
	}
	if err := a.fill(rec, &a.local, batch, lc, c.LocalSize); err != nil {
		return err
	}
	return nn.Augment(rec, local, batch, a.local, c.Norm)
}

func (a *Augmenter) fill(rec *gpu.Recorder, p **nn.CropPlan, batch *nn.ImageBatch, crops []nn.Crop, size int) error {
	if *p == nil {
		plan, err := nn.NewCropPlan(rec.Device(), batch, crops, size, size)
		if err != nil {
			return rec.Fail(fmt.Errorf("augment: %w", err))
		}
		*p = plan
		return nil
	}
	if err := (*p).Set(batch, crops, size, size); err != nil {
		return rec.Fail(fmt.Errorf("augment: %w", err))
	}
	return nil
}

// Release frees the plans' GPU buffers.
func (a *Augmenter) Release() {
	for _, p := range []*nn.CropPlan{a.global, a.local} {
		if p != nil {
			p.Release()
		}
	}
	a.global, a.local = nil, nil
}
