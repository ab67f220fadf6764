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

// Kind is the GPTQ/AWQ job: a chain of layer tasks (all at once for RTN), assembled into a
// Hugging Face checkpoint directory by the local pipeline's checkpoint writer.
type Kind struct{}

var _ fleet.Kind = (*Kind)(nil)

// Name implements fleet.Kind.
func (*Kind) Name() string { return KindName }

// Formats implements fleet.Kind.
func (*Kind) Formats() []domain.OutputFormat {
	return []domain.OutputFormat{domain.FormatGPTQ, domain.FormatAWQ}
}

// TaskKinds implements fleet.Kind.
func (*Kind) TaskKinds() []pb.TaskKind {
	return []pb.TaskKind{pb.TaskKind_TASK_KIND_GPTQ_LAYER, pb.TaskKind_TASK_KIND_AWQ_LAYER}
}

// Plan implements fleet.Kind: one task per decoder layer, and the calibration activations
// entering layer 0.
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

// Runnable implements fleet.Kind: every layer not done for RTN; in a calibrated job, whose
// layers form a chain, only the first layer not done whose predecessor is done (its
// activations exist).
func (*Kind) Runnable(p *fleet.Plan, done func(string) bool) ([]fleet.PlanTask, error) {
	s, err := SpecOf(p)
	if err != nil {
		return nil, err
	}
	var out []fleet.PlanTask
	for _, t := range p.Tasks {
		if done(t.ID) {
			continue
		}
		if !s.Calibrated() {
			out = append(out, t)
		} else if t.Block == 0 || done(LayerTaskID(t.Block-1)) {
			return []fleet.PlanTask{t}, nil
		}
	}
	return out, nil
}

// Describe implements fleet.Kind.
func (*Kind) Describe(p *fleet.Plan, t fleet.PlanTask, msg *pb.Task) error {
	s, err := SpecOf(p)
	if err != nil {
		return err
	}
	msg.Kind = pb.TaskKind_TASK_KIND_GPTQ_LAYER
	if s.Format == string(domain.FormatAWQ) {
		msg.Kind = pb.TaskKind_TASK_KIND_AWQ_LAYER
	}
	msg.Args = &pb.Task_Layer{Layer: &pb.LayerArgs{Layer: int32(t.Block)}}
	return nil
}

// Verify implements fleet.Kind: a layer's result and the activations it wrote must both be there.
func (*Kind) Verify(ctx context.Context, store blob.Store, _ *fleet.Plan, _ fleet.PlanTask, rec *pb.TaskResult) (bool, error) {
	for _, sh := range rec.Shards {
		oi, err := store.Stat(ctx, sh.Key)
		if err != nil || oi.Size != sh.Size {
			return false, nil
		}
	}
	return true, nil
}

// Run implements fleet.Kind (RunLayer).
func (*Kind) Run(ctx context.Context, env *fleet.RunEnv) (*fleet.RunResult, error) {
	t, _ := env.Plan.Task(env.Task.TaskId)
	env.Progress(0)
	shards, read, err := RunLayer(ctx, env.Store, env.Plan.JobID, env.Plan, env.Model, t.Block, env.OutputKey)
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
	var keys []string
	for _, t := range p.Tasks {
		keys = append(keys, env.Records[t.ID].Shards[0].Key)
	}
	m, fsys, err := objfs.OpenModel(ctx, env.Source, p.SourcePrefix, p.ModelName)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	prefix := env.OutputKey + "/"
	res, err := Assemble(ctx, env.Store, p, m, fsys, keys, prefix, "")
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
