package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// CheckPool accepts the name of a pool of task workers: a subject token, and not the assembler's
// pool.
func CheckPool(pool string) error {
	if err := checkToken("pool", pool); err != nil {
		return err
	}
	if pool == PoolAsm {
		return fmt.Errorf("%w: pool %q is the assembler's", ErrInvalidName, pool)
	}
	return nil
}

// EnsurePool creates pool's consumer unless it exists, so that its tasks wait for a worker of the
// pool to bind (Setup creates only cfg.Pools').
func EnsurePool(ctx context.Context, js jetstream.JetStream, cfg Config, pool string) error {
	if err := checkToken("pool", pool); err != nil {
		return err
	}
	if _, err := js.Consumer(ctx, TasksStream, ConsumerName(pool)); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return classify(ctx, fmt.Errorf("queue: consumer %s: %w", ConsumerName(pool), err))
	}
	s, err := js.Stream(ctx, TasksStream)
	if err != nil {
		return classify(ctx, fmt.Errorf("queue: stream %s: %w", TasksStream, err))
	}
	if _, err := s.CreateConsumer(ctx, cfg.ConsumerConfig(pool)); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		return classify(ctx, fmt.Errorf("queue: consumer %s: %w", ConsumerName(pool), err))
	}
	return nil
}

// PoolIdle reports whether pool has tasks waiting and no worker: none pulling, none running one.
func PoolIdle(ctx context.Context, js jetstream.JetStream, pool string) (bool, error) {
	c, err := js.Consumer(ctx, TasksStream, ConsumerName(pool))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return true, nil
	}
	if err != nil {
		return false, classify(ctx, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return false, classify(ctx, err)
	}
	return info.NumPending > 0 && info.NumWaiting == 0 && info.NumAckPending == 0, nil
}

// DeleteTasks removes from pool's queue the tasks for which match (given the message data) is true,
// queued or in flight, and returns how many it removed.
func DeleteTasks(ctx context.Context, js jetstream.JetStream, pool string, match func(data []byte) bool) (int, error) {
	if err := checkToken("pool", pool); err != nil {
		return 0, err
	}
	s, err := js.Stream(ctx, TasksStream)
	if err != nil {
		return 0, classify(ctx, err)
	}
	n := 0
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(TaskSubject(pool)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, classify(ctx, fmt.Errorf("queue: reading pool %s: %w", pool, err))
		}
		if match(m.Data) {
			if err := s.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return n, classify(ctx, fmt.Errorf("queue: deleting task %d: %w", m.Sequence, err))
			}
			n++
		}
		seq = m.Sequence + 1
	}
}
