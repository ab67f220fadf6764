// Package assembler is the fleet's last step: it stitches a job's header and shards into the final
// GGUF file in object storage (one multipart upload with server-side part copies), validates the
// file by reading it back, records the seed's QuantizedModel in the job and marks it COMPLETED.
package assembler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/kinds"
	"quantfleet.dev/services/fleet/taskrun"
)

// Config tunes an Assembler. Zero fields take the defaults in brackets.
type Config struct {
	Slots      int           // concurrent assemblies [1]
	Name       string        // [hostname-pid]
	Heartbeat  time.Duration // [AckWait/4]
	PullWait   time.Duration // [5 s]
	RetryDelay func(attempt uint64) time.Duration
	CancelPoll time.Duration // [2 s]
	// KeepShards keeps a completed job's intermediate objects (plan, header, shards, checkpoint)
	// and completion records, for inspection; by default they are removed once the result is valid.
	KeepShards bool
	// Backoff retries an assembly that failed transiently (object storage down) in place, for
	// Backoff.Budget; such failures do not use up deliveries.
	Backoff fleet.Backoff
}

// Assembler runs assembly tasks of the asm pool: the job's kind makes the result.
type Assembler struct {
	rt  *fleet.Runtime
	cfg Config
	log *zap.Logger
	m   *metrics
}

// New returns an assembler; reg receives its metrics (nil: not registered).
func New(rt *fleet.Runtime, cfg Config, reg prometheus.Registerer, log *zap.Logger) *Assembler {
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = host + "-" + strconv.Itoa(os.Getpid())
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Assembler{rt: rt, cfg: cfg, log: log.With(zap.String("assembler", cfg.Name)), m: newMetrics(reg)}
}

// Run assembles until ctx ends.
func (a *Assembler) Run(ctx context.Context) error {
	srv := &taskrun.Server{RT: a.rt, Pool: queue.PoolAsm, Name: a.cfg.Name, Slots: a.cfg.Slots, Heartbeat: a.cfg.Heartbeat,
		PullWait: a.cfg.PullWait, RetryDelay: a.cfg.RetryDelay, CancelPoll: a.cfg.CancelPoll, Backoff: a.cfg.Backoff,
		Log: a.log, Metrics: taskrun.Metrics{
			Settled: func(_, result string) {
				if result == "ok" {
					result = "completed"
				}
				a.m.jobs.WithLabelValues(result).Inc()
			},
			Done: func(_ string, s float64) { a.m.seconds.Observe(s) },
		}}
	srv.Handle(pb.TaskKind_TASK_KIND_ASSEMBLE, handler{a})
	a.log.Info("assembler started")
	err := srv.Run(ctx)
	a.log.Info("assembler stopped")
	return err
}

// handler is the assembler's taskrun.Handler.
type handler struct{ *Assembler }

var _ taskrun.Handler = handler{}

// Prepare implements taskrun.Handler.
func (handler) Prepare(context.Context, *taskrun.Attempt) error { return nil }

// errIncomplete marks an assembly of a job whose tasks are not all recorded.
var errIncomplete = errors.New("assembly of an incomplete job")

// Run implements taskrun.Handler: the job's kind composes, validates and describes the result.
func (a handler) Run(ctx context.Context, at *taskrun.Attempt) error {
	t := at.Task
	// The job's own plan, whatever the message says.
	plan, kind, _, err := kinds.LoadPlan(ctx, a.rt.Store, fleet.PlanKey(t.JobId), t.GetPlan().GetSha256())
	if err != nil {
		return err
	}
	recs, err := a.rt.Done.ListJob(ctx, t.JobId)
	if err != nil {
		return err
	}
	records := map[string]*pb.TaskResult{}
	for _, task := range plan.Tasks {
		b, ok := recs[task.ID]
		if !ok {
			// Not queued by the dispatcher (it queues the assembly once every record exists), or the
			// records were lost: dead-letter it and let the dispatcher judge, never fail the job here.
			return queue.Malformed(fmt.Errorf("%w: %w: task %s (%s) has no completion record", errIncomplete, fleet.ErrShard, task.ID, task.Label))
		}
		if records[task.ID], err = fleet.DecodeResult(b); err != nil {
			return err
		}
	}
	src, err := a.rt.StoreFor(plan.SourceBucket)
	if err != nil {
		return err
	}
	source := t.GetSource().GetModelName()
	if req, err := a.rt.Request(ctx, t.JobId); err == nil {
		source = req.Model
	}
	res, err := kind.Assemble(ctx, &fleet.AssembleEnv{Store: a.rt.Store, Bucket: a.rt.Bucket, Source: src, Task: t, Plan: plan,
		Records: records, OutputKey: fleet.TaskOutputKey(t), SourceModel: source, Log: at.Log})
	if err != nil {
		return err
	}
	at.Result = res
	return nil
}

// Commit implements taskrun.Handler: the job records its result and is COMPLETED.
func (a handler) Commit(ctx context.Context, at *taskrun.Attempt) error {
	t, res := at.Task, at.Result.(*domain.QuantizedModel)
	_, err := a.rt.Jobs.Update(ctx, t.JobId, func(j *domain.QuantizationJob) error {
		if j.Status != domain.StatusRunning {
			return taskrun.ErrJobEnded
		}
		j.Result = res
		if !a.cfg.KeepShards {
			j.CheckpointPath = "" // removed with the job's other intermediates below
		}
		return j.Transition(domain.StatusCompleted, time.Now().UTC())
	})
	if errors.Is(err, domain.ErrIllegalTransition) || errors.Is(err, queue.ErrJobNotFound) {
		return fmt.Errorf("%w: %w", taskrun.ErrJobEnded, err)
	}
	if err != nil {
		return err
	}
	a.m.bytes.Add(float64(res.FileSize))
	ev := fleet.NewEvent(t.JobId)
	ev.Event = &pb.JobEvent_State{State: &pb.JobStateChanged{From: string(domain.StatusRunning), To: string(domain.StatusCompleted)}}
	_ = a.rt.PublishEvent(ctx, ev, t.JobId+"/completed")
	at.Log.Info("job completed", zap.String("output", res.OutputPath), zap.Int64("bytes", res.FileSize))
	if !a.cfg.KeepShards {
		a.cleanup(context.WithoutCancel(ctx), t.JobId, at.Log)
	}
	return nil
}

// Discard implements taskrun.Handler: the job's result goes, a file or a checkpoint directory.
func (a handler) Discard(ctx context.Context, at *taskrun.Attempt) {
	out := fleet.TaskOutputKey(at.Task)
	_ = a.rt.Store.Delete(ctx, out)
	_, _ = a.rt.Store.DeletePrefix(ctx, out+"/")
}

// FailMessage implements taskrun.Handler.
func (handler) FailMessage(at *taskrun.Attempt, err string) string {
	return fmt.Sprintf("assembly failed after %d attempt(s): %s", at.Delivery, err)
}

// cleanup removes what only served to build the result: everything under the job's prefix (plan,
// header, shards, activations, checkpoint) and the completion records. `get` needs only the output,
// and a completed job cannot be resumed. Storage that is down is waited for.
func (a *Assembler) cleanup(ctx context.Context, job string, log *zap.Logger) {
	err := a.cfg.Backoff.Retry(ctx, func() error {
		_, err := a.rt.Store.DeletePrefix(ctx, fleet.JobPrefix(job))
		return err
	}, nil)
	if err != nil {
		log.Warn("removing the job's intermediate objects failed", zap.Error(err))
	}
	if err := a.rt.Done.DeleteJob(ctx, job); err != nil {
		log.Warn("removing completion records failed", zap.Error(err))
	}
}

type metrics struct {
	jobs    *prometheus.CounterVec
	seconds prometheus.Histogram
	bytes   prometheus.Counter
}

// newMetrics makes the metrics, registered with reg unless it is nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		jobs: f.NewCounterVec(prometheus.CounterOpts{Name: "quantfleet_assembler_tasks_total",
			Help: "Assembly tasks settled, by result (completed, failed, malformed, dropped)."}, []string{"result"}),
		seconds: f.NewHistogram(prometheus.HistogramOpts{Name: "quantfleet_assembler_task_duration_seconds",
			Help: "Wall time of an assembly (compose and validation).", Buckets: prometheus.ExponentialBuckets(0.1, 2, 16)}),
		bytes: f.NewCounter(prometheus.CounterOpts{Name: "quantfleet_assembler_bytes_total",
			Help: "Bytes of assembled files."}),
	}
	return m
}
