package train

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"unsafe"

	"github.com/webdino/webdino/ckpt"
	"github.com/webdino/webdino/gpu"
	"github.com/webdino/webdino/nn"
)

// Checkpoint blobs and the centers' group (docs/checkpoint.md).
const (
	blobConfig  = "train_config" // Config as JSON
	blobAugment = "augment_rng"
	blobMasks   = "mask_rng"
	groupCenter = "centers"
)

// stateGroup is one flat buffer of the training state, by checkpoint group.
type stateGroup struct {
	name string
	flat *nn.Flat
}

// groups lists the flat buffers a checkpoint holds: "student/<module>",
// "teacher/<module>", "adam_m/<module>", "adam_v/<module>".
func (t *Trainer) groups() []stateGroup {
	var gs []stateGroup
	tm := t.Teacher.Modules()
	for i, m := range t.Student.Modules() {
		gs = append(gs, stateGroup{"student/" + m.Name, m.Params}, stateGroup{"teacher/" + m.Name, tm[i].Params},
			stateGroup{"adam_m/" + m.Name, t.M[i]}, stateGroup{"adam_v/" + m.Name, t.V[i]})
	}
	return gs
}

func (t *Trainer) centers() map[string]*gpu.Tensor {
	return map[string]*gpu.Tensor{"center": t.Center, "ibot_center": t.IBOTCenter}
}

// readFlat reads a flat buffer's tensors back in one readback.
func (t *Trainer) readFlat(f *nn.Flat) (map[string]ckpt.Tensor, error) {
	names := f.Layout.Names()
	views := make([]*gpu.Tensor, len(names))
	for i, name := range names {
		views[i] = f.Get(name)
	}
	vs, err := t.dev.ReadAll(views...)
	if err != nil {
		return nil, fmt.Errorf("read back %d tensors: %w", len(names), err)
	}
	out := map[string]ckpt.Tensor{}
	for i, name := range names {
		out[name] = ckpt.Tensor{Shape: f.Layout.Shape(name), Data: vs[i]}
	}
	return out, nil
}

// Snapshot reads the whole training state back into a checkpoint: the
// teacher backbone as the model (what inference uses), and in Training the
// student and teacher modules, the AdamW moments, the centers, the step and
// the generators' states, so that Restore continues bit for bit. With
// replicas it is collective (every replica calls it at the same step) and
// each returns the same checkpoint, holding every replica's generators.
func (t *Trainer) Snapshot() (*ckpt.Checkpoint, error) {
	cfg, err := json.Marshal(t.Cfg)
	if err != nil {
		return nil, err
	}
	tr := &ckpt.Training{Step: int64(t.StepsDone), Groups: map[string]map[string]ckpt.Tensor{}, Blobs: map[string][]byte{blobConfig: cfg}}
	aug, err := t.aug.MarshalBinary()
	if err != nil {
		return nil, err
	}
	masks, err := t.maskRS.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if t.group == nil {
		tr.Blobs[blobAugment], tr.Blobs[blobMasks] = aug, masks
	} else {
		both, err := t.group.AllGather(append(binary.AppendUvarint(nil, uint64(len(aug))), append(aug, masks...)...))
		if err != nil {
			return nil, fmt.Errorf("snapshot: gather the replicas' generators: %w", err)
		}
		for r, b := range both {
			n, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < n {
				return nil, fmt.Errorf("snapshot: replica %d sent a malformed generator state", r)
			}
			tr.Blobs[ReplicaKey(blobAugment, r)] = b[k : k+int(n)]
			tr.Blobs[ReplicaKey(blobMasks, r)] = b[k+int(n):]
		}
	}
	for _, g := range t.groups() {
		if tr.Groups[g.name], err = t.readFlat(g.flat); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", g.name, err)
		}
	}
	centers := map[string]ckpt.Tensor{}
	for name, c := range t.centers() {
		v, err := t.dev.Read(c)
		if err != nil {
			return nil, err
		}
		centers[name] = ckpt.Tensor{Shape: []int{len(v)}, Data: v}
	}
	tr.Groups[groupCenter] = centers
	weights, err := t.readFlat(t.Teacher.Backbone.Params)
	if err != nil {
		return nil, err
	}
	return &ckpt.Checkpoint{Config: t.Cfg.Model, Weights: weights, Training: tr,
		Meta: map[string]string{"source": "webdino train", "weights": "teacher backbone"}}, nil
}

// TrainConfig returns the training config stored in a checkpoint written by
// Snapshot.
func TrainConfig(c *ckpt.Checkpoint) (Config, error) {
	var cfg Config
	if c.Training == nil || c.Training.Blobs[blobConfig] == nil {
		return cfg, fmt.Errorf("checkpoint has no training state (a model-only file cannot be resumed)")
	}
	if err := json.Unmarshal(c.Training.Blobs[blobConfig], &cfg); err != nil {
		return cfg, fmt.Errorf("checkpoint training config: %w", err)
	}
	return cfg, nil
}

// Restore loads a state written by Snapshot into t, whose config must be
// the one the checkpoint was trained with.
func (t *Trainer) Restore(c *ckpt.Checkpoint) error {
	cfg, err := TrainConfig(c)
	if err != nil {
		return err
	}
	want, _ := json.Marshal(t.Cfg)
	got, _ := json.Marshal(cfg)
	if !bytes.Equal(want, got) {
		return fmt.Errorf("checkpoint was trained with another config:\n  checkpoint %s\n  this run   %s", got, want)
	}
	tr := c.Training
	for _, g := range t.groups() {
		if err := t.writeFlat(g.flat, tr.Groups[g.name], g.name); err != nil {
			return err
		}
	}
	for name, dst := range t.centers() {
		v, ok := tr.Groups[groupCenter][name]
		if !ok || len(v.Data) != dst.Len() {
			return fmt.Errorf("checkpoint: %s/%s missing or mis-shaped", groupCenter, name)
		}
		if err := t.dev.Write(dst, v.Data); err != nil {
			return err
		}
	}
	rank := 0
	if t.group != nil {
		rank = t.group.Rank()
	}
	augKey, maskKey := ReplicaKey(blobAugment, rank), ReplicaKey(blobMasks, rank)
	if err := t.aug.UnmarshalBinary(tr.Blobs[augKey]); err != nil {
		return fmt.Errorf("checkpoint %s: %w", augKey, err)
	}
	if err := t.maskRS.UnmarshalBinary(tr.Blobs[maskKey]); err != nil {
		return fmt.Errorf("checkpoint %s: %w", maskKey, err)
	}
	t.StepsDone = int(tr.Step)
	return nil
}

// ReplicaKey names replica r's entry of a checkpoint's per-replica state
// (generators, data position): rank 0's under the single-device name, so
// that a checkpoint reads the same either way.
func ReplicaKey(name string, r int) string {
	if r == 0 {
		return name
	}
	return fmt.Sprintf("%s/%d", name, r)
}

func (t *Trainer) writeFlat(f *nn.Flat, ts map[string]ckpt.Tensor, group string) error {
	if len(ts) != len(f.Layout.Names()) {
		return fmt.Errorf("checkpoint group %s: %d tensors, want %d", group, len(ts), len(f.Layout.Names()))
	}
	for _, name := range f.Layout.Names() {
		v, ok := ts[name]
		if !ok || len(v.Data) != f.Get(name).Len() {
			return fmt.Errorf("checkpoint group %s: tensor %q missing or mis-shaped", group, name)
		}
		if err := t.dev.Write(f.Get(name), v.Data); err != nil {
			return fmt.Errorf("checkpoint group %s: %q: %w", group, name, err)
		}
	}
	return nil
}

// LoadWeights starts a new run from trained weights: the student and the
// teacher of a training checkpoint, or a model-only checkpoint's backbone
// in both (the heads keep their initialisation). Optimiser moments, centers
// and the step are not taken: a high-resolution phase or a fine-tuning run
// starts its schedules afresh. The backbone configs must match (a new crop
// size is fine: positions are interpolated).
func (t *Trainer) LoadWeights(c *ckpt.Checkpoint) error {
	want, _ := json.Marshal(t.Cfg.Model)
	got, _ := json.Marshal(c.Config)
	if !bytes.Equal(want, got) {
		return fmt.Errorf("checkpoint holds another backbone: %s, this run %s", c.Config, t.Cfg.Model)
	}
	if c.Training == nil {
		for _, m := range []*Model{t.Student, t.Teacher} {
			if err := t.writeFlat(m.Backbone.Params, c.Weights, "weights"); err != nil {
				return err
			}
		}
		return nil
	}
	for _, g := range t.groups() {
		if strings.HasPrefix(g.name, "student/") || strings.HasPrefix(g.name, "teacher/") {
			if err := t.writeFlat(g.flat, c.Training.Groups[g.name], g.name); err != nil {
				return err
			}
		}
	}
	return nil
}

// Resync makes sure the replicas still hold the same state: each hashes
// snap (its Snapshot of this step), and if any differs from replica 0's,
// replica 0's snapshot is sent to all and restored. Replicas take identical
// steps, so on devices of one kind they never differ; devices of different
// kinds round some operations differently and drift apart. Collective; it
// reports whether the replicas had drifted.
func (t *Trainer) Resync(snap *ckpt.Checkpoint) (bool, error) {
	if t.group == nil {
		return false, nil
	}
	sums, err := t.group.AllGather(binary.LittleEndian.AppendUint64(nil, stateSum(snap)))
	if err != nil {
		return false, fmt.Errorf("resync: %w", err)
	}
	same := true
	for _, s := range sums[1:] {
		same = same && bytes.Equal(s, sums[0])
	}
	if same {
		return false, nil
	}
	var mine []byte
	if t.group.Rank() == 0 {
		if mine, err = ckpt.Encode(snap); err != nil {
			return true, fmt.Errorf("resync: %w", err)
		}
	}
	all, err := t.group.AllGather(mine)
	if err != nil {
		return true, fmt.Errorf("resync: %w", err)
	}
	if t.group.Rank() == 0 {
		return true, nil
	}
	first, err := ckpt.Decode(all[0])
	if err != nil {
		return true, fmt.Errorf("resync: replica 0's state: %w", err)
	}
	if err := t.Restore(first); err != nil {
		return true, fmt.Errorf("resync: %w", err)
	}
	return true, nil
}

// stateSum hashes a snapshot's model and training tensors (CRC-32C of
// each, in name order, folded into 64 bits).
func stateSum(c *ckpt.Checkpoint) uint64 {
	table := crc32.MakeTable(crc32.Castagnoli)
	h := fnv.New64a()
	add := func(ts map[string]ckpt.Tensor) {
		names := slices.Sorted(maps.Keys(ts))
		for _, name := range names {
			d := ts[name].Data
			crc := crc32.Checksum(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), 4*len(d)), table)
			h.Write([]byte(name))
			h.Write(binary.LittleEndian.AppendUint32(nil, crc))
		}
	}
	add(c.Weights)
	if c.Training != nil {
		for _, g := range slices.Sorted(maps.Keys(c.Training.Groups)) {
			h.Write([]byte(g))
			add(c.Training.Groups[g])
		}
	}
	return h.Sum64()
}
