// Command train pretrains a DINOv2 backbone (DINO + iBOT + KoLeo, EMA
// teacher, multi-crop) on the GPU through WebGPU.
//
//	train [flags]
//
// With no flags it trains the small demo model on Fashion-MNIST and ends
// with a k-NN accuracy, a checkpoint and PCA pictures. Run it with --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/gpu/lavapipe"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/train"
)

func main() {
	if err := lavapipe.Restart(); err != nil {
		fmt.Fprintln(os.Stderr, "train:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first Ctrl-C saves a checkpoint after the current step and exits;
	// a second one kills the process as usual.
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: train [flags]

Pretrains a DINOv2 backbone with the full method of the paper: a student and
an EMA teacher, DINO loss on the CLS token over 2 global and N local crops,
iBOT loss on block-masked patches, KoLeo, teacher centering (EMA center or
Sinkhorn-Knopp), AdamW with layer-wise LR decay and the recipe's schedules.
Every computation runs in WGSL compute shaders on the WebGPU device.

With no flags it trains the demo model (ViT with patch 4, width 64, 4
blocks) on Fashion-MNIST (Debian's dataset-fashion-mnist; 'make setup'
installs it), evaluates the teacher by k-NN on the test split, and writes
everything into --out.

Length: --epochs of --iters-per-epoch steps, or --minutes M: a time budget
on whatever device runs it (make demo gives 8). One k-NN evaluation and a
few steps are timed first with a throwaway model, then the run gets as many
epochs as fit, its schedules spanning them: a few epochs on two CPU cores,
hundreds on a large GPU. With --replicas the timed steps are data-parallel
steps of all replicas, and replica 0's plan holds for all.

Data: --data DIR takes a folder of images (JPEG, PNG, WebP, ... scanned
recursively) or, with --image-folder, an ImageFolder tree ROOT/CLASS/IMAGE;
--data FILE takes a list of image paths, one per line, or the manifest.jsonl
that cmd/curate writes.
Unreadable images are skipped, counted and listed in OUT/rejects.jsonl.
k-NN evaluation needs labels: --knn-train and --knn-test name ImageFolder
trees (default for Fashion-MNIST: its train and test splits).

Outputs in --out:
  checkpoint.msgpack  the teacher backbone (what cmd/embed and the viewer
                      load) plus the whole training state for --resume;
                      written atomically every --save-every steps, at the
                      end, and on Ctrl-C
  metrics.jsonl       one JSON object per step (losses, schedules, gradient
                      norms, images/s, teacher_entropy: the mean entropy of
                      the teacher's CLS distributions; dino minus it is the
                      KL to the student; with replicas exchange_s, the time
                      spent combining, and wait_s, the part of it spent
                      waiting for the slowest replica) and per evaluation
                      (knn_top1)
  losses.png, knn.png the curves
  pca/*.png           PCA pictures of test images (paper Figure 1)

A NaN or infinite loss or gradient stops the run before the bad update; the
last checkpoint stays as it was. --resume continues a run exactly (same
losses, bit for bit, on the same device).

A descriptor for copy detection (curate dedup): DINOv2's curation used a
contrastive copy detector (SSCD), not DINO features. --nce-weight adds
InfoNCE between each image's two global crops (their CLS tokens; every
other image of the batch a negative); with the DINOv2 terms off it trains
an SSCD-style model, e.g.
  train --nce-weight 1 --koleo-weight 1 --dino-weight 0 --ibot-weight 0 --locals 0 --out runs/copy
Measure it with curate calibrate (docs/curation.md).

High-resolution phase (paper: a short final phase at 518 px): start a new
run from the trained checkpoint with larger crops, e.g.
  train --init runs/demo/checkpoint.msgpack --global-size 56 --local-size 24 --epochs 1 --out runs/demo-hr
Position embeddings are interpolated to the new grid (and trained through
the interpolation); the schedules are compressed into the phase.

Several GPUs and machines (data parallel): --replicas N trains N replicas,
one process and WebGPU adapter each, every one on --batch images of each
step (the learning rate scales with the whole batch). On one machine,
  train --replicas 4 --batch 32
starts the other 3 processes itself, on adapters 0..3 (WEBDINO_ADAPTER
picks one by hand). On two machines of 4 GPUs each:
  host-a$ train --replicas 8 --local 4 --master host-a:29517
  host-b$ train --replicas 8 --rank 4 --local 4 --master host-a:29517
Gradients, the teacher centers and Sinkhorn-Knopp's sums are combined over
TCP each step (WebGPU has no peer-to-peer path); KoLeo stays within each
replica's batch, as in the reference. Replica 0 evaluates and writes the
outputs; every replica needs the data (and --resume's checkpoint) at the
same path. Ctrl-C on any replica stops all after the same step.

Flags:
`

// options are the command line.
type options struct {
	preset, data, out, resume, init            string
	globalSize, localSize                      int
	imageFolder                                bool
	knnTrain, knnTest                          string
	knnTrainN, knnTestN, pcaN                  int
	batch, epochs, itersPerEpoch, steps        int
	lr, layerScale, dropPath, tTemp, tMomentum float64
	koleoWeight, ibotWeight                    float64
	dinoWeight, nceWeight, nceTemp             float64
	centering, prototypeNorm                   string
	prototypes, locals, freezeLast             int
	seed                                       uint64
	saveEvery, evalEvery                       int
	workers                                    int
	minutes                                    float64
	replicas, rank, local                      int
	master                                     string
	args                                       []string // as given, for the replicas this process starts
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{args: args}
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.preset, "config", "demo", "model and recipe: demo, or vits14, vitb14, vitl14, vitg14 (append _reg for 4 registers) with the reference defaults")
	fs.StringVar(&o.data, "data", "", "training images: a folder, a list file (one path per line) or cmd/curate's manifest.jsonl (default: Fashion-MNIST train)")
	fs.BoolVar(&o.imageFolder, "image-folder", false, "--data is an ImageFolder tree (labels from class folders)")
	fs.StringVar(&o.out, "out", "runs/demo", "output folder")
	fs.StringVar(&o.resume, "resume", "", "continue the run saved in this checkpoint")
	fs.StringVar(&o.init, "init", "", "start a new run (fresh optimiser and schedules) from this checkpoint's weights: the high-resolution phase, or fine-tuning")
	fs.IntVar(&o.globalSize, "global-size", 0, "global crop side in pixels, a multiple of the patch (default: the config's; larger for the high-resolution phase)")
	fs.IntVar(&o.localSize, "local-size", 0, "local crop side in pixels, a multiple of the patch (default: the config's)")
	fs.StringVar(&o.knnTrain, "knn-train", "", "labelled ImageFolder for the k-NN memory (default: Fashion-MNIST train when training on it)")
	fs.StringVar(&o.knnTest, "knn-test", "", "labelled ImageFolder to classify (default: Fashion-MNIST test)")
	fs.IntVar(&o.knnTrainN, "knn-train-n", 5000, "use the first N images of the k-NN memory (0: all)")
	fs.IntVar(&o.knnTestN, "knn-test-n", 1000, "classify the first N test images (0: all)")
	fs.IntVar(&o.pcaN, "pca", 8, "PCA pictures of this many test images at the end")
	fs.IntVar(&o.batch, "batch", 0, "images per step (default: the config's)")
	fs.IntVar(&o.epochs, "epochs", 0, "epochs (default: the config's)")
	fs.Float64Var(&o.minutes, "minutes", 0, "train for about this long on this device instead of --epochs: time one step and one k-NN evaluation first, then run as many epochs as fit (k-NN about ten times)")
	fs.IntVar(&o.itersPerEpoch, "iters-per-epoch", 0, "iterations per epoch; schedules count in epochs (default: the config's)")
	fs.IntVar(&o.steps, "steps", 0, "stop after this many steps of the run (schedules still span --epochs); 0: the whole run")
	fs.Float64Var(&o.lr, "lr", 0, "base learning rate at batch 1024, scaled by sqrt(batch/1024) (default: the config's)")
	fs.Float64Var(&o.layerScale, "layerscale-init", 0, "initial LayerScale gamma (default: the config's; the reference 1e-5)")
	fs.Float64Var(&o.dropPath, "drop-path", -1, "stochastic-depth rate of the student's residual branches; -1: the config's (recipe 0.3-0.4, demo 0)")
	fs.Float64Var(&o.tTemp, "teacher-temp", 0, "final teacher temperature (default: the recipe's 0.07, reached after a warmup from 0.04)")
	fs.Float64Var(&o.tMomentum, "teacher-momentum", 0, "starting teacher EMA momentum, cosine to 1 (default: the config's; the recipe's 0.992)")
	fs.Float64Var(&o.koleoWeight, "koleo-weight", -1, "weight of the KoLeo loss; -1: the recipe's 0.1")
	fs.Float64Var(&o.ibotWeight, "ibot-weight", -1, "weight of the iBOT masked-patch loss (0 turns masking off); -1: the recipe's 1")
	fs.Float64Var(&o.dinoWeight, "dino-weight", -1, "weight of the DINO loss on the CLS tokens; -1: the recipe's 1")
	fs.Float64Var(&o.nceWeight, "nce-weight", 0, "weight of InfoNCE between the two global crops' CLS tokens (contrastive instance discrimination, as copy-detection descriptors train: see curate calibrate); 0: off, as the recipe")
	fs.Float64Var(&o.nceTemp, "nce-temp", 0.05, "InfoNCE temperature (SSCD's 0.05)")
	fs.StringVar(&o.centering, "centering", "", "teacher centering: centering (EMA center) or sinkhorn (default: the config's)")
	fs.StringVar(&o.prototypeNorm, "prototype-norm", "", "the prototypes' weight-norm gains: fixed (at 1: unit prototypes, cosine logits; DINO's norm_last_layer) or learned (DINOv2) (default: the config's)")
	fs.IntVar(&o.prototypes, "prototypes", 0, "prototypes K of the heads (default: the config's)")
	fs.IntVar(&o.freezeLast, "freeze-last-layer", -1, "iterations the prototype layer stays frozen at the start; -1: the config's (one epoch, at most a tenth of the run)")
	fs.IntVar(&o.locals, "locals", -1, "local crops per image; -1: the config's")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of initialisation, augmentation, masks and data order")
	fs.IntVar(&o.saveEvery, "save-every", 200, "write the checkpoint every N steps")
	fs.IntVar(&o.evalEvery, "eval-every", 0, "k-NN evaluation every N steps (default: every epoch and at the end)")
	fs.IntVar(&o.workers, "workers", 0, "image decoding goroutines (default GOMAXPROCS)")
	fs.IntVar(&o.replicas, "replicas", 1, "data-parallel replicas (one process and device each) in the whole run; every replica trains on --batch images of each step")
	fs.IntVar(&o.rank, "rank", 0, "the first replica this invocation runs (on the second machine of two with 4 GPUs each: 4)")
	fs.IntVar(&o.local, "local", 0, "replicas this invocation runs, one process per adapter (default: from --rank to the last)")
	fs.StringVar(&o.master, "master", "127.0.0.1:29517", "host:port where replica 0 meets the others")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := o.checkReplicas(); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (train takes only flags; see --help)", fs.Args())
	}
	if o.saveEvery < 1 {
		return nil, fmt.Errorf("--save-every %d: want at least 1", o.saveEvery)
	}
	if o.minutes < 0 || o.minutes > 0 && (o.epochs > 0 || o.resume != "") {
		return nil, fmt.Errorf("--minutes %g: want a positive budget for a new run, without --epochs (it sets them) or --resume", o.minutes)
	}
	if o.resume != "" && o.init != "" {
		return nil, fmt.Errorf("--resume continues a run, --init starts a new one: give one of them")
	}
	return o, nil
}

// config builds the training config from the preset and the flags.
func (o *options) config() (train.Config, error) {
	var c train.Config
	if o.preset == "demo" {
		c = train.Demo()
	} else {
		m, err := nn.Preset(o.preset)
		if err != nil {
			return c, err
		}
		c = train.Recipe(m, 64, 100)
	}
	if o.batch > 0 {
		c.Batch = o.batch
	}
	if o.epochs > 0 {
		c.Epochs = o.epochs
	}
	if o.itersPerEpoch > 0 {
		c.ItersPerEpoch = o.itersPerEpoch
	}
	if o.lr > 0 {
		c.BaseLR = o.lr
	}
	if o.centering != "" {
		c.Centering = o.centering
	}
	if o.tTemp > 0 {
		c.TeacherTemp = o.tTemp
	}
	if o.tMomentum > 0 {
		if o.tMomentum >= 1 {
			return c, fmt.Errorf("--teacher-momentum %g: want below 1 (1 freezes the teacher)", o.tMomentum)
		}
		c.TeacherMomentum = o.tMomentum
	}
	if o.dropPath >= 0 {
		c.DropPath = o.dropPath
	}
	if o.layerScale > 0 {
		c.LayerScaleInit = o.layerScale
	}
	if o.koleoWeight >= 0 {
		c.KoLeoWeight = o.koleoWeight
	}
	if o.dinoWeight >= 0 {
		c.DINOWeight = o.dinoWeight
	}
	c.NCEWeight, c.NCETemp = o.nceWeight, o.nceTemp
	if o.ibotWeight >= 0 {
		c.IBOTWeight = o.ibotWeight
		if o.ibotWeight == 0 {
			c.MaskProb = 0
		}
	}
	if o.prototypes > 0 {
		c.Prototypes = o.prototypes
	}
	switch o.prototypeNorm {
	case "":
	case "fixed", "learned":
		c.FixedPrototypeNorm = o.prototypeNorm == "fixed"
	default:
		return c, fmt.Errorf("--prototype-norm %q: want fixed or learned", o.prototypeNorm)
	}
	if o.locals >= 0 {
		c.Augment.Locals = o.locals
	}
	if o.freezeLast >= 0 {
		c.FreezeLastLayerIters = o.freezeLast
	}
	if o.globalSize > 0 {
		c.Augment.GlobalSize = o.globalSize
	}
	if o.localSize > 0 {
		c.Augment.LocalSize = o.localSize
	}
	c.Seed = o.seed
	if o.replicas > 1 {
		c.Replicas = o.replicas
	}
	return c, c.Validate()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "train:", err)
		return 2
	}
	if err := trainMain(ctx, o, stdout, stderr); err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "train: interrupted; checkpoint saved")
			return 130
		}
		fmt.Fprintln(stderr, "train:", err)
		return 1
	}
	return 0
}

func trainMain(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	var c train.Config
	var resume *ckpt.Checkpoint
	var err error
	if o.resume != "" {
		if resume, err = ckpt.ReadFile(o.resume); err != nil {
			return err
		}
		if c, err = train.TrainConfig(resume); err != nil {
			return fmt.Errorf("--resume %s: %w", o.resume, err)
		}
		if c.ReplicaCount() != o.replicas {
			return fmt.Errorf("--resume %s: the run has %d replicas: give --replicas %d", o.resume, c.ReplicaCount(), c.ReplicaCount())
		}
	} else if c, err = o.config(); err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	ds, err := o.dataset()
	if err != nil {
		return err
	}
	if ds.Len() < c.GlobalBatch() {
		return fmt.Errorf("%d training images for a batch of %d", ds.Len(), c.GlobalBatch())
	}
	finish, err := launchLocal(o, stderr)
	if err != nil {
		return err
	}
	err = trainReplica(ctx, o, c, resume, ds, stdout, stderr)
	return errors.Join(err, finish(err != nil))
}

// trainReplica runs this process's replica (the only one without
// --replicas).
func trainReplica(ctx context.Context, o *options, c train.Config, resume *ckpt.Checkpoint, ds data.Dataset, stdout, stderr io.Writer) error {
	if o.rank > 0 {
		// Replica 0 reports; the others say only what goes wrong.
		stdout = io.Discard
	}
	stopCtx := ctx
	dev, err := gpu.Open()
	if err != nil {
		return err
	}
	defer dev.Close()
	info := dev.Info()
	fmt.Fprintf(stdout, "device: %s (%s)\n", info.Name, info.Backend)
	if a := dev.LoadsAdvice(); a != "" {
		fmt.Fprintln(stderr, a)
	}
	group, err := joinReplicas(ctx, o, stdout)
	if err != nil {
		return err
	}
	if group != nil {
		defer group.Close()
		// With replicas only the vote after each step stops the run: every
		// collective must be reached by all of them.
		ctx = context.WithoutCancel(ctx)
	}
	if o.minutes > 0 {
		start := time.Now()
		stepSecs, evalSecs, err := calibrate(ctx, o, c, dev, ds, group, stderr)
		if ctx.Err() != nil {
			return errors.New("interrupted while timing this device for --minutes; nothing was trained or saved")
		}
		if err != nil {
			return err
		}
		budget := o.minutes*60 - time.Since(start).Seconds()
		epochs, evalEpochs := fitBudget(budget, stepSecs, evalSecs, c.ItersPerEpoch)
		if group != nil {
			// Replica 0's plan (it evaluates, and its clock started the
			// budget) for all: their configs must agree.
			plan := []float32{0, 0}
			if group.Rank() == 0 {
				plan = []float32{float32(epochs), float32(evalEpochs)}
			}
			if err := group.AllReduceMax(plan); err != nil {
				return fmt.Errorf("--minutes: %w", err)
			}
			epochs, evalEpochs = int(plan[0]), int(plan[1])
		}
		c.Epochs = epochs
		if o.evalEvery <= 0 {
			o.evalEvery = evalEpochs * c.ItersPerEpoch
		}
		if err := c.Validate(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "--minutes %g: a step takes %.3f s and a k-NN evaluation %.1f s here, so %d epochs of %d steps (k-NN every %d steps)\n",
			o.minutes, stepSecs, evalSecs, epochs, c.ItersPerEpoch, o.evalEvery)
	}
	var tr *train.Trainer
	if group != nil {
		tr, err = train.NewReplica(dev, c, group)
	} else {
		tr, err = train.NewTrainer(dev, c)
	}
	if err != nil {
		return err
	}
	defer tr.Release()
	s := &session{o: o, c: c, dev: dev, tr: tr, group: group, rank: o.rank, stopCtx: stopCtx, ds: ds, stdout: stdout, stderr: stderr, start: time.Now()}
	if resume != nil {
		if err := tr.Restore(resume); err != nil {
			return fmt.Errorf("--resume %s: %w", o.resume, err)
		}
		s.pos = dataPosition(resume, o.rank)
		fmt.Fprintf(stdout, "resumed %s at step %d\n", o.resume, tr.StepsDone)
	} else if o.init != "" {
		start, err := ckpt.ReadFile(o.init)
		if err != nil {
			return err
		}
		if err := tr.LoadWeights(start); err != nil {
			return fmt.Errorf("--init %s: %w", o.init, err)
		}
		fmt.Fprintf(stdout, "started from the weights of %s\n", o.init)
	}
	fmt.Fprintf(stdout, "model %s, %d parameters; %d images, batch %d, %d steps (%d epochs of %d)\n",
		c.Model, c.Model.NumParams(), ds.Len(), c.GlobalBatch(), c.Iterations(), c.Epochs, c.ItersPerEpoch)
	if c.ReplicaCount() > 1 {
		fmt.Fprintf(stdout, "%d replicas of %d images each\n", c.ReplicaCount(), c.Batch)
	}
	if o.rank == 0 {
		if err := s.openMetrics(); err != nil {
			return err
		}
		defer s.metrics.Close()
	}
	return s.loop(ctx)
}

// dataset opens the training images.
func (o *options) dataset() (data.Dataset, error) {
	if o.data == "" {
		g, err := data.LoadFashionMNIST(data.FashionMNISTDir, "train")
		if err != nil {
			return nil, err
		}
		return data.GrayDataset{Gray: g, Name: "fashion-mnist/train"}, nil
	}
	var f *data.Files
	var err error
	st, err := os.Stat(o.data)
	if err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	if !st.IsDir() {
		f, err = data.ReadList(o.data)
	} else if o.imageFolder {
		f, err = data.ScanImageFolder(o.data)
	} else {
		f, err = data.ScanFolder(o.data)
	}
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", o.data, err)
	}
	if f.Len() == 0 {
		return nil, fmt.Errorf("--data %s: no images found (extensions %s)", o.data, strings.Join(data.ImageExtensions, " "))
	}
	return f, nil
}

func outPath(o *options, name string) string { return filepath.Join(o.out, name) }
