package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/quantize"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/ggufjob"
	"quantfleet.dev/services/fleet/layerjob"
	"quantfleet.dev/services/fleet/modelstore"
	"quantfleet.dev/services/fleet/objfs"
)

// plan resolves the job's checkpoint in object storage (mirroring a Hub model first), plans the
// conversion and stores the header and the plan (the plan last: its presence means "planned").
func (d *Dispatcher) plan(ctx context.Context, id string, req *fleet.JobRequest, log *zap.Logger) (*ggufjob.Plan, string, error) {
	loc, name, remote := req.Location, req.Name, req.RemoteID
	if loc == nil {
		if req.ModelType != domain.ModelHFHub {
			return nil, "", fmt.Errorf("%w: job %s names no model location", ggufjob.ErrNoModel, id)
		}
		log.Info("mirroring Hub model", zap.String("model", req.Model))
		prefix, repo, err := modelstore.MirrorHub(ctx, d.rt.Store, d.cfg.Hub, req.Model, nil)
		if err != nil {
			return nil, "", fmt.Errorf("model %s: %w", req.Model, err)
		}
		loc = &fleet.Location{Prefix: strings.TrimSuffix(prefix, "/")}
		name, remote = repo, repo
	}
	store, err := d.rt.StoreFor(loc.Bucket)
	if err != nil {
		return nil, "", err
	}
	m, fsys, err := ggufjob.OpenModel(ctx, store, loc.Prefix, name)
	if err != nil {
		return nil, "", fmt.Errorf("model %s: %w", req.Model, err)
	}
	defer m.Close()
	if req.Config.TargetFormat != domain.FormatGGUF {
		return d.planLayered(ctx, id, req, loc, name, m, fsys, log)
	}
	p, header, err := ggufjob.PlanJob(ctx, id, m, fsys, req.Config.QuantizationLevel, ggufjob.PlanOptions{
		RemoteID: remote, TokenizerPre: req.TokenizerPre, TempDir: d.cfg.TempDir, SourceName: req.Model})
	if err != nil {
		return nil, "", err
	}
	p.SourceBucket, p.SourcePrefix, p.ModelName = loc.Bucket, loc.Prefix, name
	if _, err := d.rt.Store.Put(ctx, fleet.HeaderKey(id), bytes.NewReader(header), int64(len(header)), blob.PutOptions{}); err != nil {
		return nil, "", err
	}
	sum, err := ggufjob.StorePlan(ctx, d.rt.Store, fleet.PlanKey(id), p)
	if err != nil {
		return nil, "", err
	}
	// Describe the source in the job record.
	_, err = d.rt.Jobs.Update(ctx, id, func(j *domain.QuantizationJob) error {
		src := domain.SourceModel{ModelPath: req.Model, ModelType: req.ModelType, Architecture: m.Config.Architecture,
			ParameterCount: m.ParameterCount(), Dtype: m.DType()}
		j.Source = &src
		j.TotalLayers = len(p.Tasks)
		return nil
	})
	if err != nil {
		log.Warn("recording the source model failed", zap.Error(err))
	}
	return p, sum, nil
}

func defaultOutputName(model, level string) string {
	return quantize.DefaultOutputName(model, level, domain.FormatGGUF)
}

// Checkpoint is the stored checkpoint object: the seed's record plus the task generation in use.
type Checkpoint struct {
	domain.Checkpoint
	Generation uint32 `json:"generation"`
	TotalTasks int    `json:"total_tasks"`
}

// loadCheckpoint reads a job's checkpoint; nil when there is none yet.
func loadCheckpoint(ctx context.Context, store blob.Store, job string) (*Checkpoint, error) {
	rc, _, err := store.Get(ctx, fleet.CheckpointKey(job))
	if errors.Is(err, blob.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var ck Checkpoint
	if err := json.NewDecoder(rc).Decode(&ck); err != nil {
		return nil, fmt.Errorf("checkpoint of job %s: %w", job, err)
	}
	return &ck, nil
}

// writeCheckpoint stores the job's checkpoint if it changed.
func (d *Dispatcher) writeCheckpoint(ctx context.Context, st *jobState) error {
	st.mu.Lock()
	if !st.dirty || st.plan == nil || st.req == nil {
		st.mu.Unlock()
		return nil
	}
	ck := Checkpoint{Generation: st.generation, TotalTasks: len(st.plan.Tasks)}
	ck.CheckpointID = fmt.Sprintf("%s-%d", st.id, len(st.done))
	ck.JobID = st.id
	ck.ConfigSnapshot = st.req.Config
	ck.CreatedAt = time.Now().UTC()
	ck.FilePath = fleet.S3URL(d.rt.Bucket, fleet.CheckpointKey(st.id))
	ck.LayerStates = map[string]domain.LayerState{}
	for i, t := range st.plan.Tasks {
		if r := st.done[t.ID]; r != nil {
			sh := r.Shards[0]
			ck.LayerStates[t.ID] = domain.LayerState{Status: "done", Object: sh.Key, Size: sh.Size, SHA256: sh.Sha256}
			ck.LayerIndex = i
		}
	}
	st.dirty = false
	st.mu.Unlock()
	b, err := json.MarshalIndent(ck, "", "  ")
	if err != nil {
		return err
	}
	if _, err := d.rt.Store.Put(ctx, fleet.CheckpointKey(st.id), bytes.NewReader(b), int64(len(b)), blob.PutOptions{}); err != nil {
		st.mu.Lock()
		st.dirty = true
		st.mu.Unlock()
		return err
	}
	ev := fleet.NewEvent(st.id)
	ev.Event = &pb.JobEvent_Checkpoint{Checkpoint: &pb.CheckpointWritten{CheckpointId: ck.CheckpointID, Key: fleet.CheckpointKey(st.id),
		LayerIndex: int32(ck.LayerIndex), TasksDone: int32(len(ck.LayerStates)), TotalTasks: int32(ck.TotalTasks)}}
	_ = d.rt.PublishEvent(ctx, ev, "")
	return nil
}

// planLayered plans a GPTQ/AWQ job: one task per decoder layer, and the calibration activations
// entering layer 0 (layerjob.Plan).
func (d *Dispatcher) planLayered(ctx context.Context, id string, req *fleet.JobRequest, loc *fleet.Location, name string,
	m *hfmodel.Model, fsys *objfs.FS, log *zap.Logger) (*ggufjob.Plan, string, error) {
	cfg := req.Config
	bits, err := strconv.Atoi(strings.TrimSuffix(cfg.QuantizationLevel, "bit"))
	if err != nil {
		return nil, "", fmt.Errorf("%w: level %s: want <n>bit", domain.ErrInvalidConfig, cfg.QuantizationLevel)
	}
	o := req.Layered
	if o == nil {
		o = &fleet.LayerOptions{}
	}
	spec := ggufjob.LayerSpec{Format: string(cfg.TargetFormat), Bits: bits, GroupSize: cfg.GroupSize, Sym: o.Sym, ActOrder: o.ActOrder,
		StaticGroups: o.StaticGroups, Damp: o.Damp, RTN: o.RTN, DuoScaling: o.DuoScaling}
	if !o.RTN {
		if o.Calibration == nil || o.Calibration.Prefix == "" {
			return nil, "", fmt.Errorf("%w: %s needs calibration data", domain.ErrInvalidConfig, cfg.TargetFormat)
		}
		spec.Samples, spec.SeqLen, spec.CalibrationOffset = cfg.CalibrationSamples, o.SeqLen, o.CalibrationOffset
		if spec.SeqLen == 0 {
			spec.SeqLen = quantize.DefaultSeqLen
		}
		spec.CalibrationKey, spec.CalibrationName = o.Calibration.Prefix, o.CalibrationName
	}
	log.Info("planning a layered job", zap.String("format", spec.Format), zap.Int("bits", bits))
	p, err := layerjob.Plan(ctx, d.rt.Store, id, m, fsys, spec, d.cfg.TempDir)
	if err != nil {
		return nil, "", err
	}
	p.SourceBucket, p.SourcePrefix, p.ModelName = loc.Bucket, loc.Prefix, name
	sum, err := ggufjob.StorePlan(ctx, d.rt.Store, fleet.PlanKey(id), p)
	if err != nil {
		return nil, "", err
	}
	_, err = d.rt.Jobs.Update(ctx, id, func(j *domain.QuantizationJob) error {
		src := domain.SourceModel{ModelPath: req.Model, ModelType: req.ModelType, Architecture: m.Config.Architecture,
			ParameterCount: m.ParameterCount(), Dtype: m.DType()}
		j.Source = &src
		j.TotalLayers = len(p.Tasks)
		return nil
	})
	if err != nil {
		log.Warn("recording the source model failed", zap.Error(err))
	}
	return p, sum, nil
}
