// Package taskrun is the one lifecycle of a fleet task, which the workers and the assembler
// mount their handlers on (as asynq's ServeMux or river's workers): decode the message, route it
// by kind, drop it when its job ended, watch for a cancel while it runs, wait out transient
// failures in place, fail the job on a permanent failure or the last delivery, record the
// completion, report events and metrics. Handlers only do the work.
package taskrun

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
)

// Handler does the work of tasks of the kinds it is mounted for.
type Handler interface {
	// Prepare checks a task before it runs: ErrDuplicate drops it (already done), an error
	// wrapping queue.ErrMalformed dead-letters it, any other error retries it.
	Prepare(ctx context.Context, a *Attempt) error
	// Run runs the task; ctx ends when the job does. It may be called again after a transient
	// failure.
	Run(ctx context.Context, a *Attempt) error
	// Commit records a finished task. ErrJobEnded: the job ended meanwhile (Discard follows).
	Commit(ctx context.Context, a *Attempt) error
	// Discard removes what the attempt wrote, once its job ended.
	Discard(ctx context.Context, a *Attempt)
	// FailMessage is the job's error_message when the task fails for good.
	FailMessage(a *Attempt, err string) string
}

// ErrDuplicate reports a task that is already done (a duplicate delivery).
var ErrDuplicate = errors.New("task already done")

// ErrJobEnded reports a job that ended (cancelled, failed) while its task ran.
var ErrJobEnded = errors.New("job is no longer running")

// Attempt is one run of a task in this process.
type Attempt struct {
	ID       string // a UUID
	Task     *pb.Task
	Kind     string // the task kind's metrics label
	Delivery uint32
	Started  time.Time
	Log      *zap.Logger
	// Result is what Run leaves for Commit.
	Result any
}

// Metrics counts settled tasks; nil fields are not counted.
type Metrics struct {
	// Settled counts a task by kind and result: ok, failed, malformed, dropped, duplicate, shutdown.
	Settled func(kind, result string)
	// Done observes a successful task's wall time.
	Done func(kind string, seconds float64)
	// InFlight moves the number of running tasks.
	InFlight func(delta float64)
}

// Server pulls tasks of one pool and runs them through their kind's handler.
type Server struct {
	RT   *fleet.Runtime
	Pool string
	// Name identifies this process in events.
	Name       string
	Slots      int
	Heartbeat  time.Duration
	PullWait   time.Duration
	RetryDelay func(attempt uint64) time.Duration
	// CancelPoll is how often a running task checks that its job is still active [2 s].
	CancelPoll time.Duration
	// Backoff waits out transient failures in place, for Backoff.Budget.
	Backoff fleet.Backoff
	// Events publishes task_started and task_failed to the job's event stream.
	Events  bool
	Metrics Metrics
	Log     *zap.Logger

	mux        map[pb.TaskKind]Handler
	maxDeliver int
}

// Handle mounts h for tasks of kind k.
func (s *Server) Handle(k pb.TaskKind, h Handler) {
	if s.mux == nil {
		s.mux = map[pb.TaskKind]Handler{}
	}
	s.mux[k] = h
}

// Run binds to the pool's consumer (waiting for the dispatcher to create it) and runs tasks until
// ctx ends; in-flight tasks are then handed back at once.
func (s *Server) Run(ctx context.Context) error {
	if s.CancelPoll <= 0 {
		s.CancelPoll = 2 * time.Second
	}
	if s.Log == nil {
		s.Log = zap.NewNop()
	}
	if err := s.RT.WaitBound(ctx); err != nil {
		return err
	}
	var cons jetstream.Consumer
	for {
		c, err := queue.BindConsumer(ctx, s.RT.JS, s.Pool)
		if err == nil {
			cons = c
			break
		}
		s.Log.Info("waiting for the pool's consumer", zap.Error(err))
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.maxDeliver = cons.CachedInfo().Config.MaxDeliver
	qw := &queue.Worker{JS: s.RT.JS, Consumer: cons, Pool: s.Pool, Handler: s.process, Slots: s.Slots,
		Heartbeat: s.Heartbeat, PullWait: s.PullWait, RetryDelay: s.RetryDelay, Logger: s.Log}
	return qw.Run(ctx)
}

func (s *Server) settled(kind, result string) {
	if s.Metrics.Settled != nil {
		s.Metrics.Settled(kind, result)
	}
}

func (s *Server) inFlight(delta float64) {
	if s.Metrics.InFlight != nil {
		s.Metrics.InFlight(delta)
	}
}

// process is one delivery's whole lifecycle.
func (s *Server) process(ctx context.Context, d *queue.Delivery) error {
	t, err := fleet.DecodeTask(d.Data())
	if err != nil {
		s.settled("unknown", "malformed")
		return queue.Malformed(err)
	}
	kind := fleet.TaskKindLabel(t.Kind)
	h := s.mux[t.Kind]
	if h == nil {
		s.settled(kind, "malformed")
		return queue.Malformed(fmt.Errorf("task kind %s is not handled by pool %s", t.Kind, s.Pool))
	}
	log := s.Log.With(zap.String("job", t.JobId), zap.String("task", t.TaskId), zap.String("label", fleet.TaskLabel(t)),
		zap.Uint64("delivery", d.NumDelivered))
	a := &Attempt{ID: uuid.NewString(), Task: t, Kind: kind, Delivery: uint32(d.NumDelivered), Log: log}

	active, err := fleet.JobActive(ctx, s.RT, t.JobId)
	if err != nil {
		return err
	}
	if !active {
		log.Info("dropping task of an ended or unknown job")
		s.settled(kind, "dropped")
		return nil
	}
	switch err := h.Prepare(ctx, a); {
	case errors.Is(err, ErrDuplicate):
		log.Info("task already done: duplicate delivery ignored")
		s.settled(kind, "duplicate")
		return nil
	case errors.Is(err, queue.ErrMalformed):
		s.settled(kind, "malformed")
		return err
	case err != nil:
		return err
	}

	s.inFlight(1)
	defer s.inFlight(-1)
	a.Started = time.Now()
	if s.Events {
		ev := fleet.NewEvent(t.JobId)
		ev.Event = &pb.JobEvent_TaskStarted{TaskStarted: &pb.TaskStarted{TaskId: t.TaskId, Generation: t.Generation,
			AttemptId: a.ID, WorkerId: s.Name, Delivery: a.Delivery}}
		_ = s.RT.PublishEvent(ctx, ev, "")
	}
	log.Info("task started", zap.String("attempt_id", a.ID))

	tctx, ended, stop := fleet.WatchJob(ctx, s.RT, t.JobId, s.CancelPoll)
	err = s.Backoff.RetryJob(tctx, s.RT, t.JobId, log, func() error { return h.Run(tctx, a) })
	stop()
	if ended() {
		log.Info("job ended while its task ran: dropping the task and its output")
		h.Discard(context.WithoutCancel(ctx), a)
		s.settled(kind, "dropped")
		return nil
	}
	if errors.Is(err, queue.ErrMalformed) {
		s.settled(kind, "malformed")
		return err
	}
	if err != nil {
		if ctx.Err() != nil {
			s.settled(kind, "shutdown")
			return err
		}
		return s.failed(ctx, h, a, err)
	}
	if err := h.Commit(ctx, a); errors.Is(err, ErrJobEnded) {
		log.Info("job ended before its task was recorded: dropping the output", zap.Error(err))
		h.Discard(context.WithoutCancel(ctx), a)
		s.settled(kind, "dropped")
		return nil
	} else if err != nil {
		return err
	}
	seconds := time.Since(a.Started).Seconds()
	s.settled(kind, "ok")
	if s.Metrics.Done != nil {
		s.Metrics.Done(kind, seconds)
	}
	log.Info("task done", zap.Float64("seconds", seconds))
	return nil
}

// failed reports a failed attempt; on the last attempt, or for an error retrying cannot fix, the
// job fails with the error.
func (s *Server) failed(ctx context.Context, h Handler, a *Attempt, err error) error {
	t := a.Task
	final := fault.Permanent(err) || (s.maxDeliver > 0 && int(a.Delivery) >= s.maxDeliver)
	msg := fleet.OneLine(err.Error(), 1000)
	s.settled(a.Kind, "failed")
	if final {
		// The job first, then the event: the dispatcher's backup never races the message.
		a.Log.Error("task failed for good: failing the job", zap.Error(err))
		if ferr := fleet.FailJob(ctx, s.RT, t.JobId, h.FailMessage(a, msg)); ferr != nil {
			a.Log.Error("marking the job failed", zap.Error(ferr))
		}
	}
	if s.Events {
		ev := fleet.NewEvent(t.JobId)
		ev.Event = &pb.JobEvent_TaskFailed{TaskFailed: &pb.TaskFailed{TaskId: t.TaskId, Generation: t.Generation, AttemptId: a.ID,
			WorkerId: s.Name, Delivery: a.Delivery, ErrorMessage: msg, Permanent: final}}
		if perr := s.RT.PublishEvent(ctx, ev, ""); perr != nil {
			a.Log.Warn("publishing task_failed failed", zap.Error(perr))
		}
	}
	if final {
		return queue.Permanent(err)
	}
	a.Log.Warn("task attempt failed; it will be retried", zap.Error(err))
	return err
}
