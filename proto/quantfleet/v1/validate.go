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

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Validate checks the fields every task needs: job and task ids that are single subject tokens, a
// known kind, a pool, an output prefix, and sane input ranges.
func (t *Task) Validate() error {
	switch {
	case !tokenRE.MatchString(t.GetJobId()):
		return fmt.Errorf("%w: job_id %q", ErrInvalidTask, t.GetJobId())
	case !tokenRE.MatchString(t.GetTaskId()):
		return fmt.Errorf("%w: task_id %q", ErrInvalidTask, t.GetTaskId())
	case t.GetKind() == TaskKind_TASK_KIND_UNSPECIFIED || TaskKind_name[int32(t.GetKind())] == "":
		return fmt.Errorf("%w: kind %v", ErrInvalidTask, t.GetKind())
	case !tokenRE.MatchString(t.GetPool()):
		return fmt.Errorf("%w: pool %q", ErrInvalidTask, t.GetPool())
	case t.GetOutput().GetPrefix() == "":
		return fmt.Errorf("%w: output prefix missing", ErrInvalidTask)
	}
	for _, in := range t.GetInputs() {
		r := in.GetRange()
		if r.GetKey() == "" || r.GetOffset() < 0 || r.GetLength() < -1 {
			return fmt.Errorf("%w: input %q range %v", ErrInvalidTask, in.GetName(), r)
		}
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
