//go:build !js

package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/webdino/webdino/dist"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// replicaInputs are the crops and masks of several steps of a run of B
// images: global [2B, 3, G, G] and local [L*B, 3, S, S], crop-major as the
// augmenter lays them out.
type replicaInputs struct {
	global, local [][]float32
	masks         [][][]bool
}

func makeReplicaInputs(c Config, steps int) replicaInputs {
	rng := rand.New(rand.NewPCG(5, 6))
	B, L, G, S := c.Batch, c.Augment.Locals, c.Augment.GlobalSize, c.Augment.LocalSize
	N := (G / c.Model.PatchSize) * (G / c.Model.PatchSize)
	var in replicaInputs
	for s := 0; s < steps; s++ {
		g, l := make([]float32, 2*B*3*G*G), make([]float32, L*B*3*S*S)
		for _, x := range [][]float32{g, l} {
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
		}
		ms := make([][]bool, 2*B)
		for i := range ms {
			ms[i] = make([]bool, N)
			// Two of every four crops masked; at step 1 none of the last
			// half of the images (a replica without masked patches).
			if i%4 < 2 && !(s == 1 && i%B >= B/2) {
				for _, n := range rng.Perm(N)[:2+rng.IntN(3)] {
					ms[i][n] = true
				}
			}
		}
		in.global, in.local, in.masks = append(in.global, g), append(in.local, l), append(in.masks, ms)
	}
	return in
}

// share is replica r's part of a step's inputs when W replicas split B
// images.
func (in replicaInputs) share(c Config, s, r, W int) (global, local []float32, masks [][]bool) {
	B, L := c.Batch, c.Augment.Locals
	b := B / W
	pick := func(x []float32, crops int) []float32 {
		per := len(x) / (crops * B)
		var out []float32
		for k := 0; k < crops; k++ {
			from := (k*B + r*b) * per
			out = append(out, x[from:from+b*per]...)
		}
		return out
	}
	for k := 0; k < 2; k++ {
		masks = append(masks, in.masks[s][k*B+r*b:k*B+(r+1)*b]...)
	}
	return pick(in.global[s], 2), pick(in.local[s], L), masks
}

// replicaState is what a run ends with.
type replicaState struct {
	losses           []Losses
	student, teacher map[string][]float32
	backboneRead     string // Trainer.backboneRead after the last step
}

func readParams(t *testing.T, tr *Trainer) replicaState {
	st := replicaState{student: map[string][]float32{}, teacher: map[string][]float32{}}
	for _, m := range []struct {
		model *Model
		dst   map[string][]float32
	}{{tr.Student, st.student}, {tr.Teacher, st.teacher}} {
		for _, mod := range m.model.Modules() {
			for _, name := range mod.Params.Layout.Names() {
				v, err := tr.dev.Read(mod.Params.Get(name))
				require.NoError(t, err)
				m.dst[mod.Name+"."+name] = v
			}
		}
	}
	return st
}

// onReplicas runs f on W replicas of c, each on a device of its own, joined
// over loopback TCP.
func onReplicas(t *testing.T, c Config, W int, f func(tr *Trainer, r int) error) {
	t.Helper()
	require.NoError(t, errors.Join(replicas(c, W, f)...))
}

// replicas runs f on W replicas of c (config(r) where given) and returns
// their errors.
func replicas(c Config, W int, f func(tr *Trainer, r int) error, config ...func(r int) Config) []error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return []error{err}
	}
	addr := l.Addr().String()
	l.Close()
	c.Replicas = W
	errs := make([]error, W)
	var wg sync.WaitGroup
	for r := range W {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = func() error {
				dev, err := gpu.Open()
				if err != nil {
					return err
				}
				defer dev.Close()
				g, err := dist.Join(context.Background(), dist.Options{Rank: r, Size: W, Addr: addr, Timeout: 2 * time.Minute})
				if err != nil {
					return err
				}
				defer g.Close()
				rc := c
				if len(config) > 0 {
					rc = config[0](r)
				}
				tr, err := NewReplica(dev, rc, g)
				if err != nil {
					return err
				}
				defer tr.Release()
				return f(tr, r)
			}()
		}()
	}
	wg.Wait()
	return errs
}

// A replica given another config is refused by all, with both configs.
func TestReplicasRefuseDifferentConfigs(t *testing.T) {
	c := tinyConfig()
	c.Replicas = 2
	errs := replicas(c, 2, func(*Trainer, int) error { return nil }, func(r int) Config {
		rc := c
		rc.Seed = uint64(r)
		return rc
	})
	require.ErrorContains(t, errs[0], "train: replica 1 was started with another config than replica 0:")
	require.ErrorContains(t, errs[1], "train: replica 0 was started with another config than replica 1:")
	require.ErrorContains(t, errs[1], `"Seed":1`)
}

// Two replicas of two images each train as one device on all four: the
// same losses, gradient norms and parameters after three steps (both
// centerings; at step 1 one replica has no masked patch). KoLeo is off:
// it stays within each replica's batch, as in the reference.
func TestReplicasTrainAsOneDevice(t *testing.T) {
	dev := testDevice(t)
	// The backbone's gradients exchanged after its backward pass (the
	// buckets larger than the model), or block by block during it.
	for _, tc := range []struct {
		centering string
		bucket    int
	}{{"centering", exchangeBucket}, {"centering", 1}, {"sinkhorn", 1}} {
		centering := tc.centering
		t.Run(fmt.Sprintf("%s/bucket-%d", centering, tc.bucket), func(t *testing.T) {
			c := tinyConfig()
			c.Centering, c.SeparateIBOTHead = centering, centering == "sinkhorn"
			c.KoLeoWeight, c.DropPath = 0, 0
			const steps, W = 3, 2
			in := makeReplicaInputs(c, steps)

			tr, err := NewTrainer(dev, c)
			require.NoError(t, err)
			defer tr.Release()
			start := readParams(t, tr)
			var want replicaState
			for s := 0; s < steps; s++ {
				lo, err := tr.StepCrops(in.global[s], in.local[s], in.masks[s])
				require.NoError(t, err)
				want.losses = append(want.losses, lo)
			}
			final := readParams(t, tr)
			want.student, want.teacher = final.student, final.teacher

			rc := c
			rc.Batch = c.Batch / W
			got := make([]replicaState, W)
			onReplicas(t, rc, W, func(tr *Trainer, r int) error {
				tr.bucket = tc.bucket
				for s := 0; s < steps; s++ {
					g, l, m := in.share(c, s, r, W)
					lo, err := tr.StepCrops(g, l, m)
					if err != nil {
						return fmt.Errorf("replica %d step %d: %w", r, s, err)
					}
					got[r].losses = append(got[r].losses, lo)
				}
				got[r].backboneRead = tr.backboneRead
				st := readParams(t, tr)
				got[r].student, got[r].teacher = st.student, st.teacher
				return nil
			})

			wantRead := ""
			if tc.bucket == 1 {
				wantRead = nn.BlockStart(0) // a bucket per block, the last from block 0 on
			}
			require.Equal(t, wantRead, got[0].backboneRead, "the backbone's gradients read during its backward pass from")
			require.Equal(t, got[0].student, got[1].student, "replicas hold the same student")
			require.Equal(t, got[0].teacher, got[1].teacher, "replicas hold the same teacher")
			for s, w := range want.losses {
				g, g1 := got[0].losses[s], got[1].losses[s]
				g.Exchange, g1.Exchange, g.Wait, g1.Wait = 0, 0, 0, 0 // times
				require.Equal(t, g1, g, "step %d: replicas report the same losses", s)
				require.Positive(t, got[0].losses[s].Exchange, "step %d: exchange time", s)
				require.Positive(t, got[0].losses[s].Wait, "step %d: wait time", s)
				require.Less(t, got[0].losses[s].Wait, got[0].losses[s].Exchange, "step %d: wait within exchange", s)
				require.Equal(t, w.MaskedPatches, g.MaskedPatches, "step %d", s)
				// f32 sums in other orders: relative 1e-5.
				for _, p := range [][3]any{{"dino", w.DINO, g.DINO}, {"ibot", w.IBOT, g.IBOT}, {"entropy", w.TeacherEntropy, g.TeacherEntropy}} {
					assert.InEpsilon(t, p[1], p[2], 1e-5, "step %d %s", s, p[0])
				}
				for mod, n := range w.GradNorm {
					assert.InEpsilon(t, n, g.GradNorm[mod], 1e-4, "step %d gradient norm of %s", s, mod)
				}
			}
			// As the whole-step fixture: 1% of the largest change of each
			// tensor over the run, or 8 ulps of its largest weight.
			for _, who := range []struct {
				name             string
				start, want, got map[string][]float32
			}{{"student", start.student, want.student, got[0].student}, {"teacher", start.teacher, want.teacher, got[0].teacher}} {
				for name, w := range who.want {
					g, w0 := who.got[name], who.start[name]
					require.Len(t, g, len(w), name)
					d, change, size := 0.0, 0.0, 0.0
					for i := range w {
						d = math.Max(d, math.Abs(float64(w[i]-g[i])))
						change = math.Max(change, math.Abs(float64(w[i]-w0[i])))
						size = math.Max(size, math.Abs(float64(w[i])))
					}
					assert.LessOrEqual(t, d, math.Max(1e-2*change, 8*0x1p-23*size), "%s %s: largest change %.3g", who.name, name, change)
				}
			}
		})
	}
}

// Replicas that have drifted apart (as devices of different kinds do, by
// rounding) get replica 0's state back from Resync, and train on in step;
// replicas that agree are left alone.
func TestReplicasResync(t *testing.T) {
	c := tinyConfig()
	c.Batch = 2
	in := makeReplicaInputs(c, 2)
	var drifts [2][3]bool
	var after [2]replicaState
	onReplicas(t, c, 2, func(tr *Trainer, r int) error {
		resync := func(i int) error {
			snap, err := tr.Snapshot()
			if err != nil {
				return err
			}
			drifts[r][i], err = tr.Resync(snap)
			return err
		}
		if _, err := tr.StepCrops(in.global[0], in.local[0], in.masks[0]); err != nil {
			return err
		}
		if err := resync(0); err != nil {
			return err
		}
		if r == 1 {
			mod := tr.Student.Modules()[0]
			w := mod.Params.Get(mod.Params.Layout.Names()[0])
			v, err := tr.dev.Read(w)
			if err != nil {
				return err
			}
			v[0] += 1e-3
			if err := tr.dev.Write(w, v); err != nil {
				return err
			}
		}
		if err := resync(1); err != nil {
			return err
		}
		if _, err := tr.StepCrops(in.global[1], in.local[1], in.masks[1]); err != nil {
			return err
		}
		if err := resync(2); err != nil {
			return err
		}
		after[r] = readParams(t, tr)
		return nil
	})
	for r := range 2 {
		require.Equal(t, [3]bool{false, true, false}, drifts[r], "replica %d: drifted after the step, after the change, after the next step", r)
	}
	require.Equal(t, after[0].student, after[1].student)
	require.Equal(t, after[0].teacher, after[1].teacher)
}
