package layered

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/quantize"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/objfs"
)

// Kind is the GPTQ/AWQ job: the sharded pipeline's tasks (partial Hessians per calibration
// shard, solves per linear group and forwards per shard for GPTQ; statistics, scale losses and
// clipping statistics per shard and a finish per layer for AWQ; one task per layer for RTN),
// assembled into a Hugging Face checkpoint directory by the local pipeline's checkpoint writer.
type Kind struct {
	// Compute runs the tasks' arithmetic (nil: quantize.CPU); a worker with a GPU sets its own.
	Compute quantize.LayerCompute
}

var _ fleet.Kind = (*Kind)(nil)

// Name implements fleet.Kind.
func (*Kind) Name() string { return KindName }

// Formats implements fleet.Kind.
func (*Kind) Formats() []domain.OutputFormat {
	return []domain.OutputFormat{domain.FormatGPTQ, domain.FormatAWQ}
}

// TaskKinds implements fleet.Kind.
func (*Kind) TaskKinds() []pb.TaskKind {
	return []pb.TaskKind{pb.TaskKind_TASK_KIND_GPTQ_LAYER, pb.TaskKind_TASK_KIND_AWQ_LAYER,
		pb.TaskKind_TASK_KIND_GPTQ_HESSIAN, pb.TaskKind_TASK_KIND_GPTQ_SOLVE, pb.TaskKind_TASK_KIND_LAYER_FORWARD,
		pb.TaskKind_TASK_KIND_AWQ_STATS, pb.TaskKind_TASK_KIND_AWQ_SCALE_LOSSES, pb.TaskKind_TASK_KIND_AWQ_CLIP_STATS}
}

// Plan implements fleet.Kind: the sharded pipeline's tasks, and the calibration activations
// entering layer 0, shard by shard.
func (*Kind) Plan(ctx context.Context, env *fleet.PlanEnv) (*fleet.Plan, error) {
	req := env.Request
	cfg := req.Config
	_, bits, err := domain.ParseLevel(cfg.TargetFormat, cfg.QuantizationLevel)
	if err != nil {
		return nil, err
	}
	o := req.Layered
	if o == nil {
		o = &fleet.LayerOptions{}
	}
	spec := Spec{Format: string(cfg.TargetFormat), Bits: bits, GroupSize: cfg.GroupSize, LayerOptions: o.LayerOptions}
	if o.RTN {
		spec.SeqLen, spec.CalibrationOffset = 0, 0
	} else {
		if o.Calibration == nil || o.Calibration.Prefix == "" {
			return nil, fmt.Errorf("%w: %s needs calibration data", domain.ErrInvalidConfig, cfg.TargetFormat)
		}
		spec.Samples = cfg.CalibrationSamples
		if spec.SeqLen == 0 {
			spec.SeqLen = quantize.DefaultSeqLen
		}
		spec.CalibrationKey, spec.CalibrationName = o.Calibration.Prefix, o.CalibrationName
	}
	env.Log.Info("planning a layered job", zap.String("format", spec.Format), zap.Int("bits", bits))
	return Plan(ctx, env.Store, req.JobID, env.Model, env.Files, spec, env.TempDir)
}

// Check implements fleet.Kind.
func (*Kind) Check(p *fleet.Plan) error {
	_, err := SpecOf(p)
	return err
}

// Runnable implements fleet.Kind: every task not done whose dependencies (quantize.ShardPlan.Deps)
// are done. A layer's Hessian partials of one group run at once on as many workers, and shard s
// may enter layer i+1 while other shards still leave layer i.
func (*Kind) Runnable(p *fleet.Plan, done func(string) bool) ([]fleet.PlanTask, error) {
	v, err := viewOf(p)
	if err != nil {
		return nil, err
	}
	var out []fleet.PlanTask
next:
	for _, t := range p.Tasks {
		if done(t.ID) {
			continue
		}
		for _, d := range v.shard.Deps(v.tasks[t.ID]) {
			if !done(d.ID()) {
				continue next
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// Describe implements fleet.Kind.
func (*Kind) Describe(p *fleet.Plan, t fleet.PlanTask, msg *pb.Task) error {
	v, err := viewOf(p)
	if err != nil {
		return err
	}
	st, ok := v.tasks[t.ID]
	if !ok {
		return fmt.Errorf("%w: no task %s", fleet.ErrBadPlan, t.ID)
	}
	stage := &pb.Task_Stage{Stage: &pb.StageArgs{Layer: int32(st.Layer), Group: -1, Shard: -1}}
	switch st.Op {
	case quantize.OpLayer:
		msg.Kind = pb.TaskKind_TASK_KIND_GPTQ_LAYER
		if v.spec.Format == string(domain.FormatAWQ) {
			msg.Kind = pb.TaskKind_TASK_KIND_AWQ_LAYER
		}
		msg.Args = &pb.Task_Layer{Layer: &pb.LayerArgs{Layer: int32(st.Layer)}}
		return nil
	case quantize.OpHessian:
		msg.Kind = pb.TaskKind_TASK_KIND_GPTQ_HESSIAN
		stage.Stage.Group, stage.Stage.Shard = int32(st.Group), int32(st.Shard)
	case quantize.OpSolve:
		msg.Kind = pb.TaskKind_TASK_KIND_GPTQ_SOLVE
		stage.Stage.Group = int32(st.Group)
	case quantize.OpForward:
		msg.Kind = pb.TaskKind_TASK_KIND_LAYER_FORWARD
		stage.Stage.Shard = int32(st.Shard)
	case quantize.OpAWQStats:
		msg.Kind = pb.TaskKind_TASK_KIND_AWQ_STATS
		stage.Stage.Shard = int32(st.Shard)
	case quantize.OpAWQScales:
		msg.Kind = pb.TaskKind_TASK_KIND_AWQ_SCALE_LOSSES
		stage.Stage.Shard = int32(st.Shard)
	case quantize.OpAWQClip:
		msg.Kind = pb.TaskKind_TASK_KIND_AWQ_CLIP_STATS
		stage.Stage.Shard = int32(st.Shard)
	}
	msg.Args = stage
	return nil
}

// Verify implements fleet.Kind: every object the task wrote must still be there.
func (*Kind) Verify(ctx context.Context, store blob.Store, _ *fleet.Plan, _ fleet.PlanTask, rec *pb.TaskResult) (bool, error) {
	for _, sh := range rec.Shards {
		oi, err := store.Stat(ctx, sh.Key)
		if err != nil || oi.Size != sh.Size {
			return false, nil
		}
	}
	return true, nil
}

// Run implements fleet.Kind (RunTask).
func (k *Kind) Run(ctx context.Context, env *fleet.RunEnv) (*fleet.RunResult, error) {
	env.Progress(0)
	shards, read, err := RunTask(ctx, env.Store, env.Plan, env.Model, env.Task.TaskId, k.Compute)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var written int64
	for _, sh := range shards {
		written += sh.Size
	}
	return &fleet.RunResult{Shards: shards, BytesRead: read, BytesWritten: written}, nil
}

// Assemble implements fleet.Kind: the checkpoint directory under the output key + "/".
func (*Kind) Assemble(ctx context.Context, env *fleet.AssembleEnv) (*domain.QuantizedModel, error) {
	p := env.Plan
	s, err := SpecOf(p)
	if err != nil {
		return nil, err
	}
	m, fsys, err := objfs.OpenModel(ctx, env.Source, p.SourcePrefix, p.ModelName)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	prefix := env.OutputKey + "/"
	res, err := Assemble(ctx, env.Store, p, m, fsys, prefix, "")
	if err != nil {
		_, _ = env.Store.DeletePrefix(context.WithoutCancel(ctx), prefix)
		return nil, err
	}
	env.Log.Info("checkpoint assembled", zap.String("prefix", prefix), zap.Int64("bytes", res.Size))
	meta := res.Meta
	meta["files"] = res.Files
	return &domain.QuantizedModel{
		OutputPath:           fleet.S3URL(env.Bucket, prefix),
		Format:               domain.OutputFormat(s.Format),
		FileSize:             res.Size,
		CompressionRatio:     float64(res.Size) / float64(p.SourceBytes),
		QuantizationMetadata: meta,
		CreatedAt:            time.Now().UTC(),
		SourceModelPath:      env.SourceModel,
		ValidationStatus:     domain.ValidationValid,
	}, nil
}
