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
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/ggufjob"
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

// handleJob reacts to a job record change.
func (d *Dispatcher) handleJob(ctx context.Context, j *domain.QuantizationJob) {
	d.m.observeJob(j)
	switch j.Status {
	case domain.StatusPending:
		d.claim(ctx, j.JobID)
	case domain.StatusRunning:
		d.track(ctx, j.JobID)
	case domain.StatusCancelled, domain.StatusFailed:
		// Neither leaves objects behind; a failed job that is resumed runs again from its source.
		d.untrack(j.JobID)
		key := j.JobID + "@" + j.EndTime.String() // a job resumed and failed again is swept again
		d.mu.Lock()
		first := !d.cleaned[key]
		d.cleaned[key] = true
		d.mu.Unlock()
		if first {
			go d.cleanup(ctx, j.JobID, j.Status, j.EndTime)
		}
	case domain.StatusCompleted:
		d.untrack(j.JobID)
	}
}

var errNotPending = errors.New("job is not pending")

// claim moves a PENDING job to RUNNING; the dispatcher whose update wins drives it.
func (d *Dispatcher) claim(ctx context.Context, id string) {
	_, err := d.rt.Jobs.Update(ctx, id, func(j *domain.QuantizationJob) error {
		if j.Status != domain.StatusPending {
			return errNotPending
		}
		return j.Transition(domain.StatusRunning, time.Now().UTC())
	})
	if err != nil {
		if !errors.Is(err, errNotPending) {
			d.log.Warn("claiming job failed", zap.String("job", id), zap.Error(err))
		}
		return
	}
	d.log.Info("job claimed", zap.String("job", id))
	ev := fleet.NewEvent(id)
	ev.Event = &pb.JobEvent_State{State: &pb.JobStateChanged{From: string(domain.StatusPending), To: string(domain.StatusRunning)}}
	_ = d.rt.PublishEvent(ctx, ev, id+"/running")
	// The RUNNING update arrives through the watch and starts tracking; start now anyway.
	d.track(ctx, id)
}

// track starts driving a RUNNING job unless it is driven already.
func (d *Dispatcher) track(ctx context.Context, id string) *jobState {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.jobs[id]; ok {
		return st
	}
	jctx, cancel := context.WithCancel(ctx)
	st := &jobState{id: id, cancel: cancel, done: map[string]*pb.TaskResult{}, readyCh: make(chan struct{})}
	d.jobs[id] = st
	go d.drive(jctx, st)
	return st
}

func (d *Dispatcher) untrack(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.jobs[id]; ok {
		st.cancel()
		delete(d.jobs, id)
	}
}

func (d *Dispatcher) tracked(id string) *jobState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.jobs[id]
}

// jobState is a driven job.
type jobState struct {
	id      string
	cancel  context.CancelFunc
	readyCh chan struct{} // closed when planned and published

	mu         sync.Mutex
	req        *fleet.JobRequest
	plan       *ggufjob.Plan
	planSum    string // SHA-256 of the plan object
	done       map[string]*pb.TaskResult
	generation uint32
	assembled  bool // assemble task published
	dirty      bool // checkpoint not yet written
	memCur     int64
	memPeak    int64
	memDirty   bool // memory not yet written to the job record
	// idleSamples counts samples in a row that found the job's pool without workers;
	// poolWaiting is set while the job says it waits for one.
	idleSamples int
	poolWaiting bool
}

func (st *jobState) isReady() bool {
	select {
	case <-st.readyCh:
		return true
	default:
		return false
	}
}

// drive prepares a job (request, plan, completion records), publishes its missing tasks and, if
// every task is done already, the assembly.
func (d *Dispatcher) drive(ctx context.Context, st *jobState) {
	log := d.log.With(zap.String("job", st.id))
	err := d.prepare(ctx, st, log)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		msg := d.describe(err)
		log.Error("job failed", zap.String("error", msg))
		if ferr := fleet.FailJob(context.WithoutCancel(ctx), d.rt, st.id, msg); ferr != nil {
			log.Error("marking the job failed", zap.Error(ferr))
		}
		d.untrack(st.id)
		return
	}
	close(st.readyCh)
	d.progress(ctx, st, nil)
	d.maybeAssemble(ctx, st)
}

// describe turns a preparation error into the job's error_message.
func (d *Dispatcher) describe(err error) string {
	if errors.Is(err, blob.ErrUnavailable) {
		return fmt.Sprintf("object storage unreachable (%s): %v", d.cfg.StorageName, err)
	}
	return err.Error()
}

func (d *Dispatcher) prepare(ctx context.Context, st *jobState, log *zap.Logger) error {
	req, err := d.rt.Request(ctx, st.id)
	if err != nil {
		return err
	}
	if err := req.Config.Validate(); err != nil {
		return err
	}
	if req.Pool != "" {
		if err := queue.CheckPool(req.Pool); err != nil {
			return err
		}
	}
	st.req = req
	var plan *ggufjob.Plan
	var sum string
	var ck *Checkpoint
	err = d.retry(ctx, log, st.id, "preparing the job", func() error {
		var err error
		plan, sum, err = ggufjob.ReadPlan(ctx, d.rt.Store, fleet.PlanKey(st.id))
		if errors.Is(err, blob.ErrNotFound) { // never planned
			plan, sum, err = d.plan(ctx, st.id, req, log)
		}
		if err != nil {
			return err
		}
		ck, err = loadCheckpoint(ctx, d.rt.Store, st.id)
		return err
	})
	if err != nil {
		return err
	}
	recs, err := d.rt.Done.ListJob(ctx, st.id)
	if err != nil {
		return err
	}
	st.mu.Lock()
	st.plan, st.planSum = plan, sum
	if ck != nil {
		st.generation = ck.Generation
	}
	for id, b := range recs {
		if r, err := fleet.DecodeResult(b); err == nil {
			if _, ok := plan.Task(id); ok {
				st.done[id] = r
			}
		}
	}
	st.dirty = true
	gen := st.generation
	var missing []ggufjob.Task
	for _, t := range plan.Tasks {
		if st.done[t.ID] == nil {
			missing = append(missing, t)
		}
	}
	runnable := ready(plan, st.done, missing)
	st.mu.Unlock()
	if err := d.writeCheckpoint(ctx, st); err != nil {
		return err
	}
	log.Info("job planned", zap.Int("tasks", len(plan.Tasks)), zap.Int("done", len(plan.Tasks)-len(missing)),
		zap.Uint32("generation", gen))
	return d.publish(ctx, st, runnable, gen)
}

// ready filters tasks that are not done to those that can run now: all of them, except in a
// calibrated GPTQ/AWQ job, whose layers form a chain: there only the first layer not done whose
// predecessor is done (its activations exist).
func ready(p *ggufjob.Plan, done map[string]*pb.TaskResult, tasks []ggufjob.Task) []ggufjob.Task {
	if p.Layered == nil || !p.Layered.Calibrated() {
		return tasks
	}
	for _, t := range tasks {
		if done[t.ID] == nil && (t.Block == 0 || done[ggufjob.LayerTaskID(t.Block-1)] != nil) {
			return []ggufjob.Task{t}
		}
	}
	return nil
}

// publishNext publishes the tasks of a layered job that became runnable (the next layer).
func (d *Dispatcher) publishNext(ctx context.Context, st *jobState) {
	st.mu.Lock()
	if st.plan.Layered == nil || !st.plan.Layered.Calibrated() {
		st.mu.Unlock()
		return
	}
	var missing []ggufjob.Task
	for _, t := range st.plan.Tasks {
		if st.done[t.ID] == nil {
			missing = append(missing, t)
		}
	}
	next := ready(st.plan, st.done, missing)
	gen := st.generation
	st.mu.Unlock()
	if len(next) == 0 {
		return
	}
	if err := d.publish(ctx, st, next, gen); err != nil {
		d.log.Warn("publishing the next layer failed; will retry", zap.String("job", st.id), zap.Error(err))
	}
}

// publish enqueues tasks of generation gen (duplicates of earlier publishes are dropped by the
// stream's de-duplication).
func (d *Dispatcher) publish(ctx context.Context, st *jobState, tasks []ggufjob.Task, gen uint32) error {
	pool := d.pool(st.req)
	if err := queue.EnsurePool(ctx, d.rt.JS, d.cfg.Queue, pool); err != nil {
		return err
	}
	for _, t := range tasks {
		msg := d.tensorTask(st, t, pool, gen)
		b, err := fleet.EncodeTask(msg)
		if err != nil {
			return err
		}
		dup, err := queue.PublishTask(ctx, d.rt.JS, pool, fleet.TaskMsgID(msg), b)
		if err != nil {
			return err
		}
		if !dup {
			d.m.published.WithLabelValues(taskKindLabel(msg.Kind)).Inc()
		}
	}
	return nil
}

// pool is the worker pool of a job's tasks.
func (d *Dispatcher) pool(req *fleet.JobRequest) string {
	if req != nil && req.Pool != "" {
		return req.Pool
	}
	return d.cfg.Pool
}

// watchPools notes in a job that waits on a pool without any worker (none pulling, none running
// a task, for three samples in a row) that it is "waiting for a worker of pool NAME", and clears
// the note once one turns up.
func (d *Dispatcher) watchPools(ctx context.Context, st *jobState) {
	st.mu.Lock()
	pool := d.pool(st.req)
	if len(st.done) == len(st.plan.Tasks) {
		pool = queue.PoolAsm
	}
	st.mu.Unlock()
	idle, err := queue.PoolIdle(ctx, d.rt.JS, pool)
	if err != nil {
		return
	}
	st.mu.Lock()
	if idle {
		st.idleSamples++
	} else {
		st.idleSamples = 0
	}
	set := st.idleSamples == 3
	clear := !idle && st.poolWaiting
	st.poolWaiting = (st.poolWaiting || set) && !clear
	st.mu.Unlock()
	switch {
	case set:
		_ = fleet.SetWaiting(ctx, d.rt, st.id, "waiting for a worker of pool "+pool)
	case clear:
		_ = fleet.SetWaiting(ctx, d.rt, st.id, "")
	}
}

// maxInputsSize bounds the source ranges a task message lists (they are informative: workers find
// the ranges in the checkpoint's headers too), keeping messages far below the 64 KiB limit.
const maxInputsSize = 24 << 10

func (d *Dispatcher) tensorTask(st *jobState, t ggufjob.Task, pool string, gen uint32) *pb.Task {
	p := st.plan
	kind := pb.TaskKind_TASK_KIND_GGUF_TENSORS
	if p.Layered != nil {
		kind = pb.TaskKind_TASK_KIND_GPTQ_LAYER
		if p.Layered.Format == string(domain.FormatAWQ) {
			kind = pb.TaskKind_TASK_KIND_AWQ_LAYER
		}
	}
	msg := &pb.Task{JobId: st.id, TaskId: t.ID, Generation: gen, Kind: kind, Pool: pool,
		Plan:       &pb.PlanRef{Key: fleet.PlanKey(st.id), Sha256: st.planSum},
		Output:     &pb.OutputSpec{Prefix: fleet.ShardPrefix(st.id), Alignment: gguf.Alignment},
		LayerIndex: int32(t.Block), TotalTasks: int32(len(p.Tasks)), CreatedAt: timestamppb.Now(),
		Params: map[string]string{fleet.ParamLabel: t.Label, fleet.ParamModelName: p.ModelName,
			fleet.ParamSourceBucket: p.SourceBucket, fleet.ParamSourcePrefix: p.SourcePrefix}}
	for _, tp := range p.Tensors[t.First : t.First+t.Count] {
		msg.Plan.Entries = append(msg.Plan.Entries, tp.Name)
	}
	size := 0
	for _, in := range t.Inputs {
		size += len(in.Name) + len(p.SourcePrefix) + len(in.File) + 24
		if size > maxInputsSize {
			msg.Inputs = nil
			break
		}
		msg.Inputs = append(msg.Inputs, &pb.NamedRange{Name: in.Name, Range: &pb.ObjectRange{
			Key: p.SourcePrefix + "/" + in.File, Offset: in.Offset, Length: in.Length}})
	}
	return msg
}

// retry runs f for job until it succeeds or fails permanently: transient failures are waited out
// for the backoff budget, errors of no class are tried Retries times.
func (d *Dispatcher) retry(ctx context.Context, log *zap.Logger, job, what string, f func() error) error {
	delay := d.cfg.RetryBackoff
	var err error
	for attempt := 1; attempt <= d.cfg.Retries; attempt++ {
		if err = d.cfg.Backoff.RetryJob(ctx, d.rt, job, log, f); err == nil || fault.Permanent(err) || ctx.Err() != nil {
			return err
		}
		if attempt == d.cfg.Retries {
			break
		}
		log.Warn(what+" failed; retrying", zap.Int("attempt", attempt), zap.Duration("delay", delay), zap.Error(err))
		sleep(ctx, delay)
		delay = min(2*delay, 30*time.Second)
	}
	return err
}

// handleEvent applies a worker's event: a finished task, a failed attempt, progress and memory.
func (d *Dispatcher) handleEvent(ctx context.Context, m jetstream.Msg) {
	ev, err := fleet.DecodeEvent(m.Data())
	if err != nil {
		d.log.Warn("dropping undecodable event", zap.String("subject", m.Subject()), zap.Error(err))
		_ = m.Term()
		return
	}
	if m.Subject() != queue.EventSubject(ev.JobId, fleet.EventKind(ev)) {
		// An event about one job on another job's subject: forged or broken.
		d.log.Warn("refusing an event whose subject names another job", zap.String("subject", m.Subject()), zap.String("job", ev.JobId))
		_ = m.Term()
		return
	}
	st := d.tracked(ev.JobId)
	if st == nil {
		active, err := fleet.JobActive(ctx, d.rt, ev.JobId)
		if err != nil {
			_ = m.NakWithDelay(time.Second)
			return
		}
		if !active {
			_ = m.Ack()
			return
		}
		st = d.track(ctx, ev.JobId)
	}
	if !st.isReady() {
		_ = m.NakWithDelay(500 * time.Millisecond) // applied once the job is prepared
		return
	}
	switch e := ev.Event.(type) {
	case *pb.JobEvent_TaskFailed:
		f := e.TaskFailed
		d.m.failed.Inc()
		// The worker fails the job itself; this is the backup when it could not. Only a failure of
		// a task of this job's plan, of the current generation and not done, is believed.
		st.mu.Lock()
		t, inPlan := st.plan.Task(f.TaskId)
		genuine := inPlan && f.Generation == st.generation && st.done[f.TaskId] == nil
		st.mu.Unlock()
		if f.Permanent && !genuine {
			d.log.Warn("refusing a permanent failure of a task that is not running in this job", zap.String("job", ev.JobId),
				zap.String("task", f.TaskId), zap.Uint32("generation", f.Generation))
		} else if f.Permanent {
			_ = fleet.FailJob(ctx, d.rt, ev.JobId, fleet.TaskErrorMessage(f.TaskId, t.Label, f.Delivery, f.ErrorMessage))
		}
	case *pb.JobEvent_TaskProgress:
		p := e.TaskProgress
		st.mu.Lock()
		st.memCur, st.memPeak, st.memDirty = p.MemoryBytes, max(st.memPeak, p.PeakMemoryBytes), true
		st.mu.Unlock()
	case *pb.JobEvent_TaskDone:
		// Trust the recorded winner, not the event: without a record the event means nothing.
		b, ok, err := d.rt.Done.Get(ctx, ev.JobId, e.TaskDone.GetTaskId())
		if err != nil {
			_ = m.NakWithDelay(time.Second)
			return
		}
		res, derr := fleet.DecodeResult(b)
		if !ok || derr != nil || res.JobId != ev.JobId {
			d.log.Warn("ignoring task_done without a completion record", zap.String("job", ev.JobId), zap.String("task", e.TaskDone.GetTaskId()))
			_ = m.Ack()
			return
		}
		d.progress(ctx, st, res)
		d.publishNext(ctx, st)
		d.maybeAssemble(ctx, st)
	}
	_ = m.Ack()
}

// progress records a finished task (res may be nil) and the workers' memory in the job record.
func (d *Dispatcher) progress(ctx context.Context, st *jobState, res *pb.TaskResult) {
	st.mu.Lock()
	if res != nil {
		if _, ok := st.plan.Task(res.TaskId); !ok || len(res.Shards) == 0 {
			st.mu.Unlock()
			return
		}
		if st.done[res.TaskId] == nil {
			d.m.done.Inc()
			st.dirty = true // a task seen again (a late event) changes no checkpoint
		}
		st.done[res.TaskId] = res
		st.memPeak = max(st.memPeak, res.PeakMemoryBytes)
	}
	done, total := len(st.done), len(st.plan.Tasks)
	memCur, memPeak := st.memCur, st.memPeak
	st.memDirty = false
	st.mu.Unlock()
	ckURL := fleet.S3URL(d.rt.Bucket, fleet.CheckpointKey(st.id))
	_, err := d.rt.Jobs.Update(ctx, st.id, func(j *domain.QuantizationJob) error {
		if j.Status != domain.StatusRunning {
			return errNotRunning
		}
		j.SetProgress(done, total, time.Now().UTC())
		if done == total {
			// Assembly is left: say so instead of 100%.
			j.ProgressPercentage = min(j.ProgressPercentage, 99)
		}
		j.CheckpointPath = ckURL
		if memCur > 0 {
			j.ObserveMemory(memCur)
		}
		j.PeakMemoryUsage = max(j.PeakMemoryUsage, memPeak)
		return nil
	})
	if err != nil && !errors.Is(err, errNotRunning) {
		d.log.Warn("updating progress failed", zap.String("job", st.id), zap.Error(err))
	}
}

var errNotRunning = errors.New("job is not running")

// maybeAssemble publishes the assembly once every task is done.
func (d *Dispatcher) maybeAssemble(ctx context.Context, st *jobState) {
	st.mu.Lock()
	if st.assembled || len(st.done) < len(st.plan.Tasks) {
		st.mu.Unlock()
		return
	}
	gen := st.generation
	st.mu.Unlock()
	if err := d.writeCheckpoint(ctx, st); err != nil {
		d.log.Warn("writing checkpoint failed", zap.String("job", st.id), zap.Error(err))
	}
	name := st.req.Config.OutputName
	if name == "" {
		name = quantize.DefaultOutputName(st.req.Name, st.plan.Level, st.req.Config.TargetFormat)
	}
	p := st.plan
	msg := &pb.Task{JobId: st.id, TaskId: "assemble", Generation: gen, Kind: pb.TaskKind_TASK_KIND_ASSEMBLE, Pool: queue.PoolAsm,
		Plan:       &pb.PlanRef{Key: fleet.PlanKey(st.id), Sha256: st.planSum},
		Output:     &pb.OutputSpec{Prefix: fleet.OutputPrefix(st.id), Alignment: gguf.Alignment},
		LayerIndex: -1, TotalTasks: int32(len(p.Tasks)), CreatedAt: timestamppb.Now(),
		Params: map[string]string{fleet.ParamLabel: "assemble", fleet.ParamOutputName: name, fleet.ParamHeader: fleet.HeaderKey(st.id),
			fleet.ParamModelName: p.ModelName, fleet.ParamSourceBucket: p.SourceBucket, fleet.ParamSourcePrefix: p.SourcePrefix}}
	b, err := fleet.EncodeTask(msg)
	if err == nil {
		_, err = queue.PublishTask(ctx, d.rt.JS, queue.PoolAsm, fleet.TaskMsgID(msg), b)
	}
	if err != nil {
		d.log.Warn("publishing the assembly failed; will retry", zap.String("job", st.id), zap.Error(err))
		return
	}
	d.m.published.WithLabelValues("assemble").Inc()
	st.mu.Lock()
	st.assembled = true
	st.mu.Unlock()
	d.log.Info("all shards done: assembly queued", zap.String("job", st.id))
}

// handleDeadLetter fails the job of a dead task.
func (d *Dispatcher) handleDeadLetter(ctx context.Context, m jetstream.Msg) {
	d.m.deadLetters.Inc()
	reason := m.Headers().Get(queue.HeaderDLQReason)
	job, task := "", ""
	if t, err := fleet.DecodeTask(m.Data()); err == nil {
		job, task = t.JobId, t.TaskId
		if l := fleet.TaskLabel(t); l != task {
			task += " (" + l + ")"
		}
	}
	if job == "" {
		d.log.Warn("dead letter of an unknown job", zap.String("reason", reason))
		_ = m.Ack()
		return
	}
	switch ok, err := d.genuine(ctx, m.Data()); {
	case err != nil:
		_ = m.NakWithDelay(time.Second)
		return
	case !ok:
		// Stale (an earlier generation) or forged: it must not fail the job.
		d.log.Warn("ignoring the dead letter of a task the job is not running", zap.String("job", job), zap.String("task", task),
			zap.String("reason", reason))
		_ = m.Ack()
		return
	}
	msg := fmt.Sprintf("task %s was dead-lettered: %s", task, reason)
	if err := fleet.FailJob(ctx, d.rt, job, msg); err != nil && !errors.Is(err, queue.ErrJobNotFound) {
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

// genuine reports whether data is a task this dispatcher published for an active job in the
// job's current generation and plan (assemblies included).
func (d *Dispatcher) genuine(ctx context.Context, data []byte) (bool, error) {
	t, err := fleet.DecodeTask(data)
	if err != nil {
		return false, nil
	}
	active, err := fleet.JobActive(ctx, d.rt, t.JobId)
	if err != nil || !active {
		return false, err
	}
	st := d.track(ctx, t.JobId)
	select {
	case <-st.readyCh:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-time.After(10 * time.Second):
		return false, errors.New("job not prepared yet")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	_, inPlan := st.plan.Task(t.TaskId)
	if t.Kind == pb.TaskKind_TASK_KIND_ASSEMBLE {
		inPlan = st.assembled // queued by this dispatcher only once every task was done
	}
	return inPlan && t.Generation == st.generation && t.GetPlan().GetSha256() == st.planSum, nil
}

// tick writes dirty checkpoints, reconciles completion records and samples the queue lag.
func (d *Dispatcher) tick(ctx context.Context) {
	ckT := time.NewTicker(time.Second)
	defer ckT.Stop()
	recT := time.NewTicker(d.cfg.Reconcile)
	defer recT.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ckT.C:
			for _, st := range d.snapshot() {
				if !st.isReady() {
					continue
				}
				if err := d.writeCheckpoint(ctx, st); err != nil {
					d.log.Warn("writing checkpoint failed", zap.String("job", st.id), zap.Error(err))
				}
				st.mu.Lock()
				memDirty := st.memDirty
				st.mu.Unlock()
				if memDirty {
					d.progress(ctx, st, nil)
				}
				d.watchPools(ctx, st)
			}
			d.sampleLag(ctx)
		case <-recT.C:
			for _, st := range d.snapshot() {
				if st.isReady() {
					d.reconcile(ctx, st)
				}
			}
		}
	}
}

func (d *Dispatcher) snapshot() []*jobState {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*jobState, 0, len(d.jobs))
	for _, st := range d.jobs {
		out = append(out, st)
	}
	return out
}

// reconcile picks up completion records whose events were lost.
func (d *Dispatcher) reconcile(ctx context.Context, st *jobState) {
	recs, err := d.rt.Done.ListJob(ctx, st.id)
	if err != nil {
		return
	}
	for id, b := range recs {
		st.mu.Lock()
		known := st.done[id] != nil
		st.mu.Unlock()
		if known {
			continue
		}
		if r, err := fleet.DecodeResult(b); err == nil {
			d.log.Info("found a completion without its event", zap.String("job", st.id), zap.String("task", id))
			d.progress(ctx, st, r)
		}
	}
	d.publishNext(ctx, st)
	d.maybeAssemble(ctx, st)
}

func (d *Dispatcher) sampleLag(ctx context.Context) {
	for _, pool := range []string{d.cfg.Pool, queue.PoolAsm} {
		c, err := d.rt.JS.Consumer(ctx, queue.TasksStream, queue.ConsumerName(pool))
		if err != nil {
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			continue
		}
		d.m.pending.WithLabelValues(pool).Set(float64(info.NumPending))
		d.m.ackPending.WithLabelValues(pool).Set(float64(info.NumAckPending))
	}
}

// cleanup removes a cancelled or failed job's objects and completion records, twice: now, and
// after the tasks still running have noticed the end. A job that left that state meanwhile (a
// resumed failed job) is left alone.
func (d *Dispatcher) cleanup(ctx context.Context, id string, status domain.JobStatus, ended time.Time) {
	for i, wait := range []time.Duration{0, d.cfg.CleanupGrace} {
		sleep(ctx, wait)
		if ctx.Err() != nil {
			return
		}
		if j, _, err := d.rt.Jobs.Get(ctx, id); err != nil || j.Status != status || !j.EndTime.Equal(ended) {
			return
		}
		n := 0
		for _, p := range []string{fleet.JobPrefix(id), fleet.OutputPrefix(id)} {
			err := d.cfg.Backoff.Retry(ctx, func() error { // storage that is down is waited for
				k, err := d.rt.Store.DeletePrefix(ctx, p)
				n += k
				return err
			}, nil)
			if err != nil {
				d.log.Warn("removing an ended job's objects failed", zap.String("job", id), zap.Error(err))
			}
		}
		if err := d.rt.Done.DeleteJob(ctx, id); err != nil {
			d.log.Warn("removing an ended job's records failed", zap.String("job", id), zap.Error(err))
		}
		// Tasks still queued (a pool without workers keeps them forever) go too.
		req, _ := d.rt.Request(ctx, id)
		for _, pool := range []string{d.pool(req), queue.PoolAsm} {
			k, err := queue.DeleteTasks(ctx, d.rt.JS, pool, func(b []byte) bool {
				t, err := fleet.DecodeTask(b)
				return err == nil && t.JobId == id
			})
			if err != nil {
				d.log.Warn("removing an ended job's tasks failed", zap.String("job", id), zap.Error(err))
			}
			n += k
		}
		d.log.Info("ended job cleaned up", zap.String("job", id), zap.String("status", string(status)), zap.Int("objects", n), zap.Int("sweep", i+1))
	}
}

// ControlSubject is the request subject of job control requests (pb.JobControlRequest →
// pb.JobReply). The dispatcher serves ACTION_RESUME: a RUNNING job whose processes stopped gets its
// finished tasks re-verified (their shards must exist with the recorded size) and only the others
// queued again; a config, when given, must match the job's checkpoint snapshot.
const ControlSubject = "qf.ctl.job"

// Error codes of pb.JobReply.
const (
	CodeInvalidConfig = "invalid_config"
	CodeNotFound      = "not_found"
	CodeConflict      = "conflict"
	CodeInternal      = "internal"
)

func (d *Dispatcher) serveControl(ctx context.Context, m *nats.Msg) {
	var req pb.JobControlRequest
	reply := func(r *pb.JobReply) {
		b, _ := proto.Marshal(r)
		_ = m.Respond(b)
	}
	if err := proto.Unmarshal(m.Data, &req); err != nil || !fleet.ValidToken(req.JobId) {
		reply(&pb.JobReply{JobId: req.JobId, Error: "malformed job control request", ErrorCode: CodeInvalidConfig})
		return
	}
	if req.Action != pb.JobControlRequest_ACTION_RESUME {
		reply(&pb.JobReply{JobId: req.JobId, Error: fmt.Sprintf("action %s is not served by the dispatcher", req.Action), ErrorCode: CodeInvalidConfig})
		return
	}
	var cfg *domain.QuantizationConfig
	if req.Config != nil {
		c, err := fleet.ConfigFromProto(req.Config)
		if err != nil {
			reply(&pb.JobReply{JobId: req.JobId, Error: err.Error(), ErrorCode: CodeInvalidConfig})
			return
		}
		cfg = &c
	}
	status, err := d.resume(ctx, req.JobId, cfg)
	r := &pb.JobReply{JobId: req.JobId, Status: string(status)}
	if err != nil {
		r.Error = err.Error()
		switch {
		case errors.Is(err, domain.ErrConfigMismatch), errors.Is(err, errCannotResume):
			r.ErrorCode = CodeConflict
		case errors.Is(err, queue.ErrJobNotFound):
			r.ErrorCode = CodeNotFound
		case errors.Is(err, domain.ErrInvalidConfig):
			r.ErrorCode = CodeInvalidConfig
		default:
			r.ErrorCode = CodeInternal
		}
	}
	reply(r)
}

var errCannotResume = errors.New("only a pending, running or failed job can be resumed")

func (d *Dispatcher) resume(ctx context.Context, id string, cfg *domain.QuantizationConfig) (domain.JobStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	j, _, err := d.rt.Jobs.Get(ctx, id)
	if err != nil {
		return "", err
	}
	if j.Status == domain.StatusCompleted || j.Status == domain.StatusCancelled {
		return j.Status, fmt.Errorf("%w: job %s is %s", errCannotResume, j.JobID, j.Status)
	}
	if cfg != nil {
		if err := cfg.Normalize(); err != nil {
			return j.Status, err
		}
		snap := domain.Checkpoint{CheckpointID: id}
		if j.Config != nil {
			snap.ConfigSnapshot = *j.Config
		}
		if ck, err := loadCheckpoint(ctx, d.rt.Store, id); err == nil && ck != nil {
			snap = ck.Checkpoint
		}
		if err := snap.CheckResume(*cfg); err != nil {
			return j.Status, err
		}
	}
	if j.Status == domain.StatusFailed {
		// FAILED → PENDING: the job runs again (from its source: a failed job's objects are gone).
		j, err = d.rt.Jobs.Update(ctx, id, func(j *domain.QuantizationJob) error {
			return j.TransitionWhy(domain.StatusPending, "resumed", time.Now().UTC())
		})
		if err != nil {
			return domain.StatusFailed, err
		}
		d.log.Info("failed job resumed", zap.String("job", id))
	}
	if j.Status == domain.StatusPending {
		d.claim(ctx, j.JobID)
	}
	st := d.track(ctx, j.JobID)
	select {
	case <-st.readyCh:
	case <-ctx.Done():
		return j.Status, fmt.Errorf("job %s is still being prepared", j.JobID)
	}
	// Verify the recorded shards; drop records whose shard is gone or has the wrong size.
	st.mu.Lock()
	plan := st.plan
	done := make(map[string]*pb.TaskResult, len(st.done))
	for k, v := range st.done {
		done[k] = v
	}
	st.mu.Unlock()
	var missing []ggufjob.Task
	for _, t := range plan.Tasks {
		ok := done[t.ID] != nil
		if ok && plan.Layered != nil {
			// A layer's result and the activations it wrote must both be there.
			for _, sh := range done[t.ID].Shards {
				oi, err := d.rt.Store.Stat(ctx, sh.Key)
				ok = ok && err == nil && oi.Size == sh.Size
			}
			if !ok {
				_ = d.taskKV.Purge(ctx, st.id+"."+t.ID)
			}
		} else if ok {
			oi, err := d.rt.Store.Stat(ctx, fleet.ShardKey(st.id, t.ID))
			ok = err == nil && uint64(oi.Size) == t.Size
			if !ok {
				_ = d.taskKV.Purge(ctx, st.id+"."+t.ID)
			}
		}
		if !ok {
			missing = append(missing, t)
		}
	}
	st.mu.Lock()
	for _, t := range missing {
		delete(st.done, t.ID)
	}
	runnable := ready(plan, st.done, missing)
	st.generation++
	gen := st.generation
	st.assembled = false // with every shard there, the assembly is queued again in this generation
	st.dirty = true
	st.mu.Unlock()
	if err := d.writeCheckpoint(ctx, st); err != nil {
		return j.Status, err
	}
	if err := d.publish(ctx, st, runnable, gen); err != nil {
		return j.Status, err
	}
	d.progress(ctx, st, nil)
	d.maybeAssemble(ctx, st)
	d.log.Info("job resumed", zap.String("job", st.id), zap.Int("requeued", len(missing)), zap.Uint32("generation", gen))
	return domain.StatusRunning, nil
}

func taskKindLabel(k pb.TaskKind) string {
	switch k {
	case pb.TaskKind_TASK_KIND_GPTQ_LAYER:
		return "gptq_layer"
	case pb.TaskKind_TASK_KIND_AWQ_LAYER:
		return "awq_layer"
	case pb.TaskKind_TASK_KIND_ASSEMBLE:
		return "assemble"
	}
	return "gguf_tensors"
}
