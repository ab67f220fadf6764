package quantfleetv1

import (
	"errors"
	"fmt"
	"regexp"

	"google.golang.org/protobuf/proto"
)

// ErrInvalidTask is wrapped by Validate and DecodeTask errors. Protobuf decoding accepts many byte
// strings that are not tasks, so a worker must validate before it trusts a message.
var ErrInvalidTask = errors.New("invalid task")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidName reports whether s can name a job, task, pool or event kind: 1-128 of A-Z a-z 0-9 _ -,
// a single NATS subject token and a KV key segment. The queue, the fleet and the messages all
// check names with it.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks the fields every task needs: job and task ids and a pool that are valid names,
// a known kind whose arguments the task carries, and an output prefix.
func (t *Task) Validate() error {
	switch {
	case !ValidName(t.GetJobId()):
		return fmt.Errorf("%w: job_id %q", ErrInvalidTask, t.GetJobId())
	case !ValidName(t.GetTaskId()):
		return fmt.Errorf("%w: task_id %q", ErrInvalidTask, t.GetTaskId())
	case t.GetKind() == TaskKind_TASK_KIND_UNSPECIFIED || TaskKind_name[int32(t.GetKind())] == "":
		return fmt.Errorf("%w: kind %v", ErrInvalidTask, t.GetKind())
	case !ValidName(t.GetPool()):
		return fmt.Errorf("%w: pool %q", ErrInvalidTask, t.GetPool())
	case t.GetOutput().GetPrefix() == "":
		return fmt.Errorf("%w: output prefix missing", ErrInvalidTask)
	}
	var ok bool
	switch t.GetArgs().(type) {
	case *Task_GgufTensors:
		ok = t.GetKind() == TaskKind_TASK_KIND_GGUF_TENSORS
	case *Task_Layer:
		ok = t.GetKind() == TaskKind_TASK_KIND_GPTQ_LAYER || t.GetKind() == TaskKind_TASK_KIND_AWQ_LAYER
	case *Task_Assemble:
		ok = t.GetKind() == TaskKind_TASK_KIND_ASSEMBLE
	case *Task_Stage:
		switch t.GetKind() {
		case TaskKind_TASK_KIND_GPTQ_HESSIAN, TaskKind_TASK_KIND_GPTQ_SOLVE, TaskKind_TASK_KIND_LAYER_FORWARD,
			TaskKind_TASK_KIND_AWQ_STATS, TaskKind_TASK_KIND_AWQ_SCALE_LOSSES, TaskKind_TASK_KIND_AWQ_CLIP_STATS:
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("%w: kind %v with arguments %T", ErrInvalidTask, t.GetKind(), t.GetArgs())
	}
	return nil
}

// DecodeTask unmarshals and validates a task message.
func DecodeTask(b []byte) (*Task, error) {
	var t Task
	if err := proto.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTask, err)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}
