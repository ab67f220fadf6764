package fleet

import (
	"context"
	"io/fs"

	"go.uber.org/zap"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfmodel"
	pb "quantfleet.dev/proto/quantfleet/v1"
)

// Kind is one kind of job (GGUF, GPTQ/AWQ layers): everything the dispatcher, the workers and the
// assembler do that depends on what the job makes. Each kind lives in its own package with a
// compile-time assertion `var _ fleet.Kind = (*Kind)(nil)`; package fleet/kinds is the registry.
// The fleet itself only moves tasks, records and events.
type Kind interface {
	// Name is the kind's name in plans, logs and metrics ("gguf", "layered").
	Name() string
	// Formats are the output formats the kind makes.
	Formats() []domain.OutputFormat
	// TaskKinds are the wire kinds of its tasks (workers mount the kind for them).
	TaskKinds() []pb.TaskKind
	// Plan plans a job over its opened source and stores whatever its tasks read besides the
	// plan (a header, calibration activations). The caller stores the plan.
	Plan(ctx context.Context, env *PlanEnv) (*Plan, error)
	// Check decodes and checks the kind's part of p (Spec) against the rest of it.
	Check(p *Plan) error
	// Runnable returns the tasks of p that can run now, given which are done.
	Runnable(p *Plan, done func(task string) bool) ([]PlanTask, error)
	// Describe sets the kind's part of task t's message: its wire kind and arguments (the oneof).
	Describe(p *Plan, t PlanTask, msg *pb.Task) error
	// Verify reports whether the objects of a recorded task are all still there (resume).
	Verify(ctx context.Context, store blob.Store, p *Plan, t PlanTask, rec *pb.TaskResult) (bool, error)
	// Run runs one task on a worker and writes its objects.
	Run(ctx context.Context, env *RunEnv) (*RunResult, error)
	// Assemble makes the job's result from its recorded tasks, validates it and describes it.
	Assemble(ctx context.Context, env *AssembleEnv) (*domain.QuantizedModel, error)
}

// SourceFS is a checkpoint in object storage as a file system that lists its files (objfs.FS).
type SourceFS interface {
	fs.FS
	Files() []string
	Prefix() string
}

// PlanEnv is what a kind plans a job from.
type PlanEnv struct {
	Store   blob.Store // the fleet's bucket
	Request *JobRequest
	Model   *hfmodel.Model
	Files   SourceFS
	// RemoteID is the Hub id of a mirrored model ("" otherwise).
	RemoteID string
	TempDir  string
	Log      *zap.Logger
}

// RunEnv is one task on a worker.
type RunEnv struct {
	Store blob.Store // the fleet's bucket
	Task  *pb.Task
	Plan  *Plan
	Model *hfmodel.Model
	// OutputKey is the task's result object (the same for every attempt).
	OutputKey string
	// Progress reports the fraction done (rate-limited by the caller's own judgement).
	Progress func(fraction float64)
	Log      *zap.Logger
}

// RunResult is what a task wrote.
type RunResult struct {
	Shards       []*pb.Shard // the first is the task's result at OutputKey
	BytesRead    int64
	BytesWritten int64
}

// AssembleEnv is one assembly.
type AssembleEnv struct {
	Store  blob.Store // the fleet's bucket
	Bucket string     // its name, for s3:// URLs
	// Source reads the job's source checkpoint.
	Source blob.Store
	Task   *pb.Task
	Plan   *Plan
	// Records holds every task's completion record, by task id.
	Records map[string]*pb.TaskResult
	// OutputKey is the result's key (a file, or the prefix of a directory without the slash).
	OutputKey string
	// SourceModel is the model as the user named it.
	SourceModel string
	Log         *zap.Logger
}
