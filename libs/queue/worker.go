package queue

import (
	"context"
	"errors"
	"fmt"
	"quantfleet.dev/libs/fault"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

var (
	// ErrMalformed marks a task message that can never be processed (undecodable, invalid): the
	// worker terminates it and moves it to the dead-letter stream at once.
	ErrMalformed = fault.New(fault.ErrPermanent, "queue: malformed task")
	// ErrPermanent marks a failure that retrying cannot fix: the worker terminates the task without
	// retry. Record the failure (job state, event) before returning it.
	ErrPermanent = fault.New(fault.ErrPermanent, "queue: permanent task failure")
)

// Malformed wraps err as ErrMalformed.
func Malformed(err error) error { return fmt.Errorf("%w: %w", ErrMalformed, err) }

// Permanent wraps err as ErrPermanent.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// Headers set on dead-lettered messages.
const (
	HeaderDLQReason       = "Qf-Dlq-Reason"
	HeaderOriginalSubject = "Qf-Original-Subject"
	HeaderOriginalMsgID   = "Qf-Original-Msg-Id"
	HeaderStreamSeq       = "Qf-Stream-Seq"
	HeaderNumDelivered    = "Qf-Num-Delivered"
)

// Delivery is one task handed to a Handler.
type Delivery struct {
	Msg          jetstream.Msg
	Pool         string
	MsgID        string // the publisher's Nats-Msg-Id
	NumDelivered uint64 // 1 on the first attempt
	StreamSeq    uint64
}

// Data returns the task payload.
func (d *Delivery) Data() []byte { return d.Msg.Data() }

// Handler processes one task. Its ctx ends when the worker shuts down; a handler that returns
// because of that gets its task handed back (Nak) for another worker. Return nil on success (the
// task is acked), an ErrMalformed or ErrPermanent error to drop it, anything else to retry later.
type Handler func(ctx context.Context, d *Delivery) error

// Worker runs Slots concurrent task slots on one pool. Each free slot pulls exactly one task (no
// prefetch buffer, whose AckWait clocks would run while tasks wait), keeps it alive with
// InProgress heartbeats while the handler runs, and settles it:
//
//	handler nil                      → DoubleAck
//	worker ctx cancelled (SIGTERM)   → Nak: redelivered to another worker at once
//	ErrMalformed                     → dead-letter to qf.dlq.<pool>, Term
//	ErrPermanent                     → Term
//	other error                      → NakWithDelay(RetryDelay); on the consumer's last
//	                                   attempt, dead-letter and Term instead
type Worker struct {
	JS       jetstream.JetStream
	Consumer jetstream.Consumer // from BindConsumer
	Pool     string
	Handler  Handler

	Slots      int                                     // concurrent tasks [1]
	Heartbeat  time.Duration                           // InProgress interval [AckWait/4]
	PullWait   time.Duration                           // how long one idle pull waits [5 s]
	RetryDelay func(numDelivered uint64) time.Duration // [5 s × attempts, at most 60 s]
	Logger     *zap.Logger                             // [no logging]
}

// Run runs the slots until ctx is cancelled, then waits for in-flight tasks to be settled.
func (w *Worker) Run(ctx context.Context) error {
	if w.Consumer == nil || w.Handler == nil || w.JS == nil {
		return errors.New("queue: Worker needs JS, Consumer and Handler")
	}
	if err := checkToken("pool", w.Pool); err != nil {
		return err
	}
	cfg := w.Consumer.CachedInfo().Config
	slots := max(w.Slots, 1)
	hb := w.Heartbeat
	if hb <= 0 {
		hb = cfg.AckWait / 4
		if hb <= 0 {
			hb = 15 * time.Second
		}
	}
	pullWait := w.PullWait
	if pullWait <= 0 {
		pullWait = 5 * time.Second
	}
	log := w.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("pool", w.Pool))
	var wg sync.WaitGroup
	for i := 0; i < slots; i++ {
		wg.Add(1)
		go func(slot int) {
			defer wg.Done()
			w.slot(ctx, slot, hb, pullWait, cfg.MaxDeliver, log.With(zap.Int("slot", slot)))
		}(i)
	}
	wg.Wait()
	return nil
}

func (w *Worker) slot(ctx context.Context, slot int, hb, pullWait time.Duration, maxDeliver int, log *zap.Logger) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, pullWait)
		msg, err := w.Consumer.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
				errors.Is(err, jetstream.ErrNoMessages) {
				continue // idle, or shutting down
			}
			log.Warn("pull failed", zap.Error(err))
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		w.process(ctx, msg, hb, maxDeliver, log)
	}
}

func (w *Worker) process(ctx context.Context, msg jetstream.Msg, hb time.Duration, maxDeliver int, log *zap.Logger) {
	d := &Delivery{Msg: msg, Pool: w.Pool, MsgID: msg.Headers().Get(jetstream.MsgIDHeader)}
	if md, err := msg.Metadata(); err == nil {
		d.NumDelivered, d.StreamSeq = md.NumDelivered, md.Sequence.Stream
	}
	log = log.With(zap.String("msg_id", d.MsgID), zap.Uint64("delivery", d.NumDelivered))

	hbCtx, stopHB := context.WithCancel(context.Background())
	var hbDone sync.WaitGroup
	hbDone.Add(1)
	go func() { // lease keep-alive, independent of the handler's progress
		defer hbDone.Done()
		t := time.NewTicker(hb)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					log.Debug("heartbeat failed", zap.Error(err))
				}
			}
		}
	}()
	err := w.safeHandle(ctx, d)
	stopHB()
	hbDone.Wait()

	// Settle with a fresh context: ctx may be the cancelled one.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch {
	case err == nil:
		if aerr := msg.DoubleAck(sctx); aerr != nil {
			log.Warn("ack failed; the task will be redelivered", zap.Error(aerr))
		}
	case ctx.Err() != nil:
		log.Info("shutting down: handing task back", zap.Error(err))
		_ = msg.Nak()
	case errors.Is(err, ErrMalformed):
		log.Warn("malformed task: dead-lettered", zap.Error(err))
		w.deadLetter(sctx, d, err.Error(), log)
	case errors.Is(err, ErrPermanent):
		log.Warn("task failed permanently", zap.Error(err))
		_ = msg.TermWithReason(oneLine(err.Error(), 256))
	case maxDeliver > 0 && d.NumDelivered >= uint64(maxDeliver):
		log.Warn("task out of attempts: dead-lettered", zap.Error(err))
		w.deadLetter(sctx, d, fmt.Sprintf("out of attempts (%d): %v", d.NumDelivered, err), log)
	default:
		delay := w.retryDelay(d.NumDelivered)
		log.Info("task failed; will retry", zap.Error(err), zap.Duration("delay", delay))
		_ = msg.NakWithDelay(delay)
	}
}

// safeHandle turns a handler panic into a malformed-task error, so that one poison message cannot
// crash the worker.
func (w *Worker) safeHandle(ctx context.Context, d *Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Malformed(fmt.Errorf("handler panicked: %v", r))
		}
	}()
	return w.Handler(ctx, d)
}

func (w *Worker) retryDelay(n uint64) time.Duration {
	if w.RetryDelay != nil {
		return w.RetryDelay(n)
	}
	return min(time.Duration(n)*5*time.Second, time.Minute)
}

// deadLetter copies the task to qf.dlq.<pool> and terminates it; if the copy fails the task is
// retried instead, so nothing is lost.
func (w *Worker) deadLetter(ctx context.Context, d *Delivery, reason string, log *zap.Logger) {
	if err := publishDLQ(ctx, w.JS, w.Pool, d.Msg.Subject(), d.MsgID, d.StreamSeq, d.NumDelivered, d.Data(), reason); err != nil {
		log.Error("dead-letter publish failed; retrying task later", zap.Error(err))
		_ = d.Msg.NakWithDelay(w.retryDelay(d.NumDelivered))
		return
	}
	_ = d.Msg.TermWithReason(oneLine(reason, 256))
}

func publishDLQ(ctx context.Context, js jetstream.JetStream, pool, subject, msgID string, seq, delivered uint64, data []byte, reason string) error {
	m := nats.NewMsg(DLQSubject(pool))
	m.Data = data
	m.Header.Set(HeaderDLQReason, oneLine(reason, 1024))
	m.Header.Set(HeaderOriginalSubject, subject)
	if msgID != "" {
		m.Header.Set(HeaderOriginalMsgID, msgID)
	}
	m.Header.Set(HeaderStreamSeq, strconv.FormatUint(seq, 10))
	m.Header.Set(HeaderNumDelivered, strconv.FormatUint(delivered, 10))
	_, err := js.PublishMsg(ctx, m, jetstream.WithMsgID("dlq-"+strconv.FormatUint(seq, 10)),
		jetstream.WithExpectStream(DLQStream))
	return err
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max]
	}
	return s
}
