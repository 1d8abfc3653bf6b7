package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/dist"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/train"
)

// calibrationSteps are the steps timed (after warm-up steps, see
// gpu.WarmUp) to size a --minutes run.
const calibrationSteps = 3

// maxWarmupSteps bounds calibrate's warm-up.
const maxWarmupSteps = 10

// calibrate times, with a throwaway trainer for c on dev, a k-NN
// evaluation and a training step on the first batches of ds, each after
// warm-up runs. With replicas (group) the steps are data-parallel steps,
// exchange included, taken by every replica together, and only replica 0
// evaluates (evalSecs is 0 on the others).
func calibrate(ctx context.Context, o *options, c train.Config, dev *gpu.Device, ds data.Dataset, group *dist.Group, stderr io.Writer) (stepSecs, evalSecs float64, err error) {
	var tr *train.Trainer
	if group != nil {
		tr, err = train.NewReplica(dev, c, group)
	} else {
		tr, err = train.NewTrainer(dev, c)
	}
	if err != nil {
		return 0, 0, err
	}
	defer tr.Release()
	s := &session{o: o, c: c, dev: dev, tr: tr, ds: ds, stdout: io.Discard, stderr: stderr, start: time.Now(), enc: json.NewEncoder(io.Discard)}
	if group == nil || group.Rank() == 0 {
		// Two evaluations, the second timed: the first compiles the
		// pipelines (on a cold lavapipe shader cache, 128 s against 22 s
		// warm: timed, it cut a --minutes 10 demo to one epoch that ended
		// after 6 minutes) and scores raw pixels besides.
		ew := gpu.NewWarmUp(dev, 2)
		if err := ew.Repeat(func() error { return s.evaluate(ctx) }); err != nil {
			return 0, 0, fmt.Errorf("calibrate: %w", err)
		}
		evalSecs = ew.Last()
	}
	var t time.Time
	loader := data.Loader{Data: ds, BatchSize: c.Batch, Workers: o.workers, DropLast: true, Rejects: &s.rejects}
	w := gpu.NewWarmUp(dev, maxWarmupSteps)
	warm, timed := false, 0
	w.Start()
	for b, err := range loader.Batches(ctx, data.Permutation(ds.Len(), c.Seed, 0)) {
		if err != nil {
			return 0, 0, fmt.Errorf("calibrate: %w", err)
		}
		if _, err := s.step(b); err != nil {
			return 0, 0, fmt.Errorf("calibrate: %w", err)
		}
		if !warm {
			if warm, err = allWarm(group, w.Warm()); err != nil {
				return 0, 0, fmt.Errorf("calibrate: %w", err)
			}
			if warm {
				t = time.Now()
			} else {
				w.Start()
			}
			continue
		}
		if timed++; timed == calibrationSteps {
			break
		}
	}
	switch {
	case w.Runs() == 0:
		return 0, 0, fmt.Errorf("calibrate: %d images give no batch of %d", ds.Len(), c.Batch)
	case timed == 0: // too few batches to warm up: the last step, an overestimate
		return w.Last(), evalSecs, nil
	}
	dev.Sync()
	return time.Since(t).Seconds() / float64(timed), evalSecs, nil
}

// allWarm reports whether every replica's warm-up is done (warm is this
// one's), so that all of them take the same steps.
func allWarm(group *dist.Group, warm bool) (bool, error) {
	if group == nil {
		return warm, nil
	}
	cold := []float32{0}
	if !warm {
		cold[0] = 1
	}
	err := group.AllReduceMax(cold)
	return cold[0] == 0, err
}

// fitBudget sizes a run to budget seconds: the most epochs of
// itersPerEpoch steps of stepSecs each whose k-NN evaluations (evalSecs
// each: one before training, one every evalEpochs epochs, one at the end)
// fit too. evalEpochs keeps the evaluations to about ten. At least one
// epoch, even if it does not fit.
func fitBudget(budget, stepSecs, evalSecs float64, itersPerEpoch int) (epochs, evalEpochs int) {
	cost := func(e int) (float64, int) {
		every := max(1, e/10)
		return float64(e*itersPerEpoch)*stepSecs + float64(e/every+1)*evalSecs, every
	}
	epochs = max(1, int(budget/(float64(itersPerEpoch)*stepSecs)))
	for epochs > 1 {
		if c, _ := cost(epochs); c <= budget {
			break
		}
		epochs--
	}
	_, evalEpochs = cost(epochs)
	return epochs, evalEpochs
}
