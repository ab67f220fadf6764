package gguf

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/convert"
	"quantfleet.dev/libs/domain"
	libgguf "quantfleet.dev/libs/gguf"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
)

// KindName names the GGUF kind in plans.
const KindName = "gguf"

// Kind is the GGUF job: tasks of tensors, each a contiguous run of the data section, run in any
// order; the assembly concatenates the header and the shards.
type Kind struct{}

var _ fleet.Kind = (*Kind)(nil)

// Name implements fleet.Kind.
func (*Kind) Name() string { return KindName }

// Formats implements fleet.Kind.
func (*Kind) Formats() []domain.OutputFormat { return []domain.OutputFormat{domain.FormatGGUF} }

// TaskKinds implements fleet.Kind.
func (*Kind) TaskKinds() []pb.TaskKind { return []pb.TaskKind{pb.TaskKind_TASK_KIND_GGUF_TENSORS} }

// Plan implements fleet.Kind: the type plan and the split into tasks; the header is stored at
// fleet.HeaderKey.
func (*Kind) Plan(ctx context.Context, env *fleet.PlanEnv) (*fleet.Plan, error) {
	req := env.Request
	p, header, err := PlanJob(ctx, req.JobID, env.Model, env.Files, req.Config.QuantizationLevel, PlanOptions{
		RemoteID: env.RemoteID, TokenizerPre: req.TokenizerPre, TempDir: env.TempDir, SourceName: req.Model})
	if err != nil {
		return nil, err
	}
	if _, err := env.Store.Put(ctx, fleet.HeaderKey(req.JobID), bytes.NewReader(header), int64(len(header)), blob.PutOptions{}); err != nil {
		return nil, err
	}
	return p.Envelope()
}

// Check implements fleet.Kind.
func (*Kind) Check(p *fleet.Plan) error {
	_, err := FromEnvelope(p)
	return err
}

// Runnable implements fleet.Kind: every task not done (they are independent).
func (*Kind) Runnable(p *fleet.Plan, done func(string) bool) ([]fleet.PlanTask, error) {
	var out []fleet.PlanTask
	for _, t := range p.Tasks {
		if !done(t.ID) {
			out = append(out, t)
		}
	}
	return out, nil
}

// Describe implements fleet.Kind: the tensors the task produces.
func (*Kind) Describe(fp *fleet.Plan, pt fleet.PlanTask, msg *pb.Task) error {
	p, err := FromEnvelope(fp)
	if err != nil {
		return err
	}
	t, _ := p.Task(pt.ID)
	args := &pb.GGUFTensorsArgs{Alignment: libgguf.Alignment}
	for _, tp := range p.Tensors[t.First : t.First+t.Count] {
		args.Tensors = append(args.Tensors, tp.Name)
	}
	msg.Kind, msg.Args = pb.TaskKind_TASK_KIND_GGUF_TENSORS, &pb.Task_GgufTensors{GgufTensors: args}
	return nil
}

// Verify implements fleet.Kind: the shard is there with its task's size.
func (*Kind) Verify(ctx context.Context, store blob.Store, fp *fleet.Plan, pt fleet.PlanTask, _ *pb.TaskResult) (bool, error) {
	p, err := FromEnvelope(fp)
	if err != nil {
		return false, err
	}
	t, _ := p.Task(pt.ID)
	oi, err := store.Stat(ctx, fleet.ShardKey(fp.JobID, t.ID))
	return err == nil && uint64(oi.Size) == t.Size, nil
}

// Run implements fleet.Kind: it produces the task's tensors exactly as quantize does and writes
// them as one shard.
func (*Kind) Run(ctx context.Context, env *fleet.RunEnv) (*fleet.RunResult, error) {
	p, err := FromEnvelope(env.Plan)
	if err != nil {
		return nil, err
	}
	t, _ := p.Task(env.Task.TaskId)
	done, lastReport := 0, time.Now()
	shard, err := Produce(ctx, env.Model, p, t, func(tensor string) {
		done++
		env.Log.Debug("tensor done", zap.String("tensor", tensor))
		if time.Since(lastReport) >= 2*time.Second {
			lastReport = time.Now()
			env.Progress(float64(done) / float64(t.Count))
		}
	})
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if _, err := env.Store.Put(ctx, env.OutputKey, bytes.NewReader(shard), int64(len(shard)), blob.PutOptions{}); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(shard)
	var read int64
	for _, in := range t.Inputs {
		read += in.Length
	}
	sh := &pb.Shard{Key: env.OutputKey, Size: int64(len(shard)), Sha256: hex.EncodeToString(sum[:])}
	for _, tp := range p.Tensors[t.First : t.First+t.Count] {
		sh.Tensors = append(sh.Tensors, &pb.TensorEntry{Name: tp.Name, GgmlType: uint32(tp.Type), Dims: tp.Ne,
			Offset: tp.Offset - t.Offset, Size: tp.Size})
	}
	return &fleet.RunResult{Shards: []*pb.Shard{sh}, BytesRead: read, BytesWritten: int64(len(shard))}, nil
}

// Assemble implements fleet.Kind: the file is the header and the shards in one multipart upload,
// validated by reading it back.
func (*Kind) Assemble(ctx context.Context, env *fleet.AssembleEnv) (*domain.QuantizedModel, error) {
	p, err := FromEnvelope(env.Plan)
	if err != nil {
		return nil, err
	}
	sums := map[string]string{}
	shardKeys := map[string]string{}
	for _, t := range p.Tasks {
		r := env.Records[t.ID]
		sums[t.ID], shardKeys[t.ID] = r.Shards[0].Sha256, r.Shards[0].Key
	}
	out := env.OutputKey
	oi, err := Assemble(ctx, env.Store, p, fleet.HeaderKey(p.JobID), func(id string) string { return shardKeys[id] }, out)
	if err != nil {
		return nil, err
	}
	env.Log.Info("file assembled", zap.String("key", out), zap.Int64("bytes", oi.Size))
	sum, err := Validate(ctx, env.Store, p, out, sums, nil)
	if err != nil {
		_ = env.Store.Delete(context.WithoutCancel(ctx), out)
		return nil, err
	}
	return &domain.QuantizedModel{
		OutputPath:       fleet.S3URL(env.Bucket, out),
		Format:           domain.FormatGGUF,
		FileSize:         oi.Size,
		CompressionRatio: float64(oi.Size) / float64(p.SourceBytes),
		QuantizationMetadata: map[string]any{
			"level":                p.Level,
			"file_type":            p.FileType,
			"architecture":         p.Arch,
			"tensor_count":         len(p.Tensors),
			"quantization_version": convert.QuantizationVersion,
			"tensor_types":         p.TypeCounts(),
			"sha256":               sum,
			"tasks":                len(p.Tasks),
		},
		CreatedAt:        time.Now().UTC(),
		SourceModelPath:  env.SourceModel,
		ValidationStatus: domain.ValidationValid,
	}, nil
}
