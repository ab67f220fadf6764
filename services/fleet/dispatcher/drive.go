package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/progress"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/kinds"
)

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
	st := &jobState{id: id, cancel: cancel, done: map[string]*pb.TaskResult{}, published: map[string]uint32{}, readyCh: make(chan struct{})}
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

	mu      sync.Mutex
	req     *fleet.JobRequest
	plan    *fleet.Plan
	kind    fleet.Kind
	planSum string // SHA-256 of the plan object
	// published holds the generation each task was last published in.
	published  map[string]uint32
	done       map[string]*pb.TaskResult
	layers     *progress.Layers // whole layers complete, from done
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
	if err := req.Validate(); err != nil {
		return err
	}
	if req.Pool != "" {
		if err := queue.CheckPool(req.Pool); err != nil {
			return err
		}
	}
	st.req = req
	var plan *fleet.Plan
	var kind fleet.Kind
	var sum string
	var ck *Checkpoint
	err = d.retry(ctx, log, st.id, "preparing the job", func() error {
		var err error
		plan, kind, sum, err = kinds.LoadPlan(ctx, d.rt.Store, fleet.PlanKey(st.id), "")
		if errors.Is(err, blob.ErrNotFound) { // never planned
			plan, kind, sum, err = d.plan(ctx, st.id, req, log)
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
	st.plan, st.kind, st.planSum = plan, kind, sum
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
	st.countLayers()
	st.dirty = true
	gen := st.generation
	ndone := len(st.done)
	runnable, err := st.runnable()
	st.mu.Unlock()
	if err != nil {
		return err
	}
	if err := d.writeCheckpoint(ctx, st); err != nil {
		return err
	}
	log.Info("job planned", zap.String("kind", kind.Name()), zap.Int("tasks", len(plan.Tasks)), zap.Int("done", ndone),
		zap.Uint32("generation", gen))
	return d.publish(ctx, st, runnable, gen)
}

// countLayers counts the complete layers of st.done afresh. Call with st.mu held.
func (st *jobState) countLayers() {
	st.layers = planLayers(st.plan)
	for _, t := range st.plan.Tasks {
		if st.done[t.ID] != nil {
			st.layers.TaskDone(t.Block)
		}
	}
}

// runnable returns the tasks the job's kind can run now. Call with st.mu held.
func (st *jobState) runnable() ([]fleet.PlanTask, error) {
	return st.kind.Runnable(st.plan, func(id string) bool { return st.done[id] != nil })
}

// publishNext publishes the tasks that became runnable and are not yet published in this
// generation (in a calibrated GPTQ/AWQ chain, the next layer).
func (d *Dispatcher) publishNext(ctx context.Context, st *jobState) {
	st.mu.Lock()
	runnable, err := st.runnable()
	var next []fleet.PlanTask
	for _, t := range runnable {
		if g, ok := st.published[t.ID]; !ok || g != st.generation {
			next = append(next, t)
		}
	}
	gen := st.generation
	st.mu.Unlock()
	if err != nil || len(next) == 0 {
		return
	}
	if err := d.publish(ctx, st, next, gen); err != nil {
		d.log.Warn("publishing the next tasks failed; will retry", zap.String("job", st.id), zap.Error(err))
	}
}

// publish enqueues tasks of generation gen (duplicates of earlier publishes are dropped by the
// stream's de-duplication).
func (d *Dispatcher) publish(ctx context.Context, st *jobState, tasks []fleet.PlanTask, gen uint32) error {
	pool := d.pool(st.req)
	if err := queue.EnsurePool(ctx, d.rt.JS, d.cfg.Queue, pool); err != nil {
		return err
	}
	for _, t := range tasks {
		msg, err := d.taskMessage(st, t, pool, gen)
		if err != nil {
			return err
		}
		b, err := fleet.EncodeTask(msg)
		if err != nil {
			return err
		}
		dup, err := queue.PublishTask(ctx, d.rt.JS, pool, fleet.TaskMsgID(msg), b)
		if err != nil {
			return err
		}
		if !dup {
			d.m.published.WithLabelValues(fleet.TaskKindLabel(msg.Kind)).Inc()
		}
		st.mu.Lock()
		st.published[t.ID] = gen
		st.mu.Unlock()
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

// taskMessage is the message of task t: what every task has, and its kind's arguments.
func (d *Dispatcher) taskMessage(st *jobState, t fleet.PlanTask, pool string, gen uint32) (*pb.Task, error) {
	p := st.plan
	msg := &pb.Task{JobId: st.id, TaskId: t.ID, Generation: gen, Pool: pool,
		Plan:       &pb.PlanRef{Key: fleet.PlanKey(st.id), Sha256: st.planSum},
		Output:     &pb.OutputSpec{Prefix: fleet.ShardPrefix(st.id)},
		LayerIndex: int32(t.Block), TotalTasks: int32(len(p.Tasks)), CreatedAt: timestamppb.Now(), Label: t.Label,
		Source: &pb.SourceRef{Bucket: p.SourceBucket, Prefix: p.SourcePrefix, ModelName: p.ModelName}}
	return msg, st.kind.Describe(p, t, msg)
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
