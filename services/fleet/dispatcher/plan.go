package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/kinds"
	"quantfleet.dev/services/fleet/modelstore"
	"quantfleet.dev/services/fleet/objfs"
)

// plan resolves the job's checkpoint in object storage (mirroring a Hub model first), has the
// job's kind plan it, and stores the plan (last: its presence means "planned").
func (d *Dispatcher) plan(ctx context.Context, id string, req *fleet.JobRequest, log *zap.Logger) (*fleet.Plan, fleet.Kind, string, error) {
	kind, err := kinds.ForFormat(req.Config.TargetFormat)
	if err != nil {
		return nil, nil, "", err
	}
	loc, name, remote := req.Location, req.Name, req.RemoteID
	if loc == nil {
		if req.ModelType != domain.ModelHFHub {
			return nil, nil, "", fmt.Errorf("%w: job %s names no model location", fleet.ErrNoModel, id)
		}
		log.Info("mirroring Hub model", zap.String("model", req.Model))
		prefix, repo, err := modelstore.MirrorHub(ctx, d.rt.Store, d.cfg.Hub, req.Model, nil)
		if err != nil {
			return nil, nil, "", fmt.Errorf("model %s: %w", req.Model, err)
		}
		loc = &fleet.Location{Prefix: strings.TrimSuffix(prefix, "/")}
		name, remote = repo, repo
	}
	store, err := d.rt.StoreFor(loc.Bucket)
	if err != nil {
		return nil, nil, "", err
	}
	m, fsys, err := objfs.OpenModel(ctx, store, loc.Prefix, name)
	if err != nil {
		return nil, nil, "", fmt.Errorf("model %s: %w", req.Model, err)
	}
	defer m.Close()
	p, err := kind.Plan(ctx, &fleet.PlanEnv{Store: d.rt.Store, Request: req, Model: m, Files: fsys, RemoteID: remote,
		TempDir: d.cfg.TempDir, Log: log})
	if err != nil {
		return nil, nil, "", err
	}
	p.SourceBucket, p.SourcePrefix, p.ModelName = loc.Bucket, loc.Prefix, name
	if err := kind.Check(p); err != nil {
		return nil, nil, "", err
	}
	sum, err := fleet.StorePlan(ctx, d.rt.Store, fleet.PlanKey(id), p)
	if err != nil {
		return nil, nil, "", err
	}
	// Describe the source in the job record.
	_, err = d.rt.Jobs.Update(ctx, id, func(j *domain.QuantizationJob) error {
		src := domain.SourceModel{ModelPath: req.Model, ModelType: req.ModelType, Architecture: m.Config.Architecture,
			ParameterCount: m.ParameterCount(), Dtype: m.DType()}
		j.Source = &src
		_, j.TotalLayers = planLayers(p).Complete()
		j.TotalTasks = len(p.Tasks)
		return nil
	})
	if err != nil {
		log.Warn("recording the source model failed", zap.Error(err))
	}
	return p, kind, sum, nil
}

// Checkpoint is the stored checkpoint object: the seed's record (LayerStates keyed by task, LayerIndex
// the highest complete layer) plus the task generation in use and the counts of whole layers.
type Checkpoint struct {
	domain.Checkpoint
	Generation  uint32 `json:"generation"`
	TotalTasks  int    `json:"total_tasks"`
	LayersDone  int    `json:"layers_done"`
	TotalLayers int    `json:"total_layers"`
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
	ck.LayersDone, ck.TotalLayers = st.layers.Complete()
	ck.LayerIndex = max(st.layers.Last(), 0) // the seed's range is 0..layers-1: 0 while none is complete
	ck.CheckpointID = fmt.Sprintf("%s-%d", st.id, len(st.done))
	ck.JobID = st.id
	ck.ConfigSnapshot = st.req.Config
	ck.CreatedAt = time.Now().UTC()
	ck.FilePath = fleet.S3URL(d.rt.Bucket, fleet.CheckpointKey(st.id))
	ck.LayerStates = map[string]domain.LayerState{}
	for _, t := range st.plan.Tasks {
		if r := st.done[t.ID]; r != nil {
			sh := r.Shards[0]
			ck.LayerStates[t.ID] = domain.LayerState{Status: "done", Object: sh.Key, Size: sh.Size, SHA256: sh.Sha256}
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
