package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// Losses are one step's loss terms (unweighted, as the reference logs them),
// their weighted total, per-module gradient norms before clipping, and the
// scheduled values the step used.
type Losses struct {
	Step                     int
	DINO, IBOT, KoLeo, Total float64
	NCE                      float64 // InfoNCE (Config.NCEWeight), unweighted
	// TeacherEntropy is the mean entropy of the teacher's CLS distributions
	// (centred and sharpened): DINO - TeacherEntropy is the mean KL from
	// teacher to student. Near ln K the teacher is uniform and the DINO
	// loss teaches little.
	TeacherEntropy                float64
	GradNorm                      map[string]float64
	LR, WD, Momentum, TeacherTemp float64
	MaskedPatches                 int
	// Exchange is, with replicas, the step's time spent combining with
	// the others, not counting waits for this replica's own GPU work:
	// readbacks, the network, uploads (and Sinkhorn-Knopp's small kernels
	// in between). The heads' gradients cross the network while the GPU
	// computes the backbone's, so part of it overlaps GPU work.
	Exchange time.Duration
	// Wait is the part of Exchange spent at the gradient exchange waiting
	// for the slowest replica to get there: load imbalance, not transfer.
	Wait time.Duration
}

// ErrNonFinite is returned by Step when a loss or gradient is NaN or
// infinite; the parameters, optimiser moments and step count are left as
// they were before the step (the teacher centers and the generators have
// moved on: stop the run and resume from its last checkpoint).
var ErrNonFinite = errors.New("non-finite loss or gradient")

// Group is what data-parallel training needs of its replicas: sums and
// maxima of vectors, the exchange of generator states, and a barrier that
// tells waiting for the slowest replica from transfer (dist.Group is one).
// Every replica must make the same calls in the same order.
type Group interface {
	nn.Reducer
	Rank() int
	Size() int
	AllGather(b []byte) ([][]byte, error)
	Barrier() error
}

// Trainer runs DINOv2 steps on one device: student and teacher, AdamW
// moments and gradients in flat buffers per module, and every activation of
// a step allocated once. As one replica of a data-parallel run (NewReplica)
// it trains on its share of each step's images and combines gradients,
// teacher centers and Sinkhorn-Knopp's sums with the other replicas.
type Trainer struct {
	Cfg              Config
	Sched            Schedules
	Student, Teacher *Model
	// Grads, M and V are per module, in Modules() order.
	Grads, M, V []*nn.Flat
	// Center and IBOTCenter are the teacher centers (centering mode).
	Center, IBOTCenter *gpu.Tensor
	// StepsDone counts completed steps; the next step uses its schedules.
	StepsDone int

	dev      *gpu.Device
	group    Group         // nil: one device
	exchange time.Duration // of this step, see Losses.Exchange
	wait     time.Duration // of this step, see Losses.Wait
	// reads are the parts of the exchange read back while the GPU computes
	// the rest of the step, for combine: the teacher's center sums with
	// the heads' gradients, then the backbone's from its last block down
	// in buckets of at least bucket values.
	reads  []pendingPart
	bucket int
	// backboneRead is where the backbone gradients that reads cover start
	// (a parameter name; "": none).
	backboneRead string
	// exchangeBuf holds what combine sends: the center sums (centering),
	// the heads' gradients, the backbone's.
	exchangeBuf []float32
	aug         *Augmenter
	maskRS      *rand.PCG
	masker      BlockMasker

	global, local      *gpu.Tensor
	sG, sL, tG         *nn.ViTActs
	sHead, tHead       *nn.HeadActs
	sIbot, tIbot       *nn.HeadActs // capacity: every global patch
	clsG, clsL, maskIx *gpu.Tensor
	tProbs, tPatch     *gpu.Tensor // tPatch: Sinkhorn-Knopp only (centering overwrites the teacher's iBOT logits)
	// dinoOut holds the DINO loss per student row (dino.loss views it) and,
	// after a gap to the storage alignment, the entropy of each row of
	// tProbs (tEntropy): one readback gives both.
	dinoOut, tEntropy *gpu.Tensor
	ibotCenterPrev    *gpu.Tensor // centering: IBOTCenter before this step's update
	// batchCenter and batchIBOTCenter are, with replicas and centering,
	// the mean teacher logits of the step: the replica's until the
	// gradients are combined, then all replicas'.
	batchCenter, batchIBOTCenter *gpu.Tensor
	targets, skScratch           *gpu.Tensor
	dino, ibot                   xent
	dDINO, ibotW                 *gpu.Tensor
	koleo                        [2]koleoActs
	koleoW                       *gpu.Tensor
	nce                          *nn.NCE       // nil without NCEWeight
	maxMasked                    int           // capacity of the iBOT buffers (rows)
	norms                        []*gpu.Tensor // per module, one element each (bound views must be aligned)
	partials                     *gpu.Tensor
	bufs                         []*gpu.Tensor
}

// xent holds one SoftmaxCrossEntropy's per-row outputs.
type xent struct{ loss, lse, tsum *gpu.Tensor }

// koleoActs are KoLeo's tensors for one global crop's CLS tokens.
type koleoActs struct{ y, norm, nn, loss, dy *gpu.Tensor }

// koleoEps is the recipe's eps, for the normalisation and the log.
const koleoEps = 1e-8

// NewTrainer builds a trainer for c on one device: a student initialised
// from c.Seed, the teacher a copy of it, zero moments and centers.
func NewTrainer(dev *gpu.Device, c Config) (*Trainer, error) {
	if c.ReplicaCount() != 1 {
		return nil, fmt.Errorf("train: a run of %d replicas needs NewReplica and a group", c.Replicas)
	}
	return NewReplica(dev, c, nil)
}

// NewReplica builds replica g.Rank() of a data-parallel run of c.Replicas
// replicas (g nil: the only one). Every replica starts from the same
// initialisation; each augments and masks its own images with generators
// seeded from c.Seed and its rank (rank 0's are those of a run on one
// device).
func NewReplica(dev *gpu.Device, c Config, g Group) (*Trainer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	size := 1
	if g != nil {
		size = g.Size()
	}
	if size != c.ReplicaCount() {
		return nil, fmt.Errorf("train: config for %d replicas in a group of %d", c.ReplicaCount(), size)
	}
	t := &Trainer{Cfg: c, Sched: c.Schedules(), dev: dev, bucket: exchangeBucket}
	if size > 1 {
		if err := sameConfig(g, c); err != nil {
			return nil, err
		}
		t.group = g
	}
	if err := t.alloc(); err != nil {
		t.Release()
		return nil, err
	}
	if err := t.Student.Init(c.Seed, c.LayerScaleInit); err != nil {
		t.Release()
		return nil, err
	}
	if err := t.copyStudentToTeacher(); err != nil {
		t.Release()
		return nil, err
	}
	return t, nil
}

// sameConfig fails unless every replica of g was given config c: a
// replica started with another seed, batch or model would otherwise train
// on silently.
func sameConfig(g Group, c Config) error {
	mine, err := json.Marshal(c)
	if err != nil {
		return err
	}
	all, err := g.AllGather(mine)
	if err != nil {
		return fmt.Errorf("train: compare the replicas' configs: %w", err)
	}
	for r, other := range all {
		if !bytes.Equal(other, mine) {
			return fmt.Errorf("train: replica %d was started with another config than replica %d:\n  replica %d: %s\n  replica %d: %s", r, g.Rank(), r, other, g.Rank(), mine)
		}
	}
	return nil
}

func (t *Trainer) alloc() error {
	c := t.Cfg
	var err error
	if t.Student, err = NewModel(t.dev, c); err != nil {
		return err
	}
	if t.Teacher, err = NewModel(t.dev, c); err != nil {
		return err
	}
	for _, mod := range t.Student.Modules() {
		for _, dst := range []*[]*nn.Flat{&t.Grads, &t.M, &t.V} {
			f, err := mod.Params.Layout.Alloc(t.dev, mod.Name+" state")
			if err != nil {
				return err
			}
			*dst = append(*dst, f)
		}
	}
	seed := c.Seed
	if t.group != nil {
		// Distinct streams per replica; rank 0 keeps the single-device ones.
		seed ^= uint64(t.group.Rank()) * 0xbf58476d1ce4e5b9
	}
	if t.aug, err = NewAugmenter(c.Augment, seed); err != nil {
		return err
	}
	t.maskRS = rand.NewPCG(seed, 0x853c49e6748fea9b)
	a := c.Augment
	P, B, L, K, D := c.Model.PatchSize, c.Batch, a.Locals, c.Prototypes, c.Model.EmbedDim
	g := a.GlobalSize / P
	t.masker = NewBlockMasker(g, g)
	bb := t.Student.Backbone
	if t.sG, err = bb.NewActs(2*B, a.GlobalSize, a.GlobalSize, true, 0); err != nil {
		return err
	}
	if L > 0 {
		if t.sL, err = bb.NewActs(L*B, a.LocalSize, a.LocalSize, true, 0); err != nil {
			return err
		}
	}
	if t.tG, err = t.Teacher.Backbone.NewActs(2*B, a.GlobalSize, a.GlobalSize, false, 0); err != nil {
		return err
	}
	maxMasked := c.MaxMaskedPatches()
	t.maxMasked = maxMasked
	if t.sHead, err = t.Student.Head.NewActs((2+L)*B, true, false); err != nil {
		return err
	}
	if t.tHead, err = t.Teacher.Head.NewActs(2*B, false, false); err != nil {
		return err
	}
	// The student's patch logits give way to their gradient in the iBOT
	// loss's backward: at 65536 prototypes the largest tensor of a step.
	if t.sIbot, err = t.Student.ibot().NewActs(maxMasked, true, true); err != nil {
		return err
	}
	if t.tIbot, err = t.Teacher.ibot().NewActs(maxMasked, false, false); err != nil {
		return err
	}
	var aerr error
	ten := func(shape ...int) *gpu.Tensor {
		if aerr != nil {
			return nil
		}
		var x *gpu.Tensor
		x, aerr = t.dev.NewTensor("train", shape...)
		t.bufs = append(t.bufs, x)
		return x
	}
	t.global = ten(2*B, 3, a.GlobalSize, a.GlobalSize)
	if L > 0 {
		t.local = ten(L*B, 3, a.LocalSize, a.LocalSize)
	}
	t.clsG, t.clsL, t.maskIx = ten(2*B), ten(max(L*B, 1)), ten(maxMasked)
	t.tProbs, t.targets = ten(2*B, K), ten((2+L)*B, K)
	if c.Centering == "sinkhorn" {
		t.tPatch = ten(maxMasked, K)
	} else if t.group == nil {
		t.ibotCenterPrev = ten(K)
	} else {
		t.batchCenter, t.batchIBOTCenter = ten(K), ten(K)
	}
	t.skScratch = ten(nn.SinkhornScratchLen(max(maxMasked, 2*B), K))
	t.Center, t.IBOTCenter = ten(K), ten(K)
	R := (2 + L) * B
	align := int(t.dev.Limits().StorageOffsetAlign / 4)
	entOff := (R + align - 1) / align * align
	t.dinoOut = ten(entOff + 2*B)
	if aerr == nil {
		var err1, err2 error
		t.tEntropy, err1 = t.dinoOut.View(entOff, 2*B)
		loss, err2 := t.dinoOut.View(0, R)
		aerr = errors.Join(err1, err2)
		t.dino = xent{loss, ten(R), ten(R)}
	}
	t.ibot = xent{ten(maxMasked), ten(maxMasked), ten(maxMasked)}
	t.dDINO, t.ibotW = ten(R), ten(maxMasked)
	for k := range t.koleo {
		t.koleo[k] = koleoActs{y: ten(B, D), norm: ten(B), nn: ten(B), loss: ten(1), dy: ten(B, D)}
	}
	t.koleoW = ten(1)
	if c.NCEWeight > 0 && aerr == nil {
		t.nce, aerr = nn.NewNCE(t.dev, B, D, c.NCEWeight)
	}
	var views []*gpu.Tensor
	for _, f := range t.Grads {
		views = append(views, f.Chunks...)
	}
	for range t.Grads {
		t.norms = append(t.norms, ten(1))
	}
	t.partials = ten(nn.NormPartials(views...))
	if aerr != nil {
		return aerr
	}
	// Constant index and weight tensors.
	cls := func(n, T int) []uint32 {
		ix := make([]uint32, n)
		for i := range ix {
			ix[i] = uint32(i * T)
		}
		return ix
	}
	if err := t.dev.WriteU32(t.clsG, cls(2*B, t.sG.T)); err != nil {
		return err
	}
	if L > 0 {
		if err := t.dev.WriteU32(t.clsL, cls(L*B, t.sL.T)); err != nil {
			return err
		}
	}
	// DINO: each term is a mean over the batch and the terms are averaged:
	// 2 global terms and 2 per local crop (its row carries both teachers).
	terms := 2 + 2*L
	d := make([]float32, R)
	for i := range d {
		d[i] = float32(c.DINOWeight / float64(B*terms))
	}
	if err := t.dev.Write(t.dDINO, d); err != nil {
		return err
	}
	return t.dev.Write(t.koleoW, []float32{float32(c.KoLeoWeight)})
}

// Release frees everything.
func (t *Trainer) Release() {
	for _, m := range []*Model{t.Student, t.Teacher} {
		if m != nil {
			m.Release()
		}
	}
	for _, fs := range [][]*nn.Flat{t.Grads, t.M, t.V} {
		for _, f := range fs {
			f.Release()
		}
	}
	for _, a := range []*nn.ViTActs{t.sG, t.sL, t.tG} {
		if a != nil {
			a.Release()
		}
	}
	for _, a := range []*nn.HeadActs{t.sHead, t.tHead, t.sIbot, t.tIbot} {
		if a != nil {
			a.Release()
		}
	}
	if t.aug != nil {
		t.aug.Release()
	}
	if t.nce != nil {
		t.nce.Release()
	}
	for _, b := range t.bufs {
		if b != nil {
			b.Buf.Release()
		}
	}
	t.bufs = nil
}

func (t *Trainer) copyStudentToTeacher() error {
	rec := t.dev.Record()
	sm, tm := t.Student.Modules(), t.Teacher.Modules()
	for i := range sm {
		for j := range sm[i].Params.Chunks {
			rec.Copy(tm[i].Params.Chunks[j], sm[i].Params.Chunks[j])
		}
	}
	return rec.Submit()
}

// firstRows views rows [from, from+n) of a [R, ...] tensor.
func firstRows(x *gpu.Tensor, from, n int) (*gpu.Tensor, error) {
	w := x.Len() / x.Dim(0)
	return x.View(from*w, append([]int{n}, x.Shape[1:]...)...)
}

// rows is firstRows for recording: a bad view fails the recording.
func rows(rec *gpu.Recorder, x *gpu.Tensor, from, n int) *gpu.Tensor {
	v, err := firstRows(x, from, n)
	if err != nil {
		rec.Fail(err)
	}
	return v
}

// flat2 views a [B, T, D] tensor as [B*T, D].
func flat2(rec *gpu.Recorder, x *gpu.Tensor) *gpu.Tensor {
	v, err := x.Reshape(x.Len()/x.Dim(-1), x.Dim(-1))
	if err != nil {
		rec.Fail(err)
	}
	return v
}

// setMasks uploads the iBOT masks of the 2B global crops, the masked rows'
// indices into the global tokens, and their loss weights: 1 / (the image's
// masked patches) / (number of global crops), the reference's
// normalisation. It returns the number of masked patches.
func (t *Trainer) setMasks(ms [][]bool) (int, error) {
	c := t.Cfg
	B2, N, T := 2*c.Batch, t.sG.N, t.sG.T
	R := c.Model.Registers
	if len(ms) != B2 {
		return 0, fmt.Errorf("%d masks for %d global crops", len(ms), B2)
	}
	masked := 0
	for _, m := range ms {
		for _, v := range m {
			if v {
				masked++
			}
		}
	}
	if masked > t.maxMasked {
		return 0, fmt.Errorf("%d masked patches, more than the %d that MaskProb and MaskRatio allow", masked, t.maxMasked)
	}
	flat := make([]bool, 0, B2*N)
	var ix []uint32
	var w []float32
	for i, m := range ms {
		if len(m) != N {
			return 0, fmt.Errorf("mask %d has %d patches, want %d", i, len(m), N)
		}
		flat = append(flat, m...)
		count := 0
		for _, v := range m {
			if v {
				count++
			}
		}
		for n, v := range m {
			if v {
				ix = append(ix, uint32(i*T+1+R+n))
				w = append(w, float32(c.IBOTWeight/float64(count)/float64(B2)))
			}
		}
	}
	if err := t.sG.SetMask(t.dev, flat); err != nil {
		return 0, err
	}
	if len(ix) == 0 {
		return 0, nil
	}
	ixView, err1 := firstRows(t.maskIx, 0, len(ix))
	wView, err2 := firstRows(t.ibotW, 0, len(w))
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	if err := t.dev.WriteU32(ixView, ix); err != nil {
		return 0, err
	}
	return len(ix), t.dev.Write(wView, w)
}

// Step trains on one batch of exactly Cfg.Batch images: augmentation,
// teacher and student passes, the three losses, backward, clipping, AdamW
// and the teacher EMA. On ErrNonFinite no parameter was updated (see
// ErrNonFinite).
func (t *Trainer) Step(batch *nn.ImageBatch) (Losses, error) {
	c := t.Cfg
	if batch == nil || batch.Len() != c.Batch {
		return Losses{Step: t.StepsDone}, fmt.Errorf("train step %d: want a batch of %d images", t.StepsDone, c.Batch)
	}
	masks := t.masker.BatchMasks(rand.New(t.maskRS), 2*c.Batch, c.MaskProb, c.MaskRatio[0], c.MaskRatio[1])
	rec := t.dev.Record()
	t.aug.Record(rec, t.global, t.local, batch)
	return t.step(rec, masks)
}

// StepCrops trains on given crops instead of augmenting images: global
// [2B, 3, G, G] and local [Locals*B, 3, L, L], normalised and crop-major
// (see Augmenter.Sample), with the iBOT masks of the 2B global crops. The
// whole-step fixtures drive the trainer through it.
func (t *Trainer) StepCrops(global, local []float32, masks [][]bool) (Losses, error) {
	if err := t.dev.Write(t.global, global); err != nil {
		return Losses{Step: t.StepsDone}, fmt.Errorf("train step %d: global crops: %w", t.StepsDone, err)
	}
	if t.local != nil {
		if err := t.dev.Write(t.local, local); err != nil {
			return Losses{Step: t.StepsDone}, fmt.Errorf("train step %d: local crops: %w", t.StepsDone, err)
		}
	}
	return t.step(t.dev.Record(), masks)
}

// step records everything after the crops into rec and runs it.
func (t *Trainer) step(rec *gpu.Recorder, masks [][]bool) (Losses, error) {
	it := t.StepsDone
	s := t.Sched
	lo := Losses{Step: it, LR: s.LR.At(it), WD: s.WD.At(it), Momentum: s.Momentum.At(it), TeacherTemp: s.TeacherTemp.At(it)}
	M, err := t.setMasks(masks)
	if err != nil {
		return lo, fmt.Errorf("train step %d: masks: %w", it, err)
	}
	for _, a := range []*nn.ViTActs{t.sG, t.sL} {
		if a == nil {
			continue
		}
		if err := a.SetDropPath(t.dev, t.Cfg.DropPath, rand.New(t.maskRS)); err != nil {
			return lo, fmt.Errorf("train step %d: %w", it, err)
		}
	}
	// Replicas agree on whether any crop is masked: iBOT's collectives run
	// on every replica or on none.
	lo.MaskedPatches = M
	t.exchange, t.wait = 0, 0
	if t.group != nil {
		start := time.Now()
		n := []float32{float32(M)}
		if err := t.group.AllReduceSum(n); err != nil {
			return lo, fmt.Errorf("train step %d: masked patches: %w", it, err)
		}
		lo.MaskedPatches = int(n[0])
		t.exchange += time.Since(start)
	}
	rec = t.forwardBackward(rec, M, lo.MaskedPatches > 0, float32(lo.TeacherTemp))
	if err := rec.Submit(); err != nil {
		t.discardReads()
		return lo, fmt.Errorf("train step %d: %w", it, err)
	}
	if t.group != nil {
		if err := t.combine(M, lo.MaskedPatches); err != nil {
			return lo, fmt.Errorf("train step %d: %w", it, err)
		}
		rec = t.dev.Record()
		t.recordNorms(rec)
		if err := rec.Submit(); err != nil {
			return lo, fmt.Errorf("train step %d: %w", it, err)
		}
	}
	if err := t.readLosses(&lo, M); err != nil {
		return lo, fmt.Errorf("train step %d: %w", it, err)
	}
	rec = t.dev.Record()
	t.update(rec, lo, it < s.FreezeLastLayer)
	if err := rec.Submit(); err != nil {
		return lo, fmt.Errorf("train step %d: update: %w", it, err)
	}
	t.StepsDone++
	lo.Exchange, lo.Wait = t.exchange, t.wait
	return lo, nil
}

// forwardBackward records the step from the crops to the gradients and
// returns the recorder to submit: with replicas and Sinkhorn-Knopp, rec is
// submitted after the teacher pass and the rest goes into a new one.
// M counts this replica's masked patches; anyMasked is whether any replica
// has some.
func (t *Trainer) forwardBackward(rec *gpu.Recorder, M int, anyMasked bool, temp float32) *gpu.Recorder {
	c := t.Cfg
	B, L := c.Batch, c.Augment.Locals
	tau := float32(c.StudentTemp)

	// Teacher on the unmasked global crops: CLS and the student's masked
	// positions through the heads, then centred probabilities.
	tb := t.Teacher
	tb.Backbone.Encode(rec, t.tG, t.global, false)
	nn.GatherRows(rec, t.tHead.X, flat2(rec, t.tG.Normed), t.clsG)
	tb.Head.Forward(rec, t.tHead)
	var sIb, tIb *nn.HeadActs
	var maskIx, tPatch *gpu.Tensor
	if M > 0 {
		var err1, err2 error
		sIb, err1 = t.sIbot.Rows(M)
		tIb, err2 = t.tIbot.Rows(M)
		if err := errors.Join(err1, err2); err != nil {
			rec.Fail(err)
			return rec
		}
		maskIx = rows(rec, t.maskIx, 0, M)
		nn.GatherRows(rec, tIb.X, flat2(rec, t.tG.Normed), maskIx)
		tb.ibot().Forward(rec, tIb)
	}
	cm := float32(c.CenterMomentum)
	switch {
	case c.Centering == "sinkhorn" && t.group != nil:
		if M > 0 {
			tPatch = rows(rec, t.tPatch, 0, M)
		}
		rec = t.sinkhornAcross(rec, tPatch, tIb, anyMasked, temp)
	case c.Centering == "sinkhorn":
		nn.SinkhornKnopp(rec, t.tProbs, t.tHead.Logits, t.skScratch, temp, 3)
		if M > 0 {
			tPatch = rows(rec, t.tPatch, 0, M)
			nn.SinkhornKnopp(rec, tPatch, tIb.Logits, t.skScratch, temp, 3)
		}
	case t.group != nil:
		// The replica's batch means; combine averages them over the
		// replicas and update moves the centers.
		nn.TeacherSoftmax(rec, t.tProbs, t.tHead.Logits, t.Center, temp)
		nn.Fill(rec, t.batchCenter, 0)
		nn.CenterUpdate(rec, t.batchCenter, t.tHead.Logits, 0)
		if M > 0 {
			nn.Fill(rec, t.batchIBOTCenter, 0)
			nn.CenterUpdate(rec, t.batchIBOTCenter, tIb.Logits, 0)
			tPatch = tIb.Logits
			nn.TeacherSoftmax(rec, tPatch, tPatch, t.IBOTCenter, temp)
		}
	default:
		nn.TeacherSoftmax(rec, t.tProbs, t.tHead.Logits, t.Center, temp)
		nn.CenterUpdate(rec, t.Center, t.tHead.Logits, cm)
		if M > 0 {
			// The targets overwrite the logits, so the center learns
			// from them first and the softmax uses its previous value.
			rec.Copy(t.ibotCenterPrev, t.IBOTCenter)
			nn.CenterUpdate(rec, t.IBOTCenter, tIb.Logits, cm)
			tPatch = tIb.Logits
			nn.TeacherSoftmax(rec, tPatch, tPatch, t.ibotCenterPrev, temp)
		}
	}
	nn.RowEntropy(rec, t.tEntropy, t.tProbs)
	// DINO targets: teacher crop 2 for student crop 1 and vice versa; every
	// local crop gets both (cross-entropy is linear in the target).
	rec.Copy(rows(rec, t.targets, 0, B), rows(rec, t.tProbs, B, B))
	rec.Copy(rows(rec, t.targets, B, B), rows(rec, t.tProbs, 0, B))
	if L > 0 {
		for j := 0; j < L; j++ {
			nn.Add(rec, rows(rec, t.targets, (2+j)*B, B), rows(rec, t.tProbs, 0, B), rows(rec, t.tProbs, B, B))
		}
	}

	// Student: masked global crops and local crops.
	st := t.Student
	st.Backbone.Encode(rec, t.sG, t.global, true)
	nn.GatherRows(rec, rows(rec, t.sHead.X, 0, 2*B), flat2(rec, t.sG.Normed), t.clsG)
	if L > 0 {
		st.Backbone.Encode(rec, t.sL, t.local, false)
		nn.GatherRows(rec, rows(rec, t.sHead.X, 2*B, L*B), flat2(rec, t.sL.Normed), t.clsL)
	}
	st.Head.Forward(rec, t.sHead)
	nn.SoftmaxCrossEntropy(rec, t.dino.loss, t.dino.lse, t.dino.tsum, t.sHead.Logits, t.targets, tau)
	if M > 0 {
		nn.GatherRows(rec, sIb.X, flat2(rec, t.sG.Normed), maskIx)
		st.ibot().Forward(rec, sIb)
		nn.SoftmaxCrossEntropy(rec, rows(rec, t.ibot.loss, 0, M), rows(rec, t.ibot.lse, 0, M), rows(rec, t.ibot.tsum, 0, M), sIb.Logits, tPatch, tau)
	}
	for k := range t.koleo {
		ka := &t.koleo[k]
		nn.L2Normalize(rec, ka.y, ka.norm, rows(rec, t.sHead.X, k*B, B), koleoEps)
		nn.KoLeo(rec, ka.loss, ka.nn, ka.y, koleoEps)
	}
	if t.nce != nil {
		t.nce.Forward(rec, rows(rec, t.sHead.X, 0, 2*B), float32(c.NCETemp))
	}

	// Backward.
	for _, g := range t.Grads {
		for _, ch := range g.Chunks {
			nn.Fill(rec, ch, 0)
		}
	}
	grads := t.moduleGrads()
	nn.SoftmaxCrossEntropyBackward(rec, t.sHead.DLogits, t.dDINO, t.sHead.Logits, t.targets, t.dino.lse, t.dino.tsum, tau, false)
	st.Head.Backward(rec, t.sHead, grads["dino_head"])
	if M > 0 {
		nn.SoftmaxCrossEntropyBackward(rec, sIb.DLogits, rows(rec, t.ibotW, 0, M), sIb.Logits, tPatch, rows(rec, t.ibot.lse, 0, M), rows(rec, t.ibot.tsum, 0, M), tau, false)
		ig := grads["dino_head"]
		if st.IBOTHead != nil {
			ig = grads["ibot_head"]
		}
		st.ibot().Backward(rec, sIb, ig)
	}
	if c.FixedPrototypeNorm {
		for _, g := range t.Grads {
			if g.Layout.Shape(prototypeGain) != nil {
				nn.Fill(rec, g.Get(prototypeGain), 0)
			}
		}
	}
	if t.group != nil {
		centers, heads, _ := t.exchangeParts()
		t.startRead(rec, 0, append(centers, heads...)...)
	}
	for k := range t.koleo {
		ka := &t.koleo[k]
		nn.KoLeoBackward(rec, ka.dy, t.koleoW, ka.nn, ka.y, koleoEps, false)
		nn.L2NormalizeBackward(rec, rows(rec, t.sHead.DX, k*B, B), ka.dy, ka.y, ka.norm, koleoEps, true)
	}
	if t.nce != nil {
		t.nce.Backward(rec, rows(rec, t.sHead.DX, 0, 2*B), float32(c.NCETemp), true)
	}
	// The local crops' pass first: the global crops' (the larger) then
	// completes the gradients block by block, and replicas read each
	// bucket back while the GPU goes on.
	if L > 0 {
		nn.ScatterRowsAdd(rec, flat2(rec, t.sL.DNormed), rows(rec, t.sHead.DX, 2*B, L*B), t.clsL, false)
		st.Backbone.Backward(rec, t.sL, grads["backbone"], false)
	}
	dG := flat2(rec, t.sG.DNormed)
	nn.ScatterRowsAdd(rec, dG, rows(rec, t.sHead.DX, 0, 2*B), t.clsG, false)
	if M > 0 {
		nn.ScatterRowsAdd(rec, dG, sIb.DX, maskIx, true)
	}
	var done func(from string)
	if t.group != nil {
		done = t.bucketDone(rec, grads["backbone"])
	}
	st.Backbone.BackwardNotify(rec, t.sG, grads["backbone"], true, done)
	if t.group == nil {
		t.recordNorms(rec)
	}
	return rec
}

// recordNorms records each module's gradient norm.
func (t *Trainer) recordNorms(rec *gpu.Recorder) {
	for i, g := range t.Grads {
		nn.GradNorm(rec, t.norms[i], t.partials, g.Chunks...)
	}
}

// sinkhornAcross submits the teacher pass in rec and runs Sinkhorn-Knopp
// over the CLS logits, and the masked patches' when anyMasked, of every
// replica (tPatch and tIb are nil where this one has no masked patch). The
// rest of the step goes into the recorder it returns.
func (t *Trainer) sinkhornAcross(rec *gpu.Recorder, tPatch *gpu.Tensor, tIb *nn.HeadActs, anyMasked bool, temp float32) *gpu.Recorder {
	err := rec.Submit()
	t.dev.Sync()
	defer t.timeExchange(time.Now())
	if err == nil {
		err = nn.SinkhornKnoppAcross(t.dev, t.group, t.tProbs, t.tHead.Logits, t.skScratch, temp, 3)
	}
	if err == nil && anyMasked {
		if tPatch != nil {
			err = nn.SinkhornKnoppAcross(t.dev, t.group, tPatch, tIb.Logits, t.skScratch, temp, 3)
		} else {
			err = nn.SinkhornKnoppAbsent(t.group, t.Cfg.Prototypes, 3)
		}
	}
	rec = t.dev.Record()
	if err != nil {
		rec.Fail(err)
	}
	return rec
}

// timeExchange adds the time since start to the step's Exchange.
func (t *Trainer) timeExchange(start time.Time) { t.exchange += time.Since(start) }

// pendingPart is a part of the exchange being read back into
// exchangeBuf[at : at+n].
type pendingPart struct {
	read  *gpu.PendingRead
	at, n int
}

// exchangeBucket is how many gradient values the backbone's are read back
// and exchanged in at least, as its backward pass completes them (as
// PyTorch's DDP buckets, 25 MB by default): ViT-S/14 in four parts, the
// demo's model in one, after its pass.
const exchangeBucket = 1 << 22

// exchangeParts returns what combine sends, in exchangeBuf's order: the
// center sums (with centering), the heads' gradients, the backbone's.
func (t *Trainer) exchangeParts() (centers, heads, backbone []*gpu.Tensor) {
	if t.batchCenter != nil {
		centers = []*gpu.Tensor{t.batchCenter, t.batchIBOTCenter}
	}
	heads, backbone = t.gradChunks()
	return centers, heads, backbone
}

// startRead submits what rec holds and starts reading ts back into
// exchangeBuf from at; rec goes on recording the rest of the step.
func (t *Trainer) startRead(rec *gpu.Recorder, at int, ts ...*gpu.Tensor) {
	err := rec.Submit()
	if err == nil {
		var p *gpu.PendingRead
		if p, err = t.dev.StartRead(ts...); err == nil {
			t.reads = append(t.reads, pendingPart{read: p, at: at, n: length(ts)})
		}
	}
	if err != nil {
		rec.Fail(err)
	}
}

// bucketDone is the backbone's BackwardNotify callback: each time the
// gradients completed since the last read reach t.bucket values, it reads
// them back (startRead).
func (t *Trainer) bucketDone(rec *gpu.Recorder, g *nn.Flat) func(from string) {
	centers, heads, _ := t.exchangeParts()
	base := length(centers) + length(heads)
	t.backboneRead = ""
	end, _ := g.Layout.Offset("")
	return func(from string) {
		off, err := g.Layout.Offset(from)
		if err != nil {
			rec.Fail(err)
			return
		}
		if end-off < t.bucket {
			return
		}
		span, err := g.Span(from, t.backboneRead)
		if err != nil {
			rec.Fail(err)
			return
		}
		t.startRead(rec, base+off, span...)
		t.backboneRead, end = from, off
	}
}

// discardReads gives back the staging buffers of reads not collected.
func (t *Trainer) discardReads() {
	for _, r := range t.reads {
		r.read.Discard()
	}
	t.reads = nil
}

// combine averages the gradients over the replicas and, with centering,
// turns the replica's batch means of the teacher logits into the means over
// every replica's rows (M of this replica's masked patches, masked of all).
// The parts read back during the step cross the network in the order they
// were started, the rest of the backbone's gradients once the step has run.
func (t *Trainer) combine(M, masked int) error {
	defer t.discardReads()
	start := time.Now()
	var local time.Duration // spent waiting for this replica's own GPU work
	defer func() { t.exchange += time.Since(start) - local }()
	centers, heads, backbone := t.exchangeParts()
	c, nh, nb := length(centers), length(heads), length(backbone)
	if cap(t.exchangeBuf) < c+nh+nb {
		t.exchangeBuf = make([]float32, c+nh+nb)
	}
	// For ViT-S/14 with its heads, 44 M floats, kept from step to step.
	all := t.exchangeBuf[:c+nh+nb]
	rows := float32(2 * t.Cfg.Batch)
	reduce := func(part []float32) error {
		if err := t.barrier(); err != nil {
			return err
		}
		if err := t.group.AllReduceSum(part); err != nil {
			return fmt.Errorf("combine gradients: %w", err)
		}
		return nil
	}
	for _, r := range t.reads {
		w := time.Now()
		err := r.read.Wait()
		local += time.Since(w)
		if err == nil {
			err = r.read.Into(all[r.at : r.at+r.n])
		}
		if err != nil {
			return fmt.Errorf("read gradients: %w", err)
		}
		if r.at == 0 && c > 0 {
			// Sums of rows, so that replicas with more masked patches weigh more.
			K := t.Cfg.Prototypes
			scale(all[:K], rows)
			if M > 0 {
				scale(all[K:c], float32(M))
			} else {
				clear(all[K:c])
			}
		}
		if err := reduce(all[r.at : r.at+r.n]); err != nil {
			return err
		}
	}
	g := t.moduleGrads()["backbone"]
	rest, err := g.Span("", t.backboneRead)
	if err != nil {
		return err
	}
	w := time.Now()
	t.dev.Sync()
	local += time.Since(w)
	n := length(rest)
	if err := t.dev.ReadInto(all[c+nh:c+nh+n], rest...); err != nil {
		return fmt.Errorf("read gradients: %w", err)
	}
	if err := reduce(all[c+nh : c+nh+n]); err != nil {
		return err
	}
	grads := all[c:]
	W := float32(t.group.Size())
	for i := range grads {
		grads[i] /= W
	}
	if err := t.dev.WriteAll(grads, append(heads[:len(heads):len(heads)], backbone...)...); err != nil {
		return fmt.Errorf("write gradients: %w", err)
	}
	if c == 0 {
		return nil
	}
	mean := func(dst *gpu.Tensor, sums []float32, n float32) error {
		for i := range sums {
			sums[i] /= n
		}
		return t.dev.Write(dst, sums)
	}
	K := t.Cfg.Prototypes
	if err := mean(t.batchCenter, all[:K], rows*W); err != nil {
		return err
	}
	if masked > 0 {
		return mean(t.batchIBOTCenter, all[K:c], float32(masked))
	}
	return nil
}

// barrier waits for every replica to reach the same point of the
// exchange, adding the time to the step's Wait: what comes after is
// transfer, not waiting for the slowest replica's GPU.
func (t *Trainer) barrier() error {
	start := time.Now()
	defer func() { t.wait += time.Since(start) }()
	if err := t.group.Barrier(); err != nil {
		return fmt.Errorf("combine gradients: %w", err)
	}
	return nil
}

// gradChunks returns the gradient buffers of the heads and of the
// backbone.
func (t *Trainer) gradChunks() (heads, backbone []*gpu.Tensor) {
	for i, mod := range t.Student.Modules() {
		if mod.Name == "backbone" {
			backbone = append(backbone, t.Grads[i].Chunks...)
		} else {
			heads = append(heads, t.Grads[i].Chunks...)
		}
	}
	return heads, backbone
}

// length is the number of values in ts.
func length(ts []*gpu.Tensor) int {
	n := 0
	for _, t := range ts {
		n += t.Len()
	}
	return n
}

// scale multiplies x by s in place.
func scale(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

// prototypeGain is the weight-norm gain g of a head's prototype layer.
const prototypeGain = "last_layer.weight_g"

// moduleGrads maps module names to their gradient buffers.
func (t *Trainer) moduleGrads() map[string]*nn.Flat {
	g := map[string]*nn.Flat{}
	for i, mod := range t.Student.Modules() {
		g[mod.Name] = t.Grads[i]
	}
	return g
}

// readLosses reads the per-row losses and the gradient norms back, all in
// one readback, and fails with ErrNonFinite on a NaN or an infinity.
func (t *Trainer) readLosses(lo *Losses, M int) error {
	c := t.Cfg
	B, L := c.Batch, c.Augment.Locals
	reads := []*gpu.Tensor{t.dinoOut}
	for k := range t.koleo {
		reads = append(reads, t.koleo[k].loss)
	}
	reads = append(reads, t.norms...)
	if t.nce != nil {
		reads = append(reads, t.nce.Loss)
	}
	if M > 0 {
		lossView, err1 := firstRows(t.ibot.loss, 0, M)
		wView, err2 := firstRows(t.ibotW, 0, M)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		reads = append(reads, lossView, wView)
	}
	vs, err := t.dev.ReadAll(reads...)
	if err != nil {
		return err
	}
	out := vs[0]
	for _, v := range out[:t.dino.loss.Len()] {
		lo.DINO += float64(v)
	}
	lo.DINO /= float64(B * (2 + 2*L))
	h := out[len(out)-t.tEntropy.Len():]
	for _, v := range h {
		lo.TeacherEntropy += float64(v) / float64(len(h))
	}
	koleo, norms := vs[1:1+len(t.koleo)], vs[1+len(t.koleo):1+len(t.koleo)+len(t.norms)]
	if t.nce != nil {
		nce := vs[1+len(t.koleo)+len(t.norms)]
		for _, v := range nce {
			lo.NCE += float64(v) / float64(len(nce))
		}
	}
	if M > 0 {
		rl, w := vs[len(vs)-2], vs[len(vs)-1]
		for i := range rl {
			lo.IBOT += float64(rl[i]) * float64(w[i])
		}
		if c.IBOTWeight != 0 {
			lo.IBOT /= c.IBOTWeight
		}
	}
	for _, v := range koleo {
		lo.KoLeo += float64(v[0])
	}
	if t.group != nil {
		// The step's losses are the replicas' means (KoLeo stays within
		// each replica's batch, as the reference's).
		defer t.timeExchange(time.Now())
		v := []float32{float32(lo.DINO), float32(lo.IBOT), float32(lo.KoLeo), float32(lo.TeacherEntropy), float32(lo.NCE)}
		if err := t.group.AllReduceSum(v); err != nil {
			return fmt.Errorf("combine losses: %w", err)
		}
		W := float64(t.group.Size())
		lo.DINO, lo.IBOT, lo.KoLeo, lo.TeacherEntropy, lo.NCE = float64(v[0])/W, float64(v[1])/W, float64(v[2])/W, float64(v[3])/W, float64(v[4])/W
	}
	lo.Total = c.DINOWeight*lo.DINO + c.IBOTWeight*lo.IBOT + c.KoLeoWeight*lo.KoLeo + c.NCEWeight*lo.NCE
	lo.GradNorm = map[string]float64{}
	bad := math.IsNaN(lo.Total) || math.IsInf(lo.Total, 0)
	for i, mod := range t.Student.Modules() {
		n := norms[i]
		lo.GradNorm[mod.Name] = float64(n[0])
		bad = bad || math.IsNaN(float64(n[0])) || math.IsInf(float64(n[0]), 0)
	}
	if bad {
		return fmt.Errorf("%w: dino %g, ibot %g, koleo %g, nce %g, gradient norms %v", ErrNonFinite, lo.DINO, lo.IBOT, lo.KoLeo, lo.NCE, lo.GradNorm)
	}
	return nil
}

// update clips each module's gradients, takes the AdamW step (per
// parameter, with its group's LR and weight-decay multipliers) and moves
// the teacher. Frozen prototype layers get learning rate 0, as the
// reference's last-layer LR schedule does: their moments still follow the
// gradients and their gradients still count in the clipping norm. Fixed
// prototype gains (FixedPrototypeNorm) get no update at all.
func (t *Trainer) update(rec *gpu.Recorder, lo Losses, frozen bool) {
	c := t.Cfg
	for i, mod := range t.Student.Modules() {
		if c.ClipGrad > 0 {
			nn.ClipGradNorm(rec, t.norms[i], float32(c.ClipGrad), t.Grads[i].Chunks...)
		}
		for _, name := range mod.Params.Layout.Names() {
			if c.FixedPrototypeNorm && name == prototypeGain {
				continue
			}
			g := paramGroup(mod.Name, name, c.Model.Depth, c.LayerDecay, c.PatchEmbedLRMult)
			lr := lo.LR * g.LR
			if g.Last && frozen {
				lr = 0
			}
			nn.AdamW(rec, mod.Params.Get(name), t.Grads[i].Get(name), t.M[i].Get(name), t.V[i].Get(name), nn.AdamWOpts{
				LR: float32(lr), WeightDecay: float32(lo.WD * g.WD),
				Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: t.StepsDone + 1,
			})
		}
	}
	if t.batchCenter != nil {
		cm := float32(c.CenterMomentum)
		nn.EMA(rec, t.Center, t.batchCenter, cm)
		if lo.MaskedPatches > 0 {
			nn.EMA(rec, t.IBOTCenter, t.batchIBOTCenter, cm)
		}
	}
	tm := t.Teacher.Modules()
	for i, mod := range t.Student.Modules() {
		for j, ch := range mod.Params.Chunks {
			nn.EMA(rec, tm[i].Params.Chunks[j], ch, float32(lo.Momentum))
		}
	}
}
