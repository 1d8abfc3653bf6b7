package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/dist"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
	"github.com/webdino/webdino/train"
)

// session is one invocation of the training loop.
type session struct {
	o     *options
	c     train.Config
	dev   *gpu.Device
	tr    *train.Trainer
	group *dist.Group // nil: one replica
	rank  int
	// stopCtx is Ctrl-C: the ctx of the loop itself, or with replicas one
	// that only the vote after each step consults (interrupted).
	stopCtx        context.Context
	ds             data.Dataset
	stdout, stderr io.Writer
	start          time.Time
	pos            dataPos
	rejects        data.Rejects
	metrics        *os.File
	enc            *json.Encoder
	steps          []stepRecord
	evals          []evalRecord
	lastSaved      int
}

// dataPos is where the next batch starts: the data epoch (whose order is
// data.Permutation(n, seed, epoch), or with replicas the replica's shard of
// it) and the position in that order. Replicas that skip unreadable images
// move on at their own pace, so each has its own.
type dataPos struct{ Epoch, Pos int }

const (
	scalarEpoch = "data_epoch"
	scalarPos   = "data_pos"
)

func dataPosition(c *ckpt.Checkpoint, rank int) dataPos {
	sc := c.Training.Scalars
	return dataPos{Epoch: int(sc[train.ReplicaKey(scalarEpoch, rank)]), Pos: int(sc[train.ReplicaKey(scalarPos, rank)])}
}

// stepRecord and evalRecord are the lines of metrics.jsonl.
type stepRecord struct {
	Step         int                `json:"step"`
	Epoch        float64            `json:"epoch"`
	Total        float64            `json:"loss"`
	DINO         float64            `json:"dino"`
	IBOT         float64            `json:"ibot"`
	KoLeo        float64            `json:"koleo"`
	NCE          float64            `json:"nce,omitempty"`
	TeacherEnt   float64            `json:"teacher_entropy"`
	LR           float64            `json:"lr"`
	WD           float64            `json:"wd"`
	Momentum     float64            `json:"teacher_momentum"`
	TeacherTemp  float64            `json:"teacher_temp"`
	GradNorm     map[string]float64 `json:"grad_norm"`
	Masked       int                `json:"masked_patches"`
	ImagesPerSec float64            `json:"images_per_s"`
	Elapsed      float64            `json:"elapsed_s"`
	// Exchange is, with replicas, the step's seconds spent combining with
	// the others (train.Losses.Exchange).
	Exchange float64 `json:"exchange_s,omitempty"`
	// Wait is the part of Exchange spent waiting for the slowest replica
	// (train.Losses.Wait).
	Wait float64 `json:"wait_s,omitempty"`
}

type evalRecord struct {
	Step      int      `json:"step"`
	KNNTop1   float64  `json:"knn_top1"`
	Train     int      `json:"knn_train_images"`
	Test      int      `json:"knn_test_images"`
	RawPixels *float64 `json:"raw_pixels_knn_top1,omitempty"` // the first evaluation's baseline
}

func (s *session) openMetrics() error {
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if s.o.resume != "" {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	f, err := os.OpenFile(outPath(s.o, "metrics.jsonl"), flags, 0o644)
	if err != nil {
		return err
	}
	s.metrics, s.enc = f, json.NewEncoder(f)
	return nil
}

func (s *session) loop(ctx context.Context) error {
	c, tr := s.c, s.tr
	stopAt := c.Iterations()
	if s.o.steps > 0 {
		stopAt = min(stopAt, tr.StepsDone+s.o.steps)
	}
	evalEvery := s.o.evalEvery
	if evalEvery <= 0 {
		evalEvery = c.ItersPerEpoch
	}
	s.lastSaved = tr.StepsDone
	if tr.StepsDone == 0 && s.rank == 0 {
		// The untrained network, for comparison (and the raw pixels).
		if err := s.evaluate(ctx); err != nil {
			return s.stop(ctx, err)
		}
	}
	prog := data.NewProgress("train", (stopAt-tr.StepsDone)*c.GlobalBatch())
	if s.rank > 0 {
		prog = data.NewPlainProgress(io.Discard, "train", 0, time.Hour)
	}
	n := s.ds.Len()
	for tr.StepsDone < stopAt {
		order := data.Permutation(n, c.Seed, s.pos.Epoch)
		if s.group != nil {
			order = shard(order, c.Batch, s.rank, c.ReplicaCount())
		}
		where := make([]int, n)
		for i, v := range order {
			where[v] = i
		}
		loader := data.Loader{Data: s.ds, BatchSize: c.Batch, Workers: s.o.workers, DropLast: true, Rejects: &s.rejects}
		t0 := time.Now()
		for b, err := range loader.Batches(ctx, order[s.pos.Pos:]) {
			if err != nil {
				return s.stop(ctx, err)
			}
			lo, err := s.step(b)
			if err != nil {
				prog.Finish()
				return err
			}
			s.pos.Pos = where[b.Indices[len(b.Indices)-1]] + 1
			dt := time.Since(t0)
			t0 = time.Now()
			s.record(lo, dt)
			prog.Add(c.GlobalBatch())
			nce := ""
			if c.NCEWeight > 0 {
				nce = fmt.Sprintf(" nce %.3f", lo.NCE)
			}
			prog.SetExtra(fmt.Sprintf("step %d/%d loss %.3f (dino %.3f ibot %.3f koleo %.2f%s) lr %.2g",
				tr.StepsDone, c.Iterations(), lo.Total, lo.DINO, lo.IBOT, lo.KoLeo, nce, lo.LR))
			if tr.StepsDone%s.o.saveEvery == 0 {
				if err := s.save(); err != nil {
					return err
				}
			}
			if tr.StepsDone%evalEvery == 0 && tr.StepsDone < stopAt && s.rank == 0 {
				if err := s.evaluate(ctx); err != nil {
					return s.stop(ctx, err)
				}
			}
			if tr.StepsDone >= stopAt {
				break
			}
			if stop, err := s.interrupted(s.stopCtx); err != nil {
				return err
			} else if stop {
				if err := s.save(); err != nil {
					return err
				}
				return context.Canceled
			}
		}
		if tr.StepsDone < stopAt {
			s.pos = dataPos{Epoch: s.pos.Epoch + 1}
		}
	}
	prog.Finish()
	if err := s.save(); err != nil {
		return err
	}
	if s.rank > 0 {
		return nil
	}
	if r := s.rejects.Len(); r > 0 {
		fmt.Fprintf(s.stdout, "skipped %d unreadable images: %s\n", r, outPath(s.o, "rejects.jsonl"))
		if err := s.rejects.WriteFile(outPath(s.o, "rejects.jsonl")); err != nil {
			return err
		}
	}
	if err := s.evaluate(ctx); err != nil {
		return s.stop(ctx, err)
	}
	if err := s.plots(); err != nil {
		return err
	}
	if err := s.pictures(ctx); err != nil {
		return s.stop(ctx, err)
	}
	fmt.Fprintf(s.stdout, "done: %d steps in %s; checkpoint %s\n", tr.StepsDone, time.Since(s.start).Round(time.Second), outPath(s.o, "checkpoint.msgpack"))
	if sum := s.summary(); sum != "" {
		fmt.Fprintln(s.stdout, sum)
	}
	return nil
}

// step uploads one batch and trains on it.
func (s *session) step(b *data.Batch) (train.Losses, error) {
	imgs := make([]nn.Image, len(b.Images))
	for i, im := range b.Images {
		imgs[i] = nn.Image{H: im.H, W: im.W, C: 3, Pix: im.Pix}
	}
	batch, err := nn.UploadImages(s.dev, imgs)
	if err != nil {
		return train.Losses{}, err
	}
	defer batch.Release()
	lo, err := s.tr.Step(batch)
	if errors.Is(err, train.ErrNonFinite) {
		return lo, fmt.Errorf("%w\nstopped before applying step %d; the checkpoint %s is the last good state (step %d)",
			err, lo.Step, outPath(s.o, "checkpoint.msgpack"), s.lastSaved)
	}
	return lo, err
}

// stop handles an interruption: on Ctrl-C the state after the last
// completed step is saved; other errors pass through.
func (s *session) stop(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		if serr := s.save(); serr != nil {
			return serr
		}
		return context.Canceled
	}
	return err
}

func (s *session) record(lo train.Losses, dt time.Duration) {
	r := stepRecord{
		Step: lo.Step + 1, Epoch: float64(lo.Step+1) / float64(s.c.ItersPerEpoch),
		Total: lo.Total, DINO: lo.DINO, IBOT: lo.IBOT, KoLeo: lo.KoLeo, NCE: lo.NCE, TeacherEnt: lo.TeacherEntropy,
		LR: lo.LR, WD: lo.WD, Momentum: lo.Momentum, TeacherTemp: lo.TeacherTemp, GradNorm: lo.GradNorm,
		Masked: lo.MaskedPatches, ImagesPerSec: float64(s.c.GlobalBatch()) / dt.Seconds(), Elapsed: time.Since(s.start).Seconds(),
		Exchange: lo.Exchange.Seconds(), Wait: lo.Wait.Seconds(),
	}
	s.steps = append(s.steps, r)
	if s.enc != nil {
		s.enc.Encode(r)
	}
}

// save writes the checkpoint atomically; with replicas every one takes
// part, they check that they still agree (train.Trainer.Resync), and
// replica 0 writes.
func (s *session) save() error {
	snap, err := s.tr.Snapshot()
	if err != nil {
		return err
	}
	pos := []dataPos{s.pos}
	if s.group != nil {
		if pos, err = s.gatherPositions(); err != nil {
			return err
		}
		drifted, err := s.tr.Resync(snap)
		if err != nil {
			return err
		}
		if drifted && s.rank == 0 {
			fmt.Fprintf(s.stderr, "step %d: the replicas' parameters had drifted apart (devices of different kinds round differently); replica 0's state now holds on all\n", s.tr.StepsDone)
		}
	}
	if s.rank > 0 {
		s.lastSaved = s.tr.StepsDone
		return nil
	}
	snap.Training.Scalars = map[string]float64{}
	for r, p := range pos {
		snap.Training.Scalars[train.ReplicaKey(scalarEpoch, r)] = float64(p.Epoch)
		snap.Training.Scalars[train.ReplicaKey(scalarPos, r)] = float64(p.Pos)
	}
	if err := ckpt.WriteFile(outPath(s.o, "checkpoint.msgpack"), snap); err != nil {
		return err
	}
	s.lastSaved = s.tr.StepsDone
	return nil
}
