package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// maxDeliveriesAdvisory is published by the server when a task exhausts its consumer's MaxDeliver.
const maxDeliveriesAdvisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + TasksStream + ".*"

// SweepExhausted moves tasks that ran out of deliveries without a worker dead-lettering them (the
// worker died on the last attempt) to the dead-letter stream. On a WorkQueue stream such tasks
// would otherwise stay forever, skipped by the consumer. It listens to the server's MAX_DELIVERIES
// advisory until ctx ends; run it in the dispatcher. (nats-server 2.15 raises the advisory while
// some worker has a pull request waiting, which live workers always have.) The returned channel reports each moved
// task's stream sequence (buffered, dropped when full) and may be ignored.
func SweepExhausted(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, log *zap.Logger) (<-chan uint64, error) {
	if log == nil {
		log = zap.NewNop()
	}
	stream, err := js.Stream(ctx, TasksStream)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(maxDeliveriesAdvisory, ch)
	if err != nil {
		return nil, fmt.Errorf("queue: subscribe advisories: %w", err)
	}
	moved := make(chan uint64, 64)
	go func() {
		defer sub.Unsubscribe()
		defer close(moved)
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-ch:
				var adv struct {
					StreamSeq  uint64 `json:"stream_seq"`
					Deliveries uint64 `json:"deliveries"`
				}
				if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
					log.Warn("bad max-deliveries advisory", zap.ByteString("data", m.Data))
					continue
				}
				if err := moveToDLQ(ctx, js, stream, adv.StreamSeq, adv.Deliveries); err != nil {
					log.Error("dead-lettering exhausted task failed", zap.Uint64("seq", adv.StreamSeq), zap.Error(err))
					continue
				}
				select {
				case moved <- adv.StreamSeq:
				default:
				}
			}
		}
	}()
	return moved, nil
}

func moveToDLQ(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, seq, deliveries uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // already settled (e.g. dead-lettered by the worker)
	}
	if err != nil {
		return err
	}
	pool := strings.TrimPrefix(raw.Subject, taskSubjectPrefix)
	if checkToken("pool", pool) != nil {
		return fmt.Errorf("task subject %q has no pool", raw.Subject)
	}
	reason := fmt.Sprintf("out of attempts (%d deliveries, worker gone)", deliveries)
	if err := publishDLQ(ctx, js, pool, raw.Subject, raw.Header.Get(jetstream.MsgIDHeader), seq, deliveries, raw.Data, reason); err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	return nil
}
