package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/webdino/webdino/curate"
	"github.com/webdino/webdino/gpu"
)

// balancedOpts are the retrieve flags of --mode balanced.
type balancedOpts struct {
	count, sample, iters, resample, resamplePoints, maxRows int
	levels                                                  []int
	seed                                                    uint64
}

// parseLevels parses --levels, clusters per level finest first.
func parseLevels(s string) ([]int, error) {
	var levels []int
	for _, f := range strings.Split(s, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 || (len(levels) > 0 && k > levels[len(levels)-1]) {
			return nil, fmt.Errorf("--levels %q: want positive cluster counts, finest first, each at most the one before", s)
		}
		levels = append(levels, k)
	}
	return levels, nil
}

// balancedSample draws o.count of p's rows that keep accepts, balanced
// over a hierarchical k-means (Vo et al. 2024) of the concepts: fitted on
// at most o.sample of those rows, then every one assigned to a finest
// cluster, and sampled top-down with water-filled quotas.
func balancedSample(ctx context.Context, dev *gpu.Device, p *pool, keep []bool, o balancedOpts, stderr io.Writer) ([]manifestRow, error) {
	var cand []int
	for i, k := range keep {
		if k {
			cand = append(cand, i)
		}
	}
	if len(cand) == 0 {
		return nil, fmt.Errorf("balanced sampling: no candidate rows")
	}
	d := p.rows.Dim()
	fit := cand
	if len(cand) > o.sample {
		fit = make([]int, o.sample)
		for j, r := range newShuffle(o.seed).Perm(len(cand))[:o.sample] {
			fit[j] = cand[r]
		}
	}
	x := make([]float32, len(fit)*d)
	for j, i := range fit {
		if err := p.rows.Read(i, i+1, x[j*d:(j+1)*d]); err != nil {
			return nil, err
		}
	}
	levels := make([]int, len(o.levels))
	items := len(fit)
	for l, k := range o.levels {
		levels[l] = min(k, items)
		items = levels[l]
	}
	fmt.Fprintf(stderr, "hierarchical k-means: levels %v on %d pool rows, %d resampling rounds\n", levels, len(fit), o.resample)
	h, err := curate.HierarchicalKMeans(ctx, dev, x, d, curate.HKMOpts{Levels: levels, Iters: o.iters, Seed: o.seed,
		Resample: o.resample, ResamplePoints: o.resamplePoints, MaxRows: o.maxRows})
	if err != nil {
		return nil, err
	}
	if len(fit) < len(cand) { // assign every candidate to a finest cluster
		km := &curate.KMeans{K: levels[0], D: d, Centroids: h.Levels[0].Centroids}
		all, _, err := km.Predict(ctx, dev, p.rows, o.maxRows)
		if err != nil {
			return nil, err
		}
		h.Levels[0].Assign = make([]int, len(cand))
		for j, i := range cand {
			h.Levels[0].Assign[j] = all[i]
		}
	}
	var rows []manifestRow
	for _, j := range h.Sample(o.count, o.seed) {
		id := p.ids[cand[j]]
		rows = append(rows, manifestRow{Path: id.Path, Source: id.Source, Reason: "balanced", Cluster: h.Levels[0].Assign[j]})
	}
	return rows, nil
}
