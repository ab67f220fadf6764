package queue

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TaskMsgID is the de-duplication id of a task: "<job>/<task>/<generation>". Bump the generation to
// enqueue a task again on purpose (after a dead letter, or on resume).
func TaskMsgID(job, task string, generation uint32) string {
	return job + "/" + task + "/" + strconv.FormatUint(uint64(generation), 10)
}

// PublishTask enqueues a task for pool with the given de-duplication id. It reports duplicate=true
// when the stream already had msgID within its Duplicates window (the task is not enqueued twice).
// A full queue (Config.MaxTasks) or an oversized task is an error.
func PublishTask(ctx context.Context, js jetstream.JetStream, pool, msgID string, data []byte) (duplicate bool, err error) {
	if err := checkToken("pool", pool); err != nil {
		return false, err
	}
	if len(data) > MaxTaskSize {
		return false, fmt.Errorf("queue: task %s is %d bytes, more than %d: tasks carry references, not data", msgID, len(data), MaxTaskSize)
	}
	ack, err := js.Publish(ctx, TaskSubject(pool), data, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(TasksStream))
	if err != nil {
		return false, classify(ctx, fmt.Errorf("queue: publish task %s: %w", msgID, err))
	}
	return ack.Duplicate, nil
}

// PublishEvent appends an event of kind about job to QF_EVENTS. A non-empty msgID de-duplicates
// re-sends.
func PublishEvent(ctx context.Context, js jetstream.JetStream, job, kind, msgID string, data []byte) error {
	if err := checkToken("job", job); err != nil {
		return err
	}
	if err := checkToken("event kind", kind); err != nil {
		return err
	}
	m := nats.NewMsg(EventSubject(job, kind))
	m.Data = data
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(EventsStream)}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := js.PublishMsg(ctx, m, opts...); err != nil {
		return classify(ctx, fmt.Errorf("queue: publish event %s: %w", m.Subject, err))
	}
	return nil
}
