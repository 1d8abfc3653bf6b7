package train

import (
	"fmt"

	"github.com/webdino/webdino/nn"
)

// Config is one DINOv2 training run.
type Config struct {
	Model nn.ViTConfig
	// Prototypes K of the DINO (and iBOT) head; HeadHidden and Bottleneck
	// size its MLP. SeparateIBOTHead gives iBOT a head of its own.
	Prototypes, HeadHidden, Bottleneck int
	SeparateIBOTHead                   bool
	// FixedPrototypeNorm keeps the weight-norm gains g of the prototype
	// layers at 1 (no gradient, no weight decay): every prototype stays a
	// unit vector and the logits are cosines, as DINO's norm_last_layer.
	// DINOv2 trains g, with weight decay.
	FixedPrototypeNorm bool
	// LayerScaleInit is the initial LayerScale gamma (the reference: 1e-5).
	LayerScaleInit float64
	// DropPath is the stochastic-depth rate of every residual branch of
	// the student (the recipe: 0.3 to 0.4).
	DropPath float64

	Augment AugmentConfig
	Batch   int // images per step and replica (each gives 2 global + Augment.Locals local crops)
	// Replicas is the number of data-parallel replicas (processes, one per
	// device) that each train on Batch images of every step; 0 or 1: one.
	// The learning rate scales with the whole step's GlobalBatch.
	Replicas int `json:",omitempty"`

	Epochs, ItersPerEpoch int
	BaseLR                float64 // scaled by sqrt(Batch/1024)
	LayerDecay            float64 // layer-wise LR decay (0.9)
	PatchEmbedLRMult      float64 // 0.2
	ClipGrad              float64 // per-module gradient-norm clip (3.0); 0 disables
	// Schedules of RECIPE.md, derived from the fields above by Schedules().
	StudentTemp float64 // 0.1
	// TeacherTemp, when positive, replaces the recipe's final teacher
	// temperature (0.07; the warmup starts at 0.04, or at TeacherTemp when lower).
	TeacherTemp float64
	// TeacherMomentum, when positive, replaces the recipe's starting teacher
	// EMA momentum (0.992, cosine to 1). The teacher averages roughly the
	// last 1/(1-m) students, so a run of a few hundred steps needs a lower one.
	TeacherMomentum float64
	// Centering is "centering" (EMA center, momentum CenterMomentum) or
	// "sinkhorn" (Sinkhorn-Knopp, 3 iterations).
	Centering      string
	CenterMomentum float64

	MaskProb    float64    // fraction of global crops that get iBOT masks (0.5)
	MaskRatio   [2]float64 // stratified mask ratio range ([0.1, 0.5])
	DINOWeight  float64
	IBOTWeight  float64
	KoLeoWeight float64
	// NCEWeight, when positive, adds InfoNCE between the student's two
	// global crops' CLS tokens (nn.NCE, temperature NCETemp): contrastive
	// instance discrimination, what copy-detection descriptors train with
	// (SSCD, which DINOv2's curation deduplicated with). DINO's CLS
	// objective alone left the demo's CLS tokens sensitive to a crop's
	// zoom and sub-patch shift (docs/curation.md).
	NCEWeight, NCETemp   float64
	FreezeLastLayerIters int // -1: one epoch, as the recipe
	Seed                 uint64
}

// Schedules returns the per-iteration hyper-parameters.
func (c Config) Schedules() Schedules {
	s := RecipeSchedules(c.BaseLR, c.GlobalBatch(), c.Epochs, c.ItersPerEpoch)
	if c.TeacherTemp > 0 {
		s.TeacherTemp.Base, s.TeacherTemp.Final = c.TeacherTemp, c.TeacherTemp
		s.TeacherTemp.WarmupStart = min(s.TeacherTemp.WarmupStart, c.TeacherTemp)
	}
	if c.TeacherMomentum > 0 {
		s.Momentum.Base, s.Momentum.WarmupStart = c.TeacherMomentum, c.TeacherMomentum
	}
	if c.FreezeLastLayerIters >= 0 {
		s.FreezeLastLayer = c.FreezeLastLayerIters
	}
	return s
}

// MaxMaskedPatches bounds the masked patches of one step, which sizes the
// iBOT buffers: BatchMasks gives crop i of the k masked ones a ratio below
// the top of the i-th of k strata of MaskRatio, and BlockMasker never
// exceeds its target, so the bound is the sum of those tops (about the mean
// ratio, not the largest, times the patches of k crops); one extra crop's
// worth covers masks given to StepCrops.
func (c Config) MaxMaskedPatches() int {
	g := c.Augment.GlobalSize / c.Model.PatchSize
	N := g * g
	k := int(float64(2*c.Batch) * c.MaskProb)
	lo, hi := c.MaskRatio[0], c.MaskRatio[1]
	total := N
	for i := 0; i < k; i++ {
		total += int(float64(N) * (lo + (hi-lo)*float64(i+1)/float64(k)))
	}
	return total
}

// ReplicaCount is Replicas, at least 1.
func (c Config) ReplicaCount() int { return max(1, c.Replicas) }

// GlobalBatch is the images of one step over all replicas.
func (c Config) GlobalBatch() int { return c.Batch * c.ReplicaCount() }

// Iterations is the run's length.
func (c Config) Iterations() int { return c.Epochs * c.ItersPerEpoch }

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	if err := c.Augment.Validate(); err != nil {
		return err
	}
	switch {
	case c.Augment.Patch != c.Model.PatchSize:
		return fmt.Errorf("train: augmentation patch %d differs from the model's %d", c.Augment.Patch, c.Model.PatchSize)
	case c.Batch < 2:
		return fmt.Errorf("train: batch %d: KoLeo and the loss normalisation need at least 2 images", c.Batch)
	case c.Replicas < 0:
		return fmt.Errorf("train: %d replicas", c.Replicas)
	case c.Prototypes <= 0 || c.Prototypes%64 != 0:
		return fmt.Errorf("train: %d prototypes: want a positive multiple of 64", c.Prototypes)
	case c.Epochs <= 0 || c.ItersPerEpoch <= 0:
		return fmt.Errorf("train: %d epochs of %d iterations", c.Epochs, c.ItersPerEpoch)
	case c.Centering != "centering" && c.Centering != "sinkhorn":
		return fmt.Errorf("train: centering %q: want centering or sinkhorn", c.Centering)
	case !(c.MaskRatio[0] >= 0 && c.MaskRatio[0] <= c.MaskRatio[1] && c.MaskRatio[1] < 1) || c.MaskProb < 0 || c.MaskProb > 1:
		return fmt.Errorf("train: mask probability %g, ratio %v out of range", c.MaskProb, c.MaskRatio)
	case c.NCEWeight < 0 || (c.NCEWeight > 0 && !(c.NCETemp > 0 && c.NCETemp < 100)):
		return fmt.Errorf("train: InfoNCE weight %g, temperature %g: want a weight >= 0 and, with a weight, a temperature in (0, 100)", c.NCEWeight, c.NCETemp)
	case !(c.DropPath >= 0 && c.DropPath < 1):
		return fmt.Errorf("train: drop-path rate %g: want [0, 1)", c.DropPath)
	case !(c.StudentTemp > 0):
		return fmt.Errorf("train: student temperature %g must be positive", c.StudentTemp)
	}
	return nil
}

// Recipe returns the reference settings for a backbone trained at global
// crop size 224: K = 65536 prototypes (131072 for L and g), heads of
// 2048/256, DINOv2's augmentation, loss weights and optimisation.
func Recipe(model nn.ViTConfig, batch, epochs int) Config {
	k, drop := 65536, 0.3
	if model.EmbedDim >= 1024 {
		k, drop = 131072, 0.4
	}
	model.PosGrid = 224 / model.PatchSize
	return Config{
		Model: model, Prototypes: k, HeadHidden: 2048, Bottleneck: 256, LayerScaleInit: 1e-5, DropPath: drop,
		Augment: DINOv2Augment(), Batch: batch, Epochs: epochs, ItersPerEpoch: 1250,
		BaseLR: 0.004, LayerDecay: 0.9, PatchEmbedLRMult: 0.2, ClipGrad: 3,
		StudentTemp: 0.1, Centering: "centering", CenterMomentum: 0.9,
		MaskProb: 0.5, MaskRatio: [2]float64{0.1, 0.5},
		DINOWeight: 1, IBOTWeight: 1, KoLeoWeight: 0.1, FreezeLastLayerIters: -1, Seed: 0,
	}
}

// Demo is the small run `make demo` trains on Fashion-MNIST (28x28 gray)
// in about ten minutes on two CPU cores: patch 4, width 64, 4 blocks,
// global crops 28 (a 7x7 grid), 4 local crops of 12, 1024 prototypes,
// batch 64, 4 epochs of 40 iterations (10,240 images). LayerScale starts
// at 1 instead of the reference's 1e-5: in a run this short the blocks
// would otherwise barely reach the CLS token (measured on two CPU cores
// after 160 steps: 50.9% k-NN with 1e-5, 54.0% with 0.1; on an H100 after
// 400 and 800 steps: 58.2% and about 60% with 0.1, 62.2% and 62.7% with 1,
// the best of a dozen settings, see docs/gpu.md; all measured before the
// initialisation's fan-in fix).
func Demo() Config {
	m := nn.ViTConfig{
		PatchSize: 4, InChans: 3, EmbedDim: 64, Depth: 4, Heads: 4, MLPHidden: 256, FFN: nn.FFNMLP,
		PosGrid: 7, LayerScale: true, QKVBias: true, LNEps: 1e-6, InterpOffset: 0.1,
	}
	a := DINOv2Augment()
	a.GlobalSize, a.LocalSize, a.Locals, a.Patch = 28, 12, 4, 4
	a.GlobalScale, a.LocalScale = [2]float64{0.4, 1}, [2]float64{0.1, 0.4}
	// The recipe's blur sigmas (0.1-2 px) are for crops of 224 and 96 px;
	// both crop sides here are 1/8 of those.
	a.Sigma = [2]float64{0.1 / 8, 2.0 / 8}
	c := Recipe(m, 64, 4)
	c.Model, c.Augment = m, a
	c.Prototypes, c.HeadHidden, c.Bottleneck = 1024, 256, 64
	c.ItersPerEpoch = 40
	c.DropPath = 0
	c.LayerScaleInit = 1
	return c
}
