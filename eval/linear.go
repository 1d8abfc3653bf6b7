package eval

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// Features is a labelled feature set: N rows of D floats in X and N labels in
// 0..Classes-1.
type Features struct {
	X      []float32 // [N, D]
	Labels []int     // [N]
	D      int
}

// N is the number of rows.
func (f Features) N() int { return len(f.Labels) }

// FeatureNorm is the per-row or per-dimension transform applied to the
// features before the linear layer.
type FeatureNorm int

const (
	// Standardize subtracts the training mean and divides by the training
	// standard deviation of each dimension. An affine map the linear layer
	// could absorb, so it changes no classifier the probe can express, but it
	// makes one learning-rate grid fit features of any scale (raw pixels,
	// un-normalised tokens) and conditions SGD well. The default.
	Standardize FeatureNorm = iota
	// L2 scales each row to unit length, as the k-NN does.
	L2
	// Raw uses the features as they are (DINOv2's own linear eval, whose
	// features come out of a LayerNorm).
	Raw
)

// ProbeOpts are the linear-probe settings. DINOv2 trains one linear layer
// per learning rate with SGD (momentum 0.9, no weight decay) and a cosine
// schedule for 10 epochs, and keeps the one best on validation.
type ProbeOpts struct {
	Classes     int
	LRs         []float64 // the grid, trained together
	Epochs      int
	BatchSize   int
	Momentum    float64
	WeightDecay float64
	// ValFraction of the training rows (chosen by the seed) are held out to
	// pick the learning rate. 0 picks it on the test set itself, as DINOv2
	// does on ImageNet's validation set (optimistic by the selection).
	ValFraction float64
	Norm        FeatureNorm
	Seed        uint64
	Progress    *data.Progress // counts SGD steps (Steps of them); nil for none
}

// Steps is the number of SGD steps a probe on n training rows takes: full
// batches of the rows not held out, Epochs times.
func (o ProbeOpts) Steps(n int) int {
	fit := n - int(math.Round(o.ValFraction*float64(n)))
	return o.Epochs * (fit / max(1, min(o.BatchSize, fit)))
}

// DefaultProbe is DINOv2's setting (its 13 learning rates, for the batch of
// 256 they are quoted at) with 10% of the training set held out.
func DefaultProbe(classes int) ProbeOpts {
	return ProbeOpts{
		Classes:     classes,
		LRs:         []float64{1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1},
		Epochs:      10,
		BatchSize:   256,
		Momentum:    0.9,
		ValFraction: 0.1,
		Seed:        1,
	}
}

// Classifier is a trained linear layer on raw features: logits = x W + Bias
// after L2-normalising x when L2 is set. Standardisation is folded into W and
// Bias.
type Classifier struct {
	D, C int
	L2   bool
	W    []float32 // [D, C]
	Bias []float32 // [C]
}

// Predict returns the arg-max class of each row of x [n, D] (on the CPU).
func (c *Classifier) Predict(x []float32) []int {
	if c.L2 {
		x = append([]float32(nil), x...)
		Normalize(x, c.D)
	}
	n := len(x) / c.D
	preds := make([]int, n)
	z := make([]float64, c.C)
	for i := range n {
		for k := range z {
			z[k] = float64(c.Bias[k])
		}
		for d, v := range x[i*c.D : (i+1)*c.D] {
			for k, w := range c.W[d*c.C : (d+1)*c.C] {
				z[k] += float64(v) * float64(w)
			}
		}
		preds[i] = argmax(z)
	}
	return preds
}

// ProbeResult holds the accuracy of every learning rate of the grid and the
// classifier of the best one.
type ProbeResult struct {
	LRs        []float64
	ValAcc     []float64 // on the held-out rows (the test set when ValFraction is 0)
	TestAcc    []float64
	Best       int     // index of the best learning rate on ValAcc (ties: the smaller)
	Acc        float64 // TestAcc[Best], the reported top-1 accuracy
	Classifier Classifier
}

// LinearAccuracy trains DefaultProbe on train and returns the test top-1
// accuracy: the call cmd/eval makes next to KNNAccuracy.
func LinearAccuracy(ctx context.Context, dev *gpu.Device, train, test Features, classes int) (float64, error) {
	r, err := LinearProbe(ctx, dev, train, test, DefaultProbe(classes))
	return r.Acc, err
}

// LinearProbe trains one linear classifier per learning rate of o.LRs on the
// GPU, all in one pass (their weights side by side, so one matmul serves the
// grid), picks the best on held-out rows and reports it on test.
func LinearProbe(ctx context.Context, dev *gpu.Device, train, test Features, o ProbeOpts) (ProbeResult, error) {
	if err := checkProbe(train, test, o); err != nil {
		return ProbeResult{}, err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))
	D := train.D
	fit, held := train, test
	if o.ValFraction > 0 {
		perm := rng.Perm(train.N())
		nv := int(math.Round(o.ValFraction * float64(train.N())))
		held, fit = subset(train, perm[:nv]), subset(train, perm[nv:])
	}
	mean, scale := normStats(fit, o.Norm)
	fx, hx, tx := normalize(fit, o.Norm, mean, scale), normalize(held, o.Norm, mean, scale), normalize(test, o.Norm, mean, scale)

	p, err := newProbe(dev, D, o.Classes, len(o.LRs), min(o.BatchSize, fit.N()))
	if err != nil {
		return ProbeResult{}, err
	}
	defer p.release()
	if err := p.init(o, rng); err != nil {
		return ProbeResult{}, err
	}
	if err := p.train(ctx, fx, fit.Labels, o, rng); err != nil {
		return ProbeResult{}, err
	}
	res := ProbeResult{LRs: append([]float64(nil), o.LRs...)}
	if res.ValAcc, err = p.accuracy(ctx, hx, held.Labels); err != nil {
		return ProbeResult{}, err
	}
	if res.TestAcc, err = p.accuracy(ctx, tx, test.Labels); err != nil {
		return ProbeResult{}, err
	}
	res.Best = argmax(res.ValAcc)
	res.Acc = res.TestAcc[res.Best]
	if res.Classifier, err = p.classifier(res.Best, o.Norm, mean, scale); err != nil {
		return ProbeResult{}, err
	}
	return res, nil
}

func checkProbe(train, test Features, o ProbeOpts) error {
	check := func(name string, f Features) error {
		if f.N() == 0 {
			return fmt.Errorf("linear probe: %s set is empty", name)
		}
		if f.D <= 0 || len(f.X) != f.N()*f.D {
			return fmt.Errorf("linear probe: %s set has %d values for %d labels of dimension %d", name, len(f.X), f.N(), f.D)
		}
		for i, y := range f.Labels {
			if y < 0 || y >= o.Classes {
				return fmt.Errorf("linear probe: %s label %d at row %d is outside 0..%d", name, y, i, o.Classes-1)
			}
		}
		return nil
	}
	switch {
	case o.Classes < 2:
		return fmt.Errorf("linear probe: %d classes, want at least 2", o.Classes)
	case len(o.LRs) == 0:
		return fmt.Errorf("linear probe: no learning rates")
	case o.Epochs < 1 || o.BatchSize < 1:
		return fmt.Errorf("linear probe: %d epochs of batch %d, want at least 1 of each", o.Epochs, o.BatchSize)
	case !(o.ValFraction >= 0 && o.ValFraction < 1):
		return fmt.Errorf("linear probe: validation fraction %g, want 0 <= f < 1", o.ValFraction)
	case o.Norm < Standardize || o.Norm > Raw:
		return fmt.Errorf("linear probe: unknown feature norm %d", o.Norm)
	}
	for _, lr := range o.LRs {
		if !(lr > 0) {
			return fmt.Errorf("linear probe: learning rate %g must be positive", lr)
		}
	}
	if err := check("train", train); err != nil {
		return err
	}
	if err := check("test", test); err != nil {
		return err
	}
	if test.D != train.D {
		return fmt.Errorf("linear probe: test features have dimension %d, train %d", test.D, train.D)
	}
	if nv := int(math.Round(o.ValFraction * float64(train.N()))); o.ValFraction > 0 && (nv < 1 || nv >= train.N()) {
		return fmt.Errorf("linear probe: holding out %g of %d training rows leaves %d to validate and %d to train", o.ValFraction, train.N(), nv, train.N()-nv)
	}
	return nil
}

func subset(f Features, rows []int) Features {
	s := Features{X: make([]float32, 0, len(rows)*f.D), Labels: make([]int, 0, len(rows)), D: f.D}
	for _, r := range rows {
		s.X = append(s.X, f.X[r*f.D:(r+1)*f.D]...)
		s.Labels = append(s.Labels, f.Labels[r])
	}
	return s
}

// normStats returns the per-dimension mean and 1/std of f for Standardize
// (nil otherwise); constant dimensions get scale 1.
func normStats(f Features, norm FeatureNorm) (mean, scale []float64) {
	if norm != Standardize {
		return nil, nil
	}
	D, n := f.D, float64(f.N())
	mean, scale = make([]float64, D), make([]float64, D)
	for i := 0; i < len(f.X); i += D {
		for d, v := range f.X[i : i+D] {
			mean[d] += float64(v)
		}
	}
	for d := range mean {
		mean[d] /= n
	}
	for i := 0; i < len(f.X); i += D {
		for d, v := range f.X[i : i+D] {
			e := float64(v) - mean[d]
			scale[d] += e * e
		}
	}
	for d, s := range scale {
		scale[d] = 1
		if s > 0 {
			scale[d] = 1 / math.Sqrt(s/n)
		}
	}
	return mean, scale
}

// normalize returns a normalised copy of f's features.
func normalize(f Features, norm FeatureNorm, mean, scale []float64) []float32 {
	x := append([]float32(nil), f.X...)
	switch norm {
	case L2:
		Normalize(x, f.D)
	case Standardize:
		for i := range x {
			d := i % f.D
			x[i] = float32((float64(x[i]) - mean[d]) * scale[d])
		}
	}
	return x
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// align is the largest storage offset alignment WebGPU allows, in floats:
// per-batch views into the staged data start on it.
const align = 64

func alignUp(n int) int { return (n + align - 1) / align * align }

// probe holds the GPU state of G stacked classifiers of C classes on D
// features trained with batches of B rows.
type probe struct {
	dev         *gpu.Device
	D, C, G, B  int
	w, bias     *gpu.Tensor // [D, G*C], [G*C]
	mw, mb      *gpu.Tensor // momentum buffers
	dw, db      *gpu.Tensor // gradients
	logits, dz  *gpu.Tensor // [B, G*C]
	loss        *gpu.Tensor // [B*G]
	lrs         *gpu.Tensor // [G]
	x           *gpu.Tensor // staged batches, each at an aligned offset
	y           *gpu.Tensor // staged labels (u32)
	batches     int         // batches x and y hold
	bufs        []*gpu.Buffer
	evalRows    int
	ex, elogits *gpu.Tensor // evaluation chunks [evalRows, D], [evalRows, G*C]
	epred       *gpu.Tensor // [evalRows*G] arg-max classes (u32)
}

// stageBytes caps the staged training data: enough batches per submission
// to amortise it, little enough to stay far under any binding limit.
const stageBytes = 32 << 20

func newProbe(dev *gpu.Device, D, C, G, B int) (*probe, error) {
	p := &probe{dev: dev, D: D, C: C, G: G, B: B}
	GC := G * C
	p.batches = max(1, stageBytes/4/alignUp(B*D))
	limit := int(dev.Limits().MaxStorageBinding / 4)
	p.evalRows = max(1, min(4096, limit/D, limit/GC))
	var err error
	alloc := func(label string, shape ...int) *gpu.Tensor {
		if err != nil {
			return nil
		}
		var t *gpu.Tensor
		t, err = dev.NewTensor("probe "+label, shape...)
		if err == nil {
			p.bufs = append(p.bufs, t.Buf)
		}
		return t
	}
	p.w, p.mw, p.dw = alloc("weights", D, GC), alloc("weight momentum", D, GC), alloc("weight grad", D, GC)
	p.bias, p.mb, p.db = alloc("bias", GC), alloc("bias momentum", GC), alloc("bias grad", GC)
	p.logits, p.dz, p.loss = alloc("logits", B, GC), alloc("logit grad", B, GC), alloc("loss", B*G)
	p.lrs = alloc("learning rates", G)
	p.x, p.y = alloc("batches", p.batches*alignUp(B*D)), alloc("labels", p.batches*alignUp(B))
	p.ex, p.elogits = alloc("eval features", p.evalRows, D), alloc("eval logits", p.evalRows, GC)
	p.epred = alloc("eval predictions", p.evalRows*G)
	if err != nil {
		p.release()
		return nil, fmt.Errorf("linear probe: %w", err)
	}
	return p, nil
}

func (p *probe) release() {
	for _, b := range p.bufs {
		b.Release()
	}
}

// init sets every classifier to the same weights, N(0, 0.01^2) as DINOv2's
// probe, and zero bias and momentum.
func (p *probe) init(o ProbeOpts, rng *rand.Rand) error {
	w0 := make([]float32, p.D*p.C)
	for i := range w0 {
		w0[i] = float32(0.01 * rng.NormFloat64())
	}
	w := make([]float32, p.D*p.G*p.C)
	for d := range p.D {
		for g := range p.G {
			copy(w[(d*p.G+g)*p.C:], w0[d*p.C:(d+1)*p.C])
		}
	}
	lrs := make([]float32, p.G)
	for g, lr := range o.LRs {
		lrs[g] = float32(lr)
	}
	if err := p.dev.Write(p.w, w); err != nil {
		return err
	}
	return p.dev.Write(p.lrs, lrs)
}

// step records one SGD step of all classifiers on the staged batch k of n
// rows at schedule factor scale.
func (p *probe) step(rec *gpu.Recorder, k, n int, o ProbeOpts, scale float64) error {
	GC := p.G * p.C
	x, _ := p.x.View(k*alignUp(p.B*p.D), n, p.D)
	y, _ := p.y.View(k*alignUp(p.B), n)
	z, _ := p.logits.View(0, n, GC)
	dz, _ := p.dz.View(0, n, GC)
	loss, _ := p.loss.View(0, n*p.G)
	nn.MatMul(rec, z, x, p.w, nn.MatMulOpts{Bias: p.bias})
	xent := gpu.Kernel{Name: "probe_xent", Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	rec.Dispatch(xent, rec.Groups(n*p.G, 64), []uint32{gpu.U32(n * p.G), gpu.U32(p.G), gpu.U32(p.C), gpu.F32(1 / float32(n))}, z, y, dz, loss)
	nn.MatMul(rec, p.dw, x, dz, nn.MatMulOpts{TransA: true})
	nn.SumRows(rec, p.db, dz, false)
	sgd := gpu.Kernel{Name: "probe_sgd", Access: []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite, gpu.ReadWrite}}
	for _, t := range [][3]*gpu.Tensor{{p.dw, p.mw, p.w}, {p.db, p.mb, p.bias}} {
		params := []uint32{gpu.U32(t[0].Len()), gpu.U32(GC), gpu.U32(p.C), gpu.F32(float32(o.Momentum)), gpu.F32(float32(o.WeightDecay)), gpu.F32(float32(scale))}
		rec.Dispatch(sgd, rec.Groups(t[0].Len(), 256), params, p.lrs, t[0], t[1], t[2])
	}
	return rec.Err()
}

// stage writes rows of x [n, D] and their labels as staged batch k.
func (p *probe) stage(k int, x []float32, labels []int, rows []int) error {
	xs := make([]float32, len(rows)*p.D)
	ys := make([]uint32, len(rows))
	for i, r := range rows {
		copy(xs[i*p.D:], x[r*p.D:(r+1)*p.D])
		ys[i] = uint32(labels[r])
	}
	xv, _ := p.x.View(k*alignUp(p.B*p.D), len(rows), p.D)
	yv, _ := p.y.View(k*alignUp(p.B), len(rows))
	if err := p.dev.Write(xv, xs); err != nil {
		return err
	}
	return p.dev.WriteU32(yv, ys)
}

// train runs o.Epochs epochs of full batches (the last partial batch of each
// shuffle is dropped, as PyTorch's drop_last) under a cosine schedule from
// the base rates to zero, staging as many batches per submission as fit.
func (p *probe) train(ctx context.Context, x []float32, labels []int, o ProbeOpts, rng *rand.Rand) error {
	n := len(labels)
	perEpoch := n / p.B
	total := o.Epochs * perEpoch
	rec := p.dev.Record()
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	t := 0
	for range o.Epochs {
		rng.Shuffle(n, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		for b0 := 0; b0 < perEpoch; b0 += p.batches {
			if err := ctx.Err(); err != nil {
				return err
			}
			nb := min(p.batches, perEpoch-b0)
			for k := range nb {
				if err := p.stage(k, x, labels, perm[(b0+k)*p.B:(b0+k+1)*p.B]); err != nil {
					return err
				}
				scale := 0.5 * (1 + math.Cos(math.Pi*float64(t)/float64(total)))
				if err := p.step(rec, k, p.B, o, scale); err != nil {
					return fmt.Errorf("linear probe: %w", err)
				}
				t++
			}
			if err := rec.Submit(); err != nil {
				return fmt.Errorf("linear probe: %w", err)
			}
			if o.Progress != nil {
				o.Progress.Add(nb)
			}
		}
	}
	return nil
}

// accuracy returns the top-1 accuracy of every classifier on x [n, D].
func (p *probe) accuracy(ctx context.Context, x []float32, labels []int) ([]float64, error) {
	GC := p.G * p.C
	correct := make([]int, p.G)
	rec := p.dev.Record()
	argmaxK := gpu.Kernel{Name: "probe_argmax", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	for r0 := 0; r0 < len(labels); r0 += p.evalRows {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(p.evalRows, len(labels)-r0)
		xv, _ := p.ex.View(0, n, p.D)
		zv, _ := p.elogits.View(0, n, GC)
		if err := p.dev.Write(xv, x[r0*p.D:(r0+n)*p.D]); err != nil {
			return nil, err
		}
		pv, _ := p.epred.View(0, n*p.G)
		nn.MatMul(rec, zv, xv, p.w, nn.MatMulOpts{Bias: p.bias})
		rec.Dispatch(argmaxK, rec.Groups(n*p.G, 64), []uint32{gpu.U32(n * p.G), gpu.U32(p.C)}, zv, pv)
		if err := rec.Submit(); err != nil {
			return nil, fmt.Errorf("linear probe: %w", err)
		}
		pred, err := p.dev.ReadU32(pv)
		if err != nil {
			return nil, err
		}
		for i := range n {
			for g := range p.G {
				if int(pred[i*p.G+g]) == labels[r0+i] {
					correct[g]++
				}
			}
		}
	}
	acc := make([]float64, p.G)
	for g, c := range correct {
		acc[g] = float64(c) / float64(len(labels))
	}
	return acc, nil
}

// classifier reads back classifier g and folds the standardisation into it:
// ((x - mean) * scale) W + b = x (scale W) + (b - (mean * scale) W).
func (p *probe) classifier(g int, norm FeatureNorm, mean, scale []float64) (Classifier, error) {
	w, err := p.dev.Read(p.w)
	if err != nil {
		return Classifier{}, err
	}
	b, err := p.dev.Read(p.bias)
	if err != nil {
		return Classifier{}, err
	}
	GC := p.G * p.C
	c := Classifier{D: p.D, C: p.C, L2: norm == L2, W: make([]float32, p.D*p.C), Bias: make([]float32, p.C)}
	bias := make([]float64, p.C)
	for k := range p.C {
		bias[k] = float64(b[g*p.C+k])
	}
	for d := range p.D {
		for k := range p.C {
			v := float64(w[d*GC+g*p.C+k])
			if norm == Standardize {
				bias[k] -= mean[d] * scale[d] * v
				v *= scale[d]
			}
			c.W[d*p.C+k] = float32(v)
		}
	}
	for k, v := range bias {
		c.Bias[k] = float32(v)
	}
	return c, nil
}
