package fleet

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
)

// Event kinds on QF_EVENTS (subject qf.events.<job>.<kind>), one per JobEvent variant.
const (
	EventState        = "state"
	EventTaskStarted  = "task_started"
	EventTaskProgress = "task_progress"
	EventTaskDone     = "task_done"
	EventTaskFailed   = "task_failed"
	EventCheckpoint   = "checkpoint"
)

// AssembleTaskID is the task id of a job's assembly.
const AssembleTaskID = "assemble"

// Location is where a checkpoint lives in object storage.
type Location struct {
	Bucket string `json:"bucket,omitempty"` // empty: the fleet's bucket
	Prefix string `json:"prefix"`           // "models/<hash>" (no trailing slash)
}

// JobRequest is what a submitter asks for, beside the job record: where the model is and how to
// name it. It holds no secrets (a Hub token is the dispatcher's own).
type JobRequest struct {
	JobID string `json:"job_id"`
	// Model is the model as the user named it: an absolute local path, a Hub id or an s3:// URL.
	Model     string           `json:"model"`
	ModelType domain.ModelType `json:"model_type"`
	// Location is where the checkpoint is in object storage; nil for a Hub id, which the
	// dispatcher mirrors first.
	Location *Location `json:"location,omitempty"`
	// Name names the model in the file's metadata: a local directory's base name, or the Hub id.
	Name         string                    `json:"name"`
	RemoteID     string                    `json:"remote_id,omitempty"`
	TokenizerPre string                    `json:"tokenizer_pre,omitempty"`
	Pool         string                    `json:"pool,omitempty"` // worker pool of the job's tasks
	Config       domain.QuantizationConfig `json:"config"`
	// Layered holds the GPTQ/AWQ settings beyond Config; nil for GGUF.
	Layered     *LayerOptions `json:"layered,omitempty"`
	SubmittedAt time.Time     `json:"submitted_at"`
}

// Validate checks the request's config and, for a GPTQ/AWQ job, its options as the commands do
// (domain.QuantizationConfig.ValidateLayers) and that the calibration text was stored: every error
// is bad input (domain.ErrInvalidConfig).
func (r *JobRequest) Validate() error {
	if r.Config.TargetFormat == domain.FormatGGUF {
		if r.Layered != nil {
			return fmt.Errorf("%w: gguf takes no gptq/awq options", domain.ErrInvalidConfig)
		}
		return r.Config.Validate()
	}
	o := LayerOptions{}
	if r.Layered != nil {
		o = *r.Layered
	}
	if err := r.Config.ValidateLayers(o.LayerOptions); err != nil {
		return err
	}
	if !o.RTN && (o.Calibration == nil || o.Calibration.Prefix == "") {
		return fmt.Errorf("%w: %s needs calibration data in object storage", domain.ErrInvalidConfig, r.Config.TargetFormat)
	}
	return nil
}

// ValidToken reports whether s can be a job or task id (a NATS subject token and KV key part).
func ValidToken(s string) bool { return pb.ValidName(s) }

// ErrForeignOutput reports a task whose output lies outside its job's prefixes.
var ErrForeignOutput = errors.New("task output outside its job")

// EncodeTask validates and encodes a task message.
func EncodeTask(t *pb.Task) ([]byte, error) {
	if err := CheckTask(t); err != nil {
		return nil, err
	}
	return proto.Marshal(t)
}

// DecodeTask decodes a task message and checks it beyond pb.DecodeTask: a plan, and an output
// inside the job's own prefixes (a forged message cannot make a worker write elsewhere).
func DecodeTask(b []byte) (*pb.Task, error) {
	t, err := pb.DecodeTask(b)
	if err != nil {
		return nil, err
	}
	if err := CheckTask(t); err != nil {
		return nil, err
	}
	return t, nil
}

// CheckTask validates a task for this fleet.
func CheckTask(t *pb.Task) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if t.GetPlan().GetKey() == "" {
		return fmt.Errorf("%w: task %s/%s has no plan", pb.ErrInvalidTask, t.JobId, t.TaskId)
	}
	if t.Kind == pb.TaskKind_TASK_KIND_ASSEMBLE {
		name := t.GetAssemble().GetOutputName()
		if t.Output.Prefix != OutputPrefix(t.JobId) || name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
			return fmt.Errorf("%w: %s%s", ErrForeignOutput, t.Output.Prefix, name)
		}
	} else if t.Output.Prefix != ShardPrefix(t.JobId) {
		return fmt.Errorf("%w: %s", ErrForeignOutput, t.Output.Prefix)
	}
	return nil
}

// TaskMsgID is a task's Nats-Msg-Id.
func TaskMsgID(t *pb.Task) string { return queue.TaskMsgID(t.JobId, t.TaskId, t.Generation) }

// TaskLabel names a task for people.
func TaskLabel(t *pb.Task) string {
	if l := t.GetLabel(); l != "" {
		return l
	}
	return t.GetTaskId()
}

// TaskOutputKey is the object a task writes: its shard (the same key for every attempt), or the
// assembled result.
func TaskOutputKey(t *pb.Task) string {
	if a := t.GetAssemble(); a != nil {
		return t.Output.Prefix + a.GetOutputName()
	}
	return t.Output.Prefix + t.TaskId + ".bin"
}

// EncodeResult encodes a task result (the QF_TASKDONE value).
func EncodeResult(r *pb.TaskResult) ([]byte, error) { return proto.Marshal(r) }

// DecodeResult decodes a task result.
func DecodeResult(b []byte) (*pb.TaskResult, error) {
	var r pb.TaskResult
	if err := proto.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("undecodable task result: %w", err)
	}
	if !ValidToken(r.JobId) || !ValidToken(r.TaskId) || len(r.Shards) == 0 {
		return nil, fmt.Errorf("task result with bad ids %q/%q or no shard", r.JobId, r.TaskId)
	}
	return &r, nil
}

// NewEvent returns a JobEvent of now.
func NewEvent(job string) *pb.JobEvent {
	return &pb.JobEvent{JobId: job, Time: timestamppb.Now()}
}

// EventKind is the subject kind of an event.
func EventKind(e *pb.JobEvent) string {
	switch e.Event.(type) {
	case *pb.JobEvent_State:
		return EventState
	case *pb.JobEvent_TaskStarted:
		return EventTaskStarted
	case *pb.JobEvent_TaskProgress:
		return EventTaskProgress
	case *pb.JobEvent_TaskDone:
		return EventTaskDone
	case *pb.JobEvent_TaskFailed:
		return EventTaskFailed
	case *pb.JobEvent_Checkpoint:
		return EventCheckpoint
	}
	return ""
}

// DecodeEvent decodes a JobEvent.
func DecodeEvent(b []byte) (*pb.JobEvent, error) {
	var e pb.JobEvent
	if err := proto.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("undecodable event: %w", err)
	}
	if !ValidToken(e.JobId) || EventKind(&e) == "" {
		return nil, fmt.Errorf("event with bad job id %q or no content", e.JobId)
	}
	return &e, nil
}

// ConfigToProto converts a config for the wire.
func ConfigToProto(c domain.QuantizationConfig) *pb.QuantizationConfig {
	return &pb.QuantizationConfig{TargetFormat: string(c.TargetFormat), QuantizationLevel: c.QuantizationLevel,
		OutputName: c.OutputName, CalibrationDataPath: c.CalibrationDataPath, CalibrationSamples: int32(c.CalibrationSamples),
		GroupSize: int32(c.GroupSize), EnableCheckpoints: c.EnableCheckpoints}
}

// ConfigFromProto converts a wire config (fields the wire lacks take the defaults).
func ConfigFromProto(p *pb.QuantizationConfig) (domain.QuantizationConfig, error) {
	f, err := domain.ParseOutputFormat(p.GetTargetFormat())
	if err != nil {
		return domain.QuantizationConfig{}, err
	}
	c := domain.DefaultConfig(f, p.GetQuantizationLevel())
	c.OutputName, c.CalibrationDataPath = p.GetOutputName(), p.GetCalibrationDataPath()
	c.CalibrationSamples, c.GroupSize, c.EnableCheckpoints = int(p.GetCalibrationSamples()), int(p.GetGroupSize()), p.GetEnableCheckpoints()
	return c, nil
}

// TaskKindLabel is a task kind's metrics label: "gguf_tensors", "gptq_layer", "assemble", ….
func TaskKindLabel(k pb.TaskKind) string {
	name, ok := pb.TaskKind_name[int32(k)]
	if !ok || k == pb.TaskKind_TASK_KIND_UNSPECIFIED {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(name, "TASK_KIND_"))
}
