package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// TaskDone records task completions in the QF_TASKDONE KV bucket under "<job>.<task>". Record uses
// KV Create, so of several attempts of one task (a redelivery racing a slow worker) exactly one
// wins; the dispatcher and assembler trust only the recorded winner's outputs. Values are opaque
// (the fleet stores an encoded TaskResult).
type TaskDone struct {
	kv jetstream.KeyValue
}

// NewTaskDone binds to the QF_TASKDONE bucket (created by Setup).
func NewTaskDone(ctx context.Context, js jetstream.JetStream) (*TaskDone, error) {
	kv, err := js.KeyValue(ctx, TaskDoneBucket)
	if err != nil {
		return nil, fmt.Errorf("queue: kv %s (has Setup run?): %w", TaskDoneBucket, err)
	}
	return &TaskDone{kv: kv}, nil
}

func doneKey(job, task string) (string, error) {
	if err := checkToken("job id", job); err != nil {
		return "", err
	}
	if err := checkToken("task id", task); err != nil {
		return "", err
	}
	return job + "." + task, nil
}

// Record stores value as the completion of task unless one is recorded already. It returns
// won=true if this call's value is now the record, else won=false and the existing record.
func (d *TaskDone) Record(ctx context.Context, job, task string, value []byte) (won bool, existing []byte, err error) {
	key, err := doneKey(job, task)
	if err != nil {
		return false, nil, err
	}
	_, err = d.kv.Create(ctx, key, value)
	if err == nil {
		return true, value, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil, classify(ctx, fmt.Errorf("queue: record task %s: %w", key, err))
	}
	e, err := d.kv.Get(ctx, key)
	if err != nil {
		return false, nil, classify(ctx, fmt.Errorf("queue: read task record %s: %w", key, err))
	}
	return false, e.Value(), nil
}

// Get returns a task's completion record, or ok=false if the task has none.
func (d *TaskDone) Get(ctx context.Context, job, task string) (value []byte, ok bool, err error) {
	key, err := doneKey(job, task)
	if err != nil {
		return nil, false, err
	}
	e, err := d.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, classify(ctx, fmt.Errorf("queue: get task record %s: %w", key, err))
	}
	return e.Value(), true, nil
}

// ListJob returns the completion records of a job's tasks, keyed by task id.
func (d *TaskDone) ListJob(ctx context.Context, job string) (map[string][]byte, error) {
	if err := checkToken("job id", job); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	w, err := d.kv.Watch(ctx, job+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, classify(ctx, fmt.Errorf("queue: list task records of %s: %w", job, err))
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil { // end of current values
				return out, nil
			}
			out[strings.TrimPrefix(e.Key(), job+".")] = e.Value()
		}
	}
}

// DeleteJob removes every completion record of a job (after it finished or was cancelled).
func (d *TaskDone) DeleteJob(ctx context.Context, job string) error {
	recs, err := d.ListJob(ctx, job)
	if err != nil {
		return err
	}
	for task := range recs {
		if err := d.kv.Purge(ctx, job+"."+task); err != nil {
			return classify(ctx, fmt.Errorf("queue: delete task record %s.%s: %w", job, task, err))
		}
	}
	return nil
}
