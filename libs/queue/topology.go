// Package queue is quantfleet's JetStream layout and the code that uses it: task and event streams,
// per-pool durable pull consumers, a dead-letter stream, the job-state KV bucket (JobStore) and the
// task-completion KV bucket (TaskDone), plus the worker-side slot loop (Worker).
//
// Messages are opaque bytes here (the fleet encodes them with the protobufs of quantfleet.dev/proto).
//
// Layout (distributed.md §1):
//
//	QF_TASKS     WorkQueue, qf.tasks.<pool>, Duplicates 1h, MaxMsgSize 64 KiB, DiscardNew
//	             consumers pool-<pool>: AckExplicit, AckWait 60s, MaxDeliver 5, MaxAckPending cap, no BackOff
//	QF_EVENTS    Limits, qf.events.<job>.<kind>, MaxAge 7 d
//	QF_DLQ       Limits, qf.dlq.<pool>, MaxAge 14 d
//	QF_JOBS      KV: <job id> → domain.QuantizationJob (JSON), revision-checked updates
//	QF_TASKDONE  KV: <job id>.<task id> → completion record; Create, so the first attempt wins
package queue

import (
	"context"
	"fmt"
	"time"

	"quantfleet.dev/libs/fault"
	pb "quantfleet.dev/proto/quantfleet/v1"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream objects.
const (
	TasksStream    = "QF_TASKS"
	EventsStream   = "QF_EVENTS"
	DLQStream      = "QF_DLQ"
	JobsBucket     = "QF_JOBS"
	TaskDoneBucket = "QF_TASKDONE"

	taskSubjectPrefix  = "qf.tasks."
	eventSubjectPrefix = "qf.events."
	dlqSubjectPrefix   = "qf.dlq."
)

// Worker pools. A pool is a capability class of workers; each has its own consumer.
const (
	PoolCPU = "cpu"
	PoolGPU = "gpu"
	PoolAsm = "asm"
)

// DefaultPools are the pools Setup creates consumers for unless told otherwise.
var DefaultPools = []string{PoolCPU, PoolGPU, PoolAsm}

// ErrInvalidName is returned for a pool, job, task or event kind that is not a single subject token.
var ErrInvalidName = fault.New(fault.ErrBadInput, "queue: invalid name")

// checkToken accepts one NATS subject token that is also a KV key segment (the messages' own
// name rule).
func checkToken(what, s string) error {
	if !pb.ValidName(s) {
		return fmt.Errorf("%w: %s %q (want 1-128 of A-Z a-z 0-9 _ -)", ErrInvalidName, what, s)
	}
	return nil
}

// TaskSubject is the subject tasks for pool are published on.
func TaskSubject(pool string) string { return taskSubjectPrefix + pool }

// DLQSubject is the subject dead tasks of pool are moved to.
func DLQSubject(pool string) string { return dlqSubjectPrefix + pool }

// EventSubject is the subject of events of kind about job; EventSubject(job, ">") follows a job.
func EventSubject(job, kind string) string { return eventSubjectPrefix + job + "." + kind }

// ConsumerName is the durable consumer of pool.
func ConsumerName(pool string) string { return "pool-" + pool }

// Config tunes Setup. Zero fields take the defaults in brackets.
type Config struct {
	Pools         []string              // [DefaultPools]
	Replicas      int                   // [1]; 3 on a clustered server
	Storage       jetstream.StorageType // [FileStorage]
	AckWait       time.Duration         // [60 s]; workers heartbeat every AckWait/4
	MaxDeliver    int                   // [5]
	MaxAckPending int                   // [256]: fleet-wide in-flight cap per pool
	Duplicates    time.Duration         // [1 h]: Nats-Msg-Id de-duplication window
	MaxTasks      int64                 // [0 = unlimited] backlog cap; publishes fail beyond it
	EventsMaxAge  time.Duration         // [7 d]
	DLQMaxAge     time.Duration         // [14 d]
	JobsHistory   uint8                 // [5] revisions kept per job
}

func (c Config) withDefaults() Config {
	if len(c.Pools) == 0 {
		c.Pools = DefaultPools
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.AckWait == 0 {
		c.AckWait = 60 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 5
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 256
	}
	if c.Duplicates == 0 {
		c.Duplicates = time.Hour
	}
	if c.EventsMaxAge == 0 {
		c.EventsMaxAge = 7 * 24 * time.Hour
	}
	if c.DLQMaxAge == 0 {
		c.DLQMaxAge = 14 * 24 * time.Hour
	}
	if c.JobsHistory == 0 {
		c.JobsHistory = 5
	}
	return c
}

// MaxTaskSize is the largest task message: tasks carry references (object keys, byte ranges),
// never tensors.
const MaxTaskSize = 64 << 10

// TasksStreamConfig returns the QF_TASKS configuration.
func (c Config) TasksStreamConfig() jetstream.StreamConfig {
	c = c.withDefaults()
	maxMsgs := c.MaxTasks
	if maxMsgs == 0 {
		maxMsgs = -1
	}
	return jetstream.StreamConfig{
		Name:        TasksStream,
		Description: "quantfleet tasks, one subject per worker pool",
		Subjects:    []string{taskSubjectPrefix + "*"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     c.Storage,
		Replicas:    c.Replicas,
		Discard:     jetstream.DiscardNew, // a full queue refuses new tasks instead of dropping pending ones
		MaxMsgs:     maxMsgs,
		MaxMsgSize:  MaxTaskSize,
		Duplicates:  c.Duplicates,
	}
}

// ConsumerConfig returns the durable consumer configuration of pool.
func (c Config) ConsumerConfig(pool string) jetstream.ConsumerConfig {
	c = c.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(pool),
		Description:   "quantfleet " + pool + " workers",
		FilterSubject: TaskSubject(pool),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		// No BackOff: it would replace AckWait and bound the heartbeat interval; retry delays use
		// NakWithDelay. No InactiveThreshold: a busy durable must never be reaped.
	}
}

// Setup creates or updates every stream, consumer and KV bucket of the layout. It is idempotent;
// run it from one place (the dispatcher or an init step), never from workers, which only bind.
func Setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg = cfg.withDefaults()
	for _, p := range cfg.Pools {
		if err := checkToken("pool", p); err != nil {
			return err
		}
	}
	tasks, err := js.CreateOrUpdateStream(ctx, cfg.TasksStreamConfig())
	if err != nil {
		return fmt.Errorf("queue: stream %s: %w", TasksStream, err)
	}
	for _, p := range cfg.Pools {
		if _, err := tasks.CreateOrUpdateConsumer(ctx, cfg.ConsumerConfig(p)); err != nil {
			return fmt.Errorf("queue: consumer %s: %w", ConsumerName(p), err)
		}
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventsStream,
		Description: "quantfleet job and task events",
		Subjects:    []string{eventSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.EventsMaxAge,
		Duplicates:  min(cfg.Duplicates, cfg.EventsMaxAge),
	}); err != nil {
		return fmt.Errorf("queue: stream %s: %w", EventsStream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        DLQStream,
		Description: "quantfleet dead tasks: malformed or out of attempts",
		Subjects:    []string{dlqSubjectPrefix + "*"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.DLQMaxAge,
	}); err != nil {
		return fmt.Errorf("queue: stream %s: %w", DLQStream, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: JobsBucket, Description: "quantfleet jobs", History: cfg.JobsHistory,
		Storage: cfg.Storage, Replicas: cfg.Replicas,
	}); err != nil {
		return fmt.Errorf("queue: kv %s: %w", JobsBucket, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: TaskDoneBucket, Description: "quantfleet task completions (first attempt wins)",
		Storage: cfg.Storage, Replicas: cfg.Replicas,
	}); err != nil {
		return fmt.Errorf("queue: kv %s: %w", TaskDoneBucket, err)
	}
	return nil
}

// BindConsumer returns pool's consumer without changing its configuration (workers use this).
func BindConsumer(ctx context.Context, js jetstream.JetStream, pool string) (jetstream.Consumer, error) {
	if err := checkToken("pool", pool); err != nil {
		return nil, err
	}
	c, err := js.Consumer(ctx, TasksStream, ConsumerName(pool))
	if err != nil {
		return nil, fmt.Errorf("queue: bind consumer %s (has Setup run?): %w", ConsumerName(pool), err)
	}
	return c, nil
}
