// Package layered is the GPTQ/AWQ part of the fleet: the tasks of the sharded pipeline
// (quantize.ShardPlan) on many workers. The dispatcher plans a job and stores the activations
// entering layer 0 shard by shard (the embeddings of the calibration samples); a task loads its
// layer's weights by byte range and the objects its dependencies wrote, runs
// quantize.RunShardTask and stores its objects under the job's shard prefix, which are the job's
// checkpoint; the assembler writes the Hugging Face checkpoint directory from the solved groups
// (or layer results) and the source's other tensors, exactly as the local pipeline
// (quantize.GPTQ, quantize.AWQ), which runs the same tasks in order, writes it.
package layered

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/tokenizer"
	"quantfleet.dev/libs/transformer"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
)

// LayerConfig is the quantize.LayerConfig of a job, as `quantfleet quantize` builds it from
// the same flags.
func LayerConfig(s *Spec) quantize.LayerConfig {
	return quantize.NewLayerConfig(domain.OutputFormat(s.Format), s.Bits, s.GroupSize, s.LayerOptions)
}

// Weights reads a checkpoint's tensors as float32 by byte range (a transformer.WeightSource).
type Weights struct{ Model *hfmodel.Model }

// Float32 implements transformer.WeightSource.
func (w Weights) Float32(name string) ([]float32, []int64, error) {
	t, ok := w.Model.Lookup(name)
	for _, alt := range hfmodel.LanguageModelNames(name) { // the language model of a multimodal checkpoint
		if ok {
			break
		}
		if t, ok = w.Model.Lookup(alt); ok {
			name = alt
		}
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", transformer.ErrWeightNotFound, name)
	}
	data, err := w.Model.ReadFloat32(name)
	if err != nil {
		return nil, nil, err
	}
	return data, t.Shape, nil
}

// ModelConfig parses the model's config.json for the transformer runtime.
func ModelConfig(m *hfmodel.Model) (*transformer.Config, error) {
	raw, err := fs.ReadFile(m.FS(), hfmodel.ConfigFile)
	if err != nil {
		return nil, err
	}
	c, err := transformer.ParseConfig(raw)
	if err != nil {
		return nil, err
	}
	if err := c.CheckQuantizable(); err != nil {
		return nil, err
	}
	return c, nil
}

// Plan plans a GPTQ/AWQ job over the checkpoint m (files in fsys): the sharded pipeline's tasks.
// For a calibrated job it computes the activations entering layer 0 from the calibration text
// (read from store) one shard at a time and stores them under the job's shard prefix, before the
// caller stores the plan.
func Plan(ctx context.Context, store blob.Store, job string, m *hfmodel.Model, fsys fleet.SourceFS, spec Spec, tempDir string) (*fleet.Plan, error) {
	cfg, err := ModelConfig(m)
	if err != nil {
		return nil, err
	}
	if err := quantize.CheckModel(cfg, LayerConfig(&spec)); err != nil {
		return nil, err
	}
	spec.NumLayers = cfg.NumLayers
	if spec.Linears = quantize.StageOf(cfg); slices.EqualFunc(spec.Linears.Groups, quantize.GPTQStage().Groups, slices.Equal) {
		spec.Linears = quantize.Stage{} // the dense default: plans of dense models stay as they were
	}
	sp, err := spec.ShardPlan()
	if err != nil {
		return nil, err
	}
	p := &fleet.Plan{Version: fleet.PlanVersion, Kind: KindName, JobID: job, Level: fmt.Sprintf("%dbit", spec.Bits), Arch: cfg.Architecture,
		SourceBytes: m.WeightBytes()}
	for _, t := range sp.Tasks() {
		p.Tasks = append(p.Tasks, fleet.PlanTask{ID: t.ID(), Label: taskLabel(sp, t), Block: t.Layer})
	}
	if p.Spec, err = json.Marshal(spec); err != nil {
		return nil, err
	}
	if _, err := SpecOf(p); err != nil {
		return nil, err
	}
	if !spec.Calibrated() {
		return p, nil
	}
	dir, err := os.MkdirTemp(tempDir, "quantfleet-calib-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := fleet.CopySmallFiles(ctx, fsys, dir); err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, err
	}
	calib := filepath.Join(dir, "calibration-"+path.Base(spec.CalibrationName))
	if err := download(ctx, store, spec.CalibrationKey, calib); err != nil {
		return nil, fmt.Errorf("calibration data: %w", err)
	}
	samples, err := quantize.CalibrationSamples(tok, calib, spec.SeqLen, spec.CalibrationOffset, spec.Samples)
	if err != nil {
		return nil, err
	}
	tm := transformer.New(cfg, Weights{m})
	defer tm.ReleaseEmbeddings()
	if _, err := quantize.WriteShardInputs(ctx, NewShardStore(store, job), sp, tm, samples); err != nil {
		return nil, err
	}
	return p, nil
}

func download(ctx context.Context, store blob.Store, key, dst string) error {
	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func get(ctx context.Context, store blob.Store, key string) ([]byte, error) {
	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func put(ctx context.Context, store blob.Store, key string, b []byte) (*pb.Shard, error) {
	if _, err := store.Put(ctx, key, bytes.NewReader(b), int64(len(b)), blob.PutOptions{}); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return &pb.Shard{Key: key, Size: int64(len(b)), Sha256: hex.EncodeToString(sum[:])}, nil
}

// ShardStore is a quantize.ShardStore over a job's shard prefix in the fleet's bucket that
// remembers what it read and wrote (a task's completion record lists its objects).
type ShardStore struct {
	store  blob.Store
	prefix string

	mu      sync.Mutex
	written []*pb.Shard
	read    int64
}

// NewShardStore is the ShardStore of job.
func NewShardStore(store blob.Store, job string) *ShardStore {
	return &ShardStore{store: store, prefix: fleet.ShardPrefix(job)}
}

// Get implements quantize.ShardStore.
func (s *ShardStore) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := get(ctx, s.store, s.prefix+key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.prefix+key, err)
	}
	s.mu.Lock()
	s.read += int64(len(b))
	s.mu.Unlock()
	return b, nil
}

// Put implements quantize.ShardStore.
func (s *ShardStore) Put(ctx context.Context, key string, b []byte) error {
	sh, err := put(ctx, s.store, s.prefix+key, b)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.written = append(s.written, sh)
	s.mu.Unlock()
	return nil
}

// RunTask runs the plan's task id on a worker with the compute c (nil: the CPU): it reads the
// layer's weights from m and its dependencies' objects, and writes its own objects, the task's
// result (at fleet.ShardKey(job, id)) first. The keys do not depend on the attempt and the
// tasks are deterministic, so a re-run rewrites the same bytes.
func RunTask(ctx context.Context, store blob.Store, p *fleet.Plan, m *hfmodel.Model, id string, c quantize.LayerCompute) ([]*pb.Shard, int64, error) {
	v, err := viewOf(p)
	if err != nil {
		return nil, 0, err
	}
	t, ok := v.tasks[id]
	if !ok {
		return nil, 0, fmt.Errorf("%w: job %s has no task %s", fleet.ErrBadPlan, p.JobID, id)
	}
	cfg, err := ModelConfig(m)
	if err != nil {
		return nil, 0, err
	}
	tm := transformer.New(cfg, Weights{m})
	st := NewShardStore(store, p.JobID)
	env := &quantize.ShardEnv{Plan: v.shard, Store: st, Layer: tm.Layer, Compute: c}
	if _, err := quantize.RunShardTask(ctx, env, t); err != nil {
		return nil, 0, err
	}
	return st.written, st.read, nil
}
