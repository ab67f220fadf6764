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

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"quantfleet.dev/libs/convert"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/ggufjob"
	"quantfleet.dev/services/fleet/layerjob"
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

// Assembler runs assembly tasks of the asm pool.
type Assembler struct {
	rt         *fleet.Runtime
	cfg        Config
	log        *zap.Logger
	m          *metrics
	maxDeliver int
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
	if cfg.CancelPoll <= 0 {
		cfg.CancelPoll = 2 * time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Assembler{rt: rt, cfg: cfg, log: log.With(zap.String("assembler", cfg.Name)), m: newMetrics(reg)}
}

// Run assembles until ctx ends.
func (a *Assembler) Run(ctx context.Context) error {
	if err := a.rt.WaitBound(ctx); err != nil {
		return err
	}
	var cons jetstream.Consumer
	for {
		c, err := queue.BindConsumer(ctx, a.rt.JS, queue.PoolAsm)
		if err == nil {
			cons = c
			break
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	a.maxDeliver = cons.CachedInfo().Config.MaxDeliver
	a.log.Info("assembler started")
	qw := &queue.Worker{JS: a.rt.JS, Consumer: cons, Pool: queue.PoolAsm, Handler: a.handle, Slots: a.cfg.Slots,
		Heartbeat: a.cfg.Heartbeat, PullWait: a.cfg.PullWait, RetryDelay: a.cfg.RetryDelay, Logger: a.log}
	err := qw.Run(ctx)
	a.log.Info("assembler stopped")
	return err
}

func (a *Assembler) handle(ctx context.Context, d *queue.Delivery) error {
	t, err := fleet.DecodeTask(d.Data())
	if err != nil {
		a.m.jobs.WithLabelValues("malformed").Inc()
		return queue.Malformed(err)
	}
	if t.Kind != pb.TaskKind_TASK_KIND_ASSEMBLE {
		a.m.jobs.WithLabelValues("malformed").Inc()
		return queue.Malformed(fmt.Errorf("task kind %s is not an assembly", t.Kind))
	}
	log := a.log.With(zap.String("job", t.JobId), zap.Uint64("delivery", d.NumDelivered))
	out := fleet.TaskOutputKey(t)
	active, err := fleet.JobActive(ctx, a.rt, t.JobId)
	if err != nil {
		return err
	}
	if !active {
		log.Info("dropping the assembly of an ended job")
		a.m.jobs.WithLabelValues("dropped").Inc()
		return nil
	}
	start := time.Now()
	actx, ended, stop := fleet.WatchJob(ctx, a.rt, t.JobId, a.cfg.CancelPoll)
	var res *domain.QuantizedModel
	err = a.cfg.Backoff.RetryJob(actx, a.rt, t.JobId, log, func() error {
		var err error
		res, err = a.assemble(actx, t, log)
		return err
	})
	stop()
	if ended() {
		log.Info("job ended during assembly: removing the output")
		a.removeOutput(context.WithoutCancel(ctx), out)
		return nil
	}
	if errors.Is(err, errIncomplete) {
		// Not queued by the dispatcher (it queues the assembly once every record exists), or the
		// records were lost: dead-letter it and let the dispatcher judge, never fail the job here.
		a.m.jobs.WithLabelValues("malformed").Inc()
		return queue.Malformed(err)
	}
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		final := fleet.Permanent(err) || (a.maxDeliver > 0 && d.NumDelivered >= uint64(a.maxDeliver))
		a.m.jobs.WithLabelValues("failed").Inc()
		if !final {
			log.Warn("assembly failed; will retry", zap.Error(err))
			return err
		}
		log.Error("assembly failed: failing the job", zap.Error(err))
		msg := fmt.Sprintf("assembly failed after %d attempt(s): %v", d.NumDelivered, err)
		if ferr := fleet.FailJob(ctx, a.rt, t.JobId, msg); ferr != nil {
			log.Error("marking the job failed", zap.Error(ferr))
		}
		return queue.Permanent(err)
	}
	_, err = a.rt.Jobs.Update(ctx, t.JobId, func(j *domain.QuantizationJob) error {
		if j.Status != domain.StatusRunning {
			return errJobEnded
		}
		j.Result = res
		if !a.cfg.KeepShards {
			j.CheckpointPath = "" // removed with the job's other intermediates below
		}
		return j.Transition(domain.StatusCompleted, time.Now().UTC())
	})
	if err != nil {
		if errors.Is(err, errJobEnded) || errors.Is(err, domain.ErrIllegalTransition) || errors.Is(err, queue.ErrJobNotFound) {
			log.Warn("job ended before it could complete: removing the output", zap.Error(err))
			a.removeOutput(context.WithoutCancel(ctx), out)
			return nil
		}
		return err
	}
	seconds := time.Since(start).Seconds()
	a.m.jobs.WithLabelValues("completed").Inc()
	a.m.seconds.Observe(seconds)
	a.m.bytes.Add(float64(res.FileSize))
	ev := fleet.NewEvent(t.JobId)
	ev.Event = &pb.JobEvent_State{State: &pb.JobStateChanged{From: string(domain.StatusRunning), To: string(domain.StatusCompleted)}}
	_ = a.rt.PublishEvent(ctx, ev, t.JobId+"/completed")
	log.Info("job completed", zap.String("output", res.OutputPath), zap.Int64("bytes", res.FileSize), zap.Float64("seconds", seconds))
	if !a.cfg.KeepShards {
		a.cleanup(context.WithoutCancel(ctx), t.JobId, log)
	}
	return nil
}

var errJobEnded = errors.New("job is no longer running")

// errIncomplete marks an assembly of a job whose tasks are not all recorded.
var errIncomplete = errors.New("assembly of an incomplete job")

// assemble composes, validates and describes the file.
func (a *Assembler) assemble(ctx context.Context, t *pb.Task, log *zap.Logger) (*domain.QuantizedModel, error) {
	// The job's own plan and header keys, whatever the message says.
	plan, err := ggufjob.LoadPlanChecked(ctx, a.rt.Store, fleet.PlanKey(t.JobId), t.GetPlan().GetSha256())
	if err != nil {
		return nil, err
	}
	recs, err := a.rt.Done.ListJob(ctx, t.JobId)
	if err != nil {
		return nil, err
	}
	if plan.Layered != nil {
		return a.assembleLayered(ctx, t, plan, recs, log)
	}
	sums := map[string]string{}
	shardKeys := map[string]string{}
	for _, task := range plan.Tasks {
		b, ok := recs[task.ID]
		if !ok {
			return nil, fmt.Errorf("%w: %w: task %s (%s) has no completion record", errIncomplete, ggufjob.ErrShard, task.ID, task.Label)
		}
		r, err := fleet.DecodeResult(b)
		if err != nil {
			return nil, err
		}
		sums[task.ID], shardKeys[task.ID] = r.Shards[0].Sha256, r.Shards[0].Key
	}
	headerKey := fleet.HeaderKey(t.JobId)
	out := fleet.TaskOutputKey(t)
	oi, err := ggufjob.Assemble(ctx, a.rt.Store, plan, headerKey, func(id string) string { return shardKeys[id] }, out)
	if err != nil {
		return nil, err
	}
	log.Info("file assembled", zap.String("key", out), zap.Int64("bytes", oi.Size))
	sum, err := ggufjob.Validate(ctx, a.rt.Store, plan, out, sums, nil)
	if err != nil {
		_ = a.rt.Store.Delete(context.WithoutCancel(ctx), out)
		return nil, err
	}
	source := t.Params[fleet.ParamModelName]
	if req, err := a.rt.Request(ctx, t.JobId); err == nil {
		source = req.Model
	}
	return &domain.QuantizedModel{
		OutputPath:       fleet.S3URL(a.rt.Bucket, out),
		Format:           domain.FormatGGUF,
		FileSize:         oi.Size,
		CompressionRatio: float64(oi.Size) / float64(plan.SourceBytes),
		QuantizationMetadata: map[string]any{
			"level":                plan.Level,
			"file_type":            plan.FileType,
			"architecture":         plan.Arch,
			"tensor_count":         len(plan.Tensors),
			"quantization_version": convert.QuantizationVersion,
			"tensor_types":         plan.TypeCounts(),
			"sha256":               sum,
			"tasks":                len(plan.Tasks),
		},
		CreatedAt:        time.Now().UTC(),
		SourceModelPath:  source,
		ValidationStatus: domain.ValidationValid,
	}, nil
}

// removeOutput removes a job's result: a file, or a checkpoint directory under out+"/".
func (a *Assembler) removeOutput(ctx context.Context, out string) {
	_ = a.rt.Store.Delete(ctx, out)
	_, _ = a.rt.Store.DeletePrefix(ctx, out+"/")
}

// assembleLayered writes and validates a GPTQ/AWQ job's checkpoint directory under the output
// key + "/" (layerjob.Assemble).
func (a *Assembler) assembleLayered(ctx context.Context, t *pb.Task, plan *ggufjob.Plan, recs map[string][]byte, log *zap.Logger) (*domain.QuantizedModel, error) {
	var keys []string
	for _, task := range plan.Tasks {
		b, ok := recs[task.ID]
		if !ok {
			return nil, fmt.Errorf("%w: %w: task %s (%s) has no completion record", errIncomplete, ggufjob.ErrShard, task.ID, task.Label)
		}
		r, err := fleet.DecodeResult(b)
		if err != nil {
			return nil, err
		}
		keys = append(keys, r.Shards[0].Key)
	}
	src, err := a.rt.StoreFor(plan.SourceBucket)
	if err != nil {
		return nil, err
	}
	m, fsys, err := ggufjob.OpenModel(ctx, src, plan.SourcePrefix, plan.ModelName)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	prefix := fleet.TaskOutputKey(t) + "/"
	res, err := layerjob.Assemble(ctx, a.rt.Store, plan, m, fsys, keys, prefix, "")
	if err != nil {
		_, _ = a.rt.Store.DeletePrefix(context.WithoutCancel(ctx), prefix)
		return nil, err
	}
	log.Info("checkpoint assembled", zap.String("prefix", prefix), zap.Int64("bytes", res.Size))
	source := t.Params[fleet.ParamModelName]
	if req, err := a.rt.Request(ctx, t.JobId); err == nil {
		source = req.Model
	}
	meta := res.Meta
	meta["files"] = res.Files
	return &domain.QuantizedModel{
		OutputPath:           fleet.S3URL(a.rt.Bucket, prefix),
		Format:               domain.OutputFormat(plan.Layered.Format),
		FileSize:             res.Size,
		CompressionRatio:     float64(res.Size) / float64(plan.SourceBytes),
		QuantizationMetadata: meta,
		CreatedAt:            time.Now().UTC(),
		SourceModelPath:      source,
		ValidationStatus:     domain.ValidationValid,
	}, nil
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

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "quantfleet_assembler_tasks_total",
			Help: "Assembly tasks settled, by result (completed, failed, malformed, dropped)."}, []string{"result"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "quantfleet_assembler_task_duration_seconds",
			Help: "Wall time of an assembly (compose and validation).", Buckets: prometheus.ExponentialBuckets(0.1, 2, 16)}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "quantfleet_assembler_bytes_total",
			Help: "Bytes of assembled files."}),
	}
	if reg != nil {
		reg.MustRegister(m.jobs, m.seconds, m.bytes)
	}
	return m
}
