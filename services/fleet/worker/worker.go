// Package worker is the fleet's stateless worker: it pulls tasks of one pool, one per free slot,
// produces each task's output from byte ranges of the source checkpoint in object storage, writes it
// as one shard with a checksum, and records the completion (the first attempt wins).
package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/ggufjob"
	"quantfleet.dev/services/fleet/layerjob"
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

// Worker runs tensor tasks.
type Worker struct {
	rt  *fleet.Runtime
	cfg Config
	log *zap.Logger
	m   *metrics

	maxDeliver int
	models     *modelCache
	plans      *planCache
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
	if cfg.CancelPoll <= 0 {
		cfg.CancelPoll = 2 * time.Second
	}
	if cfg.Models <= 0 {
		cfg.Models = 4
	}
	if log == nil {
		log = zap.NewNop()
	}
	m := newMetrics(reg)
	m.slots.WithLabelValues(cfg.Pool).Set(float64(cfg.Slots))
	w := &Worker{rt: rt, cfg: cfg, log: log.With(zap.String("worker", cfg.Name)), m: m,
		plans: newPlanCache(32)}
	w.models = newModelCache(cfg.Models)
	return w
}

// Run pulls and runs tasks until ctx ends; in-flight tasks are then handed back (Nak) at once.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.rt.WaitBound(ctx); err != nil {
		return err
	}
	var cons jetstream.Consumer
	for {
		c, err := queue.BindConsumer(ctx, w.rt.JS, w.cfg.Pool)
		if err == nil {
			cons = c
			break
		}
		w.log.Info("waiting for the pool's consumer", zap.Error(err))
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.maxDeliver = cons.CachedInfo().Config.MaxDeliver
	defer w.models.closeAll()
	w.log.Info("worker started", zap.String("pool", w.cfg.Pool), zap.Int("slots", w.cfg.Slots))
	qw := &queue.Worker{JS: w.rt.JS, Consumer: cons, Pool: w.cfg.Pool, Handler: w.handle, Slots: w.cfg.Slots,
		Heartbeat: w.cfg.Heartbeat, PullWait: w.cfg.PullWait, RetryDelay: w.cfg.RetryDelay, Logger: w.log}
	err := qw.Run(ctx)
	w.log.Info("worker stopped")
	return err
}

func (w *Worker) handle(ctx context.Context, d *queue.Delivery) error {
	t, err := fleet.DecodeTask(d.Data())
	if err != nil {
		w.m.tasks.WithLabelValues(w.cfg.Pool, "unknown", "malformed").Inc()
		return queue.Malformed(err)
	}
	kind := kindName(t.Kind)
	switch t.Kind {
	case pb.TaskKind_TASK_KIND_GGUF_TENSORS, pb.TaskKind_TASK_KIND_GPTQ_LAYER, pb.TaskKind_TASK_KIND_AWQ_LAYER:
	default:
		w.m.tasks.WithLabelValues(w.cfg.Pool, kind, "malformed").Inc()
		return queue.Malformed(fmt.Errorf("task kind %s is not handled by workers", t.Kind))
	}
	log := w.log.With(zap.String("job", t.JobId), zap.String("task", t.TaskId), zap.String("label", fleet.TaskLabel(t)),
		zap.Uint64("delivery", d.NumDelivered))

	active, err := fleet.JobActive(ctx, w.rt, t.JobId)
	if err != nil {
		return err
	}
	if !active {
		log.Info("dropping task of an ended or unknown job")
		w.m.tasks.WithLabelValues(w.cfg.Pool, kind, "dropped").Inc()
		return nil
	}
	// The message is only a pointer: the plan (and through it the source) comes from the job's own
	// key, and a task its plan does not list, or made from another plan, is refused without
	// touching the job (a stale or forged message must not fail someone's job).
	if _, err := w.taskPlan(ctx, t); errors.Is(err, ggufjob.ErrPlanChanged) || errors.Is(err, errNotInPlan) ||
		errors.Is(err, blob.ErrNotFound) {
		w.m.tasks.WithLabelValues(w.cfg.Pool, kind, "malformed").Inc()
		return queue.Malformed(err)
	}
	if _, done, err := w.rt.Done.Get(ctx, t.JobId, t.TaskId); err != nil {
		return err
	} else if done {
		log.Info("task already done: duplicate delivery ignored")
		w.m.tasks.WithLabelValues(w.cfg.Pool, kind, "duplicate").Inc()
		return nil
	}

	w.m.inFlight.WithLabelValues(w.cfg.Pool).Inc()
	defer w.m.inFlight.WithLabelValues(w.cfg.Pool).Dec()
	at := &attempt{id: uuid.NewString(), task: t, delivery: uint32(d.NumDelivered), started: time.Now()}
	ev := fleet.NewEvent(t.JobId)
	ev.Event = &pb.JobEvent_TaskStarted{TaskStarted: &pb.TaskStarted{TaskId: t.TaskId, Generation: t.Generation,
		AttemptId: at.id, WorkerId: w.cfg.Name, Delivery: at.delivery}}
	_ = w.rt.PublishEvent(ctx, ev, "")
	log.Info("task started", zap.String("attempt_id", at.id))

	tctx, ended, stop := fleet.WatchJob(ctx, w.rt, t.JobId, w.cfg.CancelPoll)
	var res *pb.TaskResult
	err = w.cfg.Backoff.RetryJob(tctx, w.rt, t.JobId, log, func() error {
		var err error
		res, err = w.run(tctx, at, log)
		return err
	})
	stop()
	if ended() {
		log.Info("job ended while its task ran: dropping the task")
		_ = w.removeShard(t)
		w.m.tasks.WithLabelValues(w.cfg.Pool, kind, "dropped").Inc()
		return nil
	}
	if err != nil {
		if ctx.Err() != nil {
			w.m.tasks.WithLabelValues(w.cfg.Pool, kind, "shutdown").Inc()
			return err
		}
		return w.failed(ctx, at, err, log)
	}
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
			log.Error("two attempts of a task produced different bytes", zap.String("recorded", prev.Shards[0].Sha256),
				zap.String("ours", res.Shards[0].Sha256))
		}
		log.Info("another attempt recorded the task first")
	}
	// A cancel that raced the write: leave nothing behind.
	if active, err := fleet.JobActive(ctx, w.rt, t.JobId); err == nil && !active {
		_ = w.removeShard(t)
		return nil
	}
	if won {
		ev := fleet.NewEvent(t.JobId)
		ev.Event = &pb.JobEvent_TaskDone{TaskDone: res}
		if err := w.rt.PublishEvent(ctx, ev, t.JobId+"/"+t.TaskId+"/done"); err != nil {
			log.Warn("publishing task_done failed; the dispatcher will find the record", zap.Error(err))
		}
	}
	seconds := time.Since(at.started).Seconds()
	w.m.tasks.WithLabelValues(w.cfg.Pool, kind, "ok").Inc()
	w.m.seconds.WithLabelValues(w.cfg.Pool, kind).Observe(seconds)
	w.m.written.Add(float64(res.BytesWritten))
	log.Info("task done", zap.Int64("bytes", res.BytesWritten), zap.Float64("seconds", seconds))
	return nil
}

// attempt is one run of a task on this worker.
type attempt struct {
	id       string
	task     *pb.Task
	delivery uint32
	started  time.Time
}

func kindName(k pb.TaskKind) string {
	switch k {
	case pb.TaskKind_TASK_KIND_GGUF_TENSORS:
		return "gguf_tensors"
	case pb.TaskKind_TASK_KIND_ASSEMBLE:
		return "assemble"
	case pb.TaskKind_TASK_KIND_GPTQ_LAYER:
		return "gptq_layer"
	case pb.TaskKind_TASK_KIND_AWQ_LAYER:
		return "awq_layer"
	}
	return "unknown"
}

// failed reports a failed attempt; on the last attempt, or for an error retrying cannot fix, the
// job fails with the error.
func (w *Worker) failed(ctx context.Context, at *attempt, err error, log *zap.Logger) error {
	t := at.task
	final := fleet.Permanent(err) || (w.maxDeliver > 0 && int(at.delivery) >= w.maxDeliver)
	msg := fleet.OneLine(err.Error(), 1000)
	ev := fleet.NewEvent(t.JobId)
	ev.Event = &pb.JobEvent_TaskFailed{TaskFailed: &pb.TaskFailed{TaskId: t.TaskId, Generation: t.Generation, AttemptId: at.id,
		WorkerId: w.cfg.Name, Delivery: at.delivery, ErrorMessage: msg, Permanent: final}}
	if perr := w.rt.PublishEvent(ctx, ev, ""); perr != nil {
		log.Warn("publishing task_failed failed", zap.Error(perr))
	}
	w.m.tasks.WithLabelValues(w.cfg.Pool, kindName(t.Kind), "failed").Inc()
	if final {
		log.Error("task failed for good: failing the job", zap.Error(err))
		if ferr := fleet.FailJob(ctx, w.rt, t.JobId, fleet.TaskErrorMessage(t.TaskId, fleet.TaskLabel(t), at.delivery, msg)); ferr != nil {
			log.Error("marking the job failed", zap.Error(ferr))
		}
		return queue.Permanent(err)
	}
	log.Warn("task attempt failed; it will be retried", zap.Error(err))
	return err
}

func (w *Worker) run(ctx context.Context, at *attempt, log *zap.Logger) (*pb.TaskResult, error) {
	t := at.task
	if w.cfg.TaskDelay > 0 {
		select {
		case <-time.After(w.cfg.TaskDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	plan, err := w.taskPlan(ctx, t)
	if err != nil {
		return nil, err
	}
	spec, _ := plan.Task(t.TaskId)
	loc := fleet.Location{Bucket: plan.SourceBucket, Prefix: plan.SourcePrefix}
	src, err := w.rt.StoreFor(loc.Bucket)
	if err != nil {
		return nil, err
	}
	name := plan.ModelName
	m, release, err := w.models.get(loc, name, func() (*hfmodel.Model, error) {
		// The model outlives this task (later tasks reuse it), so it reads with a context of its own.
		m, _, err := ggufjob.OpenModel(context.WithoutCancel(ctx), countStore{src, w.m.read}, loc.Prefix, name)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("opening the model at %s: %w", fleet.S3URL(bucketOr(loc.Bucket, w.rt.Bucket), loc.Prefix), err)
	}
	defer release()
	if plan.Layered != nil {
		return w.runLayer(ctx, at, plan, spec, m)
	}
	done, lastReport := 0, time.Now()
	shard, err := ggufjob.Produce(ctx, m, plan, spec, func(tensor string) {
		done++
		log.Debug("tensor done", zap.String("tensor", tensor))
		if time.Since(lastReport) >= 2*time.Second {
			lastReport = time.Now()
			w.reportProgress(ctx, at, float64(done)/float64(spec.Count))
		}
	})
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	key := fleet.TaskOutputKey(t)
	if _, err := w.rt.Store.Put(ctx, key, bytes.NewReader(shard), int64(len(shard)), blob.PutOptions{}); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(shard)
	cur, peak := fleet.ProcessMemory()
	w.m.memory.Set(float64(cur))
	w.reportProgress(ctx, at, 1)
	var read int64
	for _, in := range t.Inputs {
		read += in.GetRange().GetLength()
	}
	sh := &pb.Shard{Key: key, Size: int64(len(shard)), Sha256: hex.EncodeToString(sum[:])}
	for _, tp := range plan.Tensors[spec.First : spec.First+spec.Count] {
		sh.Tensors = append(sh.Tensors, &pb.TensorEntry{Name: tp.Name, GgmlType: uint32(tp.Type), Dims: tp.Ne,
			Offset: tp.Offset - spec.Offset, Size: tp.Size})
	}
	return &pb.TaskResult{JobId: t.JobId, TaskId: t.TaskId, Generation: t.Generation, AttemptId: at.id, WorkerId: w.cfg.Name,
		Delivery: at.delivery, Shards: []*pb.Shard{sh}, StartedAt: timestamppb.New(at.started), FinishedAt: timestamppb.Now(),
		PeakMemoryBytes: peak, BytesRead: read, BytesWritten: int64(len(shard))}, nil
}

// runLayer runs a GPTQ/AWQ layer task (layerjob.RunLayer).
func (w *Worker) runLayer(ctx context.Context, at *attempt, plan *ggufjob.Plan, spec ggufjob.Task, m *hfmodel.Model) (*pb.TaskResult, error) {
	t := at.task
	w.reportProgress(ctx, at, 0)
	shards, read, err := layerjob.RunLayer(ctx, w.rt.Store, t.JobId, plan, m, spec.Block, fleet.TaskOutputKey(t))
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	cur, peak := fleet.ProcessMemory()
	w.m.memory.Set(float64(cur))
	w.reportProgress(ctx, at, 1)
	var written int64
	for _, sh := range shards {
		written += sh.Size
	}
	return &pb.TaskResult{JobId: t.JobId, TaskId: t.TaskId, Generation: t.Generation, AttemptId: at.id, WorkerId: w.cfg.Name,
		Delivery: at.delivery, Shards: shards, StartedAt: timestamppb.New(at.started), FinishedAt: timestamppb.Now(),
		PeakMemoryBytes: peak, BytesRead: read, BytesWritten: written}, nil
}

// reportProgress publishes the attempt's progress and this process's memory.
func (w *Worker) reportProgress(ctx context.Context, at *attempt, fraction float64) {
	cur, peak := fleet.ProcessMemory()
	ev := fleet.NewEvent(at.task.JobId)
	ev.Event = &pb.JobEvent_TaskProgress{TaskProgress: &pb.TaskProgress{TaskId: at.task.TaskId, AttemptId: at.id,
		WorkerId: w.cfg.Name, Fraction: fraction, MemoryBytes: cur, PeakMemoryBytes: peak}}
	_ = w.rt.PublishEvent(ctx, ev, "")
}

func bucketOr(b, def string) string {
	if b == "" {
		return def
	}
	return b
}

func (w *Worker) removeShard(t *pb.Task) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return w.rt.Store.Delete(ctx, fleet.TaskOutputKey(t))
}

// errNotInPlan marks a task message whose task its job's plan does not list.
var errNotInPlan = errors.New("task not in its job's plan")

// taskPlan returns the plan of the task's job, read from the job's plan key (whatever the message
// says), checked against the message's SHA-256, and listing the task.
func (w *Worker) taskPlan(ctx context.Context, t *pb.Task) (*ggufjob.Plan, error) {
	p, err := w.plans.get(t.JobId+"/"+t.GetPlan().GetSha256(), func() (*ggufjob.Plan, error) {
		return ggufjob.LoadPlanChecked(ctx, w.rt.Store, fleet.PlanKey(t.JobId), t.GetPlan().GetSha256())
	})
	if err != nil {
		return nil, err
	}
	if _, ok := p.Task(t.TaskId); !ok {
		return nil, fmt.Errorf("%w: job %s has no task %s", errNotInPlan, t.JobId, t.TaskId)
	}
	return p, nil
}

// planCache keeps recently used plans.
type planCache struct {
	mu    sync.Mutex
	max   int
	plans map[string]*ggufjob.Plan
	order []string
}

func newPlanCache(n int) *planCache { return &planCache{max: n, plans: map[string]*ggufjob.Plan{}} }

func (c *planCache) get(job string, load func() (*ggufjob.Plan, error)) (*ggufjob.Plan, error) {
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
