// Package dispatcher is the fleet's coordinator. It creates the JetStream layout, takes PENDING
// jobs from the job store (first dispatcher to move a job to RUNNING owns it), resolves the source
// model into object storage (mirroring Hub models once), plans the whole job up front, publishes
// one task per transformer block (and per large tensor outside the blocks) with Nats-Msg-Id
// de-duplication, follows the workers' results, keeps progress and a Checkpoint record, and hands
// the job to the assembler when every shard exists. After a restart it picks its RUNNING jobs up
// from the job store, the task-completion records and the checkpoints.
package dispatcher

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
)

// Config tunes a Dispatcher. Zero fields take the defaults in brackets.
type Config struct {
	// Queue is the JetStream layout (AckWait, MaxDeliver, replicas...) Setup applies.
	Queue queue.Config
	// Pool is the worker pool of tasks whose request names none [cpu].
	Pool string
	// Hub downloads Hub models to mirror them (its token is the dispatcher's own). Nil: a default
	// client (HF_ENDPOINT/HF_TOKEN are not read here; the service's main sets them).
	Hub *hub.Client
	// TempDir holds the small model files while planning [os.TempDir()].
	TempDir string
	// Backoff waits out transient failures (object storage or NATS down) while preparing a job;
	// the job shows what it waits for, and fails once Backoff.Budget is spent.
	Backoff fleet.Backoff
	// Retries is how many times preparing a job is tried on errors nobody classified (neither
	// transient nor permanent) [5]; RetryBackoff is the first delay, doubled each time up to 30 s [1 s].
	Retries      int
	RetryBackoff time.Duration
	// CleanupGrace is when a cancelled job's objects are swept a second time, after tasks that
	// were running have stopped [AckWait + 5 s].
	CleanupGrace time.Duration
	// Reconcile is how often the dispatcher re-reads its jobs' completion records, in case an
	// event was lost [10 s].
	Reconcile time.Duration
	// StorageName describes the object storage in error messages (e.g. the endpoint).
	StorageName string
}

// Dispatcher coordinates jobs.
type Dispatcher struct {
	rt  *fleet.Runtime
	cfg Config
	log *zap.Logger
	m   *metrics

	taskKV jetstream.KeyValue

	mu      sync.Mutex
	jobs    map[string]*jobState
	cleaned map[string]bool
	ready   chan struct{}
}

// New returns a dispatcher; reg receives its metrics (nil: not registered).
func New(rt *fleet.Runtime, cfg Config, reg prometheus.Registerer, log *zap.Logger) *Dispatcher {
	if cfg.Pool == "" {
		cfg.Pool = queue.PoolCPU
	}
	if cfg.Hub == nil {
		cfg.Hub = &hub.Client{}
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = time.Second
	}
	ackWait := cfg.Queue.AckWait
	if ackWait == 0 {
		ackWait = time.Minute
	}
	if cfg.CleanupGrace <= 0 {
		cfg.CleanupGrace = ackWait + 5*time.Second
	}
	if cfg.Reconcile <= 0 {
		cfg.Reconcile = 10 * time.Second
	}
	if cfg.StorageName == "" {
		cfg.StorageName = "bucket " + rt.Bucket
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Dispatcher{rt: rt, cfg: cfg, log: log, m: newMetrics(reg), jobs: map[string]*jobState{},
		cleaned: map[string]bool{}, ready: make(chan struct{})}
}

// Ready is closed once the JetStream layout exists and the dispatcher follows jobs.
func (d *Dispatcher) Ready() <-chan struct{} { return d.ready }

// Run coordinates until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	for {
		err := fleet.Setup(ctx, d.rt.JS, d.cfg.Queue)
		if err == nil {
			break
		}
		d.log.Warn("creating the JetStream layout failed; retrying", zap.Error(err))
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := d.rt.Bind(ctx); err != nil {
		return err
	}
	kv, err := d.rt.JS.KeyValue(ctx, queue.TaskDoneBucket)
	if err != nil {
		return err
	}
	d.taskKV = kv
	events, err := d.eventsConsumer(ctx)
	if err != nil {
		return err
	}
	dlq, err := d.dlqConsumer(ctx)
	if err != nil {
		return err
	}
	updates, err := d.rt.Jobs.Watch(ctx, "")
	if err != nil {
		return err
	}
	if _, err := queue.SweepExhausted(ctx, d.rt.NC, d.rt.JS, d.log); err != nil {
		return err
	}
	sub, err := d.rt.NC.QueueSubscribe(ControlSubject, "dispatchers", func(m *nats.Msg) { d.serveControl(ctx, m) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(func(ctx context.Context) { d.consume(ctx, events, d.handleEvent) })
	run(func(ctx context.Context) { d.consume(ctx, dlq, d.handleDeadLetter) })
	run(d.tick)
	d.log.Info("dispatcher started", zap.String("pool", d.cfg.Pool))
	close(d.ready)
	for u := range updates {
		d.handleJob(ctx, u.Job)
	}
	wg.Wait()
	d.mu.Lock()
	for _, st := range d.jobs {
		st.cancel()
	}
	d.mu.Unlock()
	d.log.Info("dispatcher stopped")
	return nil
}

func (d *Dispatcher) eventsConsumer(ctx context.Context) (jetstream.Consumer, error) {
	s, err := d.rt.JS.Stream(ctx, queue.EventsStream)
	if err != nil {
		return nil, err
	}
	return s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:     "dispatcher",
		Description: "quantfleet dispatcher: task results",
		FilterSubjects: []string{queue.EventSubject("*", fleet.EventTaskDone), queue.EventSubject("*", fleet.EventTaskFailed),
			queue.EventSubject("*", fleet.EventTaskProgress)},
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
	})
}

func (d *Dispatcher) dlqConsumer(ctx context.Context) (jetstream.Consumer, error) {
	s, err := d.rt.JS.Stream(ctx, queue.DLQStream)
	if err != nil {
		return nil, err
	}
	return s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "dispatcher-dlq",
		Description:   "quantfleet dispatcher: dead tasks fail their jobs",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
	})
}

// consume runs handle on every message of cons until ctx ends. handle acks, naks or terms.
func (d *Dispatcher) consume(ctx context.Context, cons jetstream.Consumer, handle func(context.Context, jetstream.Msg)) {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			if ctx.Err() == nil {
				d.log.Debug("fetch failed", zap.Error(err))
				sleep(ctx, time.Second)
			}
			continue
		}
		for m := range batch.Messages() {
			handle(ctx, m)
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) {
			d.log.Debug("fetch ended", zap.Error(err))
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// ControlSubject is the request subject of job control requests (pb.JobControlRequest →
// pb.JobReply). The dispatcher serves ACTION_RESUME: a RUNNING job whose processes stopped gets its
// finished tasks re-verified (their shards must exist with the recorded size) and only the others
// queued again; a config, when given, must match the job's checkpoint snapshot.
const ControlSubject = "qf.ctl.job"
