package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/webdino/webdino/data"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/train"
)

// calibrationSteps are the steps timed (after one warm-up step that
// compiles the pipelines) to size a --minutes run.
const calibrationSteps = 3

// calibrate times, with a throwaway trainer for c on dev, one k-NN
// evaluation (the first, which also scores raw pixels, so an upper bound)
// and one training step on the first batches of ds.
func calibrate(ctx context.Context, o *options, c train.Config, dev *gpu.Device, ds data.Dataset, stderr io.Writer) (stepSecs, evalSecs float64, err error) {
	tr, err := train.NewTrainer(dev, c)
	if err != nil {
		return 0, 0, err
	}
	defer tr.Release()
	s := &session{o: o, c: c, dev: dev, tr: tr, ds: ds, stdout: io.Discard, stderr: stderr, start: time.Now(), enc: json.NewEncoder(io.Discard)}
	t := time.Now()
	if err := s.evaluate(ctx); err != nil {
		return 0, 0, fmt.Errorf("calibrate: %w", err)
	}
	evalSecs = time.Since(t).Seconds()
	loader := data.Loader{Data: ds, BatchSize: c.Batch, Workers: o.workers, DropLast: true, Rejects: &s.rejects}
	done := 0
	for b, err := range loader.Batches(ctx, data.Permutation(ds.Len(), c.Seed, 0)) {
		if err != nil {
			return 0, 0, fmt.Errorf("calibrate: %w", err)
		}
		if done == 1 { // after the warm-up step
			t = time.Now()
		}
		if _, err := s.step(b); err != nil {
			return 0, 0, fmt.Errorf("calibrate: %w", err)
		}
		if done++; done == 1+calibrationSteps {
			break
		}
	}
	if done < 2 {
		return 0, 0, fmt.Errorf("calibrate: %d images give no second batch of %d", ds.Len(), c.Batch)
	}
	return time.Since(t).Seconds() / float64(done-1), evalSecs, nil
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
