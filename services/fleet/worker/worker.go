// Package worker is the fleet's stateless worker: it pulls tasks of one pool, one per free slot,
// produces each task's output from byte ranges of the source checkpoint in object storage, writes it
// as one shard with a checksum, and records the completion (the first attempt wins).
package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/kinds"
	"quantfleet.dev/services/fleet/objfs"
	"quantfleet.dev/services/fleet/taskrun"
)

// Config tunes a Worker. Zero fields take the defaults in brackets.
type Config struct {
	Pool  string // [cpu]
	Slots int    // concurrent tasks [1]
	// Name identifies the worker in results and logs [hostname-pid].
	Name string
	// Heartbeat is the InProgress interval [the consumer's AckWait/4].
	Heartbeat time.Duration
	// PullWait bounds one idle pull [5 s].
	PullWait time.Duration
	// RetryDelay is the delay before a failed task is retried [5 s × attempts, at most 60 s].
	RetryDelay func(attempt uint64) time.Duration
	// CancelPoll is how often a running task checks that its job is still active [2 s].
	CancelPoll time.Duration
	// Models is how many opened checkpoints are kept between tasks [4].
	Models int
	// TaskDelay pauses every task before it starts (heartbeats continue): a test knob for
	// exercising crashes while tasks are held.
	TaskDelay time.Duration
	// Backoff retries a task that failed transiently (object storage down) in place, keeping the
	// task and its heartbeats, for Backoff.Budget; such failures do not use up deliveries.
	Backoff fleet.Backoff
}

// Worker runs the tasks of every job kind on a taskrun.Server.
type Worker struct {
	rt  *fleet.Runtime
	cfg Config
	log *zap.Logger
	m   *metrics

	models *modelCache
	plans  *planCache
}

// New returns a worker; reg receives its metrics (nil: not registered).
func New(rt *fleet.Runtime, cfg Config, reg prometheus.Registerer, log *zap.Logger) *Worker {
	if cfg.Pool == "" {
		cfg.Pool = queue.PoolCPU
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = host + "-" + strconv.Itoa(os.Getpid())
	}
	if cfg.Models <= 0 {
		cfg.Models = 4
	}
	if log == nil {
		log = zap.NewNop()
	}
	m := newMetrics(reg)
	m.slots.WithLabelValues(cfg.Pool).Set(float64(cfg.Slots))
	return &Worker{rt: rt, cfg: cfg, log: log.With(zap.String("worker", cfg.Name)), m: m,
		plans: newPlanCache(32), models: newModelCache(cfg.Models)}
}

// Run pulls and runs tasks until ctx ends; in-flight tasks are then handed back (Nak) at once.
func (w *Worker) Run(ctx context.Context) error {
	defer w.models.closeAll()
	srv := &taskrun.Server{RT: w.rt, Pool: w.cfg.Pool, Name: w.cfg.Name, Slots: w.cfg.Slots, Heartbeat: w.cfg.Heartbeat,
		PullWait: w.cfg.PullWait, RetryDelay: w.cfg.RetryDelay, CancelPoll: w.cfg.CancelPoll, Backoff: w.cfg.Backoff,
		Events: true, Log: w.log, Metrics: taskrun.Metrics{
			Settled:  func(kind, result string) { w.m.tasks.WithLabelValues(w.cfg.Pool, kind, result).Inc() },
			Done:     func(kind string, s float64) { w.m.seconds.WithLabelValues(w.cfg.Pool, kind).Observe(s) },
			InFlight: func(d float64) { w.m.inFlight.WithLabelValues(w.cfg.Pool).Add(d) },
		}}
	for _, k := range kinds.TaskKinds() {
		srv.Handle(k, handler{w})
	}
	w.log.Info("worker started", zap.String("pool", w.cfg.Pool), zap.Int("slots", w.cfg.Slots))
	err := srv.Run(ctx)
	w.log.Info("worker stopped")
	return err
}

// handler is the worker's taskrun.Handler.
type handler struct{ *Worker }

var _ taskrun.Handler = handler{}

// Prepare implements taskrun.Handler. The message is only a pointer: the plan (and through it
// the source) comes from the job's own key, and a task its plan does not list, or made from
// another plan, is refused without touching the job (a stale or forged message must not fail
// someone's job).
func (w handler) Prepare(ctx context.Context, a *taskrun.Attempt) error {
	t := a.Task
	if _, _, err := w.taskPlan(ctx, t); errors.Is(err, fleet.ErrPlanChanged) || errors.Is(err, errNotInPlan) ||
		errors.Is(err, blob.ErrNotFound) {
		return queue.Malformed(err)
	}
	if _, done, err := w.rt.Done.Get(ctx, t.JobId, t.TaskId); err != nil {
		return err
	} else if done {
		return taskrun.ErrDuplicate
	}
	return nil
}

// Run implements taskrun.Handler: the task's kind runs it on the source opened from the plan.
func (w handler) Run(ctx context.Context, a *taskrun.Attempt) error {
	t := a.Task
	if w.cfg.TaskDelay > 0 {
		select {
		case <-time.After(w.cfg.TaskDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	plan, kind, err := w.taskPlan(ctx, t)
	if err != nil {
		return err
	}
	loc := plan.Source()
	src, err := w.rt.StoreFor(loc.Bucket)
	if err != nil {
		return err
	}
	name := plan.ModelName
	m, release, err := w.models.get(loc, name, func() (*hfmodel.Model, error) {
		// The model outlives this task (later tasks reuse it), so it reads with a context of its own.
		m, _, err := objfs.OpenModel(context.WithoutCancel(ctx), countStore{src, w.m.read}, loc.Prefix, name)
		return m, err
	})
	if err != nil {
		return fmt.Errorf("opening the model at %s: %w", fleet.S3URL(bucketOr(loc.Bucket, w.rt.Bucket), loc.Prefix), err)
	}
	defer release()
	out, err := kind.Run(ctx, &fleet.RunEnv{Store: w.rt.Store, Task: t, Plan: plan, Model: m, OutputKey: fleet.TaskOutputKey(t),
		Progress: func(f float64) { w.reportProgress(ctx, a, f) }, Log: a.Log})
	if err != nil {
		return err
	}
	cur, peak := fleet.ProcessMemory()
	w.m.memory.Set(float64(cur))
	w.reportProgress(ctx, a, 1)
	a.Result = &pb.TaskResult{JobId: t.JobId, TaskId: t.TaskId, Generation: t.Generation, AttemptId: a.ID, WorkerId: w.cfg.Name,
		Delivery: a.Delivery, Shards: out.Shards, StartedAt: timestamppb.New(a.Started), FinishedAt: timestamppb.Now(),
		PeakMemoryBytes: peak, BytesRead: out.BytesRead, BytesWritten: out.BytesWritten}
	return nil
}

// Commit implements taskrun.Handler: the completion record (first attempt wins), then task_done.
func (w handler) Commit(ctx context.Context, a *taskrun.Attempt) error {
	t, res := a.Task, a.Result.(*pb.TaskResult)
	rec, err := fleet.EncodeResult(res)
	if err != nil {
		return err
	}
	var won bool
	var existing []byte
	err = w.cfg.Backoff.Retry(ctx, func() error { // NATS briefly away: keep the finished work
		won, existing, err = w.rt.Done.Record(ctx, t.JobId, t.TaskId, rec)
		return err
	}, nil)
	if err != nil {
		return err
	}
	if !won {
		// Another attempt finished first; its shard has the same key and, the work being
		// deterministic, the same bytes.
		if prev, perr := fleet.DecodeResult(existing); perr == nil && prev.Shards[0].Sha256 != res.Shards[0].Sha256 {
			a.Log.Error("two attempts of a task produced different bytes", zap.String("recorded", prev.Shards[0].Sha256),
				zap.String("ours", res.Shards[0].Sha256))
		}
		a.Log.Info("another attempt recorded the task first")
	}
	// A cancel that raced the write: leave nothing behind.
	if active, err := fleet.JobActive(ctx, w.rt, t.JobId); err == nil && !active {
		return taskrun.ErrJobEnded
	}
	if won {
		ev := fleet.NewEvent(t.JobId)
		ev.Event = &pb.JobEvent_TaskDone{TaskDone: res}
		if err := w.rt.PublishEvent(ctx, ev, t.JobId+"/"+t.TaskId+"/done"); err != nil {
			a.Log.Warn("publishing task_done failed; the dispatcher will find the record", zap.Error(err))
		}
	}
	w.m.written.Add(float64(res.BytesWritten))
	w.m.taskRead.Add(float64(res.BytesRead))
	return nil
}

// Discard implements taskrun.Handler: the task's result object goes.
func (w handler) Discard(ctx context.Context, a *taskrun.Attempt) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = w.rt.Store.Delete(ctx, fleet.TaskOutputKey(a.Task))
}

// FailMessage implements taskrun.Handler.
func (w handler) FailMessage(a *taskrun.Attempt, err string) string {
	return fleet.TaskErrorMessage(a.Task.TaskId, fleet.TaskLabel(a.Task), a.Delivery, err)
}

// reportProgress publishes the attempt's progress and this process's memory.
func (w *Worker) reportProgress(ctx context.Context, a *taskrun.Attempt, fraction float64) {
	cur, peak := fleet.ProcessMemory()
	ev := fleet.NewEvent(a.Task.JobId)
	ev.Event = &pb.JobEvent_TaskProgress{TaskProgress: &pb.TaskProgress{TaskId: a.Task.TaskId, AttemptId: a.ID,
		WorkerId: w.cfg.Name, Fraction: fraction, MemoryBytes: cur, PeakMemoryBytes: peak}}
	_ = w.rt.PublishEvent(ctx, ev, "")
}

func bucketOr(b, def string) string {
	if b == "" {
		return def
	}
	return b
}

// errNotInPlan marks a task message whose task its job's plan does not list.
var errNotInPlan = errors.New("task not in its job's plan")

// taskPlan returns the plan of the task's job and its kind, read from the job's plan key
// (whatever the message says), checked against the message's SHA-256, and listing the task.
func (w *Worker) taskPlan(ctx context.Context, t *pb.Task) (*fleet.Plan, fleet.Kind, error) {
	e, err := w.plans.get(t.JobId+"/"+t.GetPlan().GetSha256(), func() (*planEntry, error) {
		p, k, _, err := kinds.LoadPlan(ctx, w.rt.Store, fleet.PlanKey(t.JobId), t.GetPlan().GetSha256())
		return &planEntry{p, k}, err
	})
	if err != nil {
		return nil, nil, err
	}
	if _, ok := e.plan.Task(t.TaskId); !ok {
		return nil, nil, fmt.Errorf("%w: job %s has no task %s", errNotInPlan, t.JobId, t.TaskId)
	}
	return e.plan, e.kind, nil
}

type planEntry struct {
	plan *fleet.Plan
	kind fleet.Kind
}

// planCache keeps recently used plans.
type planCache struct {
	mu    sync.Mutex
	max   int
	plans map[string]*planEntry
	order []string
}

func newPlanCache(n int) *planCache { return &planCache{max: n, plans: map[string]*planEntry{}} }

func (c *planCache) get(job string, load func() (*planEntry, error)) (*planEntry, error) {
	c.mu.Lock()
	p, ok := c.plans[job]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := load()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.plans[job]; !ok {
		c.plans[job] = p
		c.order = append(c.order, job)
		if len(c.order) > c.max {
			delete(c.plans, c.order[0])
			c.order = c.order[1:]
		}
	}
	return p, nil
}
