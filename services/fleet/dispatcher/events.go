package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/progress"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
)

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
		t, ok := st.plan.Task(res.TaskId)
		if !ok || len(res.Shards) == 0 {
			st.mu.Unlock()
			return
		}
		if st.done[res.TaskId] == nil {
			d.m.done.Inc()
			st.layers.TaskDone(t.Block)
			st.dirty = true // a task seen again (a late event) changes no checkpoint
		}
		st.done[res.TaskId] = res
		st.memPeak = max(st.memPeak, res.PeakMemoryBytes)
	}
	p := st.progress()
	memCur, memPeak := st.memCur, st.memPeak
	st.memDirty = false
	st.mu.Unlock()
	ckURL := fleet.S3URL(d.rt.Bucket, fleet.CheckpointKey(st.id))
	_, err := d.rt.Jobs.Update(ctx, st.id, func(j *domain.QuantizationJob) error {
		if j.Status != domain.StatusRunning {
			return errNotRunning
		}
		j.SetProgress(p, time.Now().UTC())
		if p.TasksDone == p.Tasks {
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

// progress is how far the job is: whole layers and tasks. Call with st.mu held.
func (st *jobState) progress() domain.Progress {
	ld, l := st.layers.Complete()
	return domain.Progress{LayersDone: ld, Layers: l, TasksDone: len(st.done), Tasks: len(st.plan.Tasks)}
}

// planLayers counts the layers of a plan's tasks (PlanTask.Block): a GPTQ/AWQ layer is complete
// with its last task, a GGUF block with its one task, and a tensor outside the blocks is a unit
// of its own.
func planLayers(p *fleet.Plan) *progress.Layers {
	blocks := make([]int, len(p.Tasks))
	for i, t := range p.Tasks {
		blocks[i] = t.Block
	}
	return progress.NewLayers(blocks)
}

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
	msg := &pb.Task{JobId: st.id, TaskId: fleet.AssembleTaskID, Generation: gen, Kind: pb.TaskKind_TASK_KIND_ASSEMBLE, Pool: queue.PoolAsm,
		Plan:       &pb.PlanRef{Key: fleet.PlanKey(st.id), Sha256: st.planSum},
		Output:     &pb.OutputSpec{Prefix: fleet.OutputPrefix(st.id)},
		LayerIndex: -1, TotalTasks: int32(len(p.Tasks)), CreatedAt: timestamppb.Now(), Label: "assemble",
		Source: &pb.SourceRef{Bucket: p.SourceBucket, Prefix: p.SourcePrefix, ModelName: p.ModelName},
		Args:   &pb.Task_Assemble{Assemble: &pb.AssembleArgs{OutputName: name}}}
	b, err := fleet.EncodeTask(msg)
	if err == nil {
		_, err = queue.PublishTask(ctx, d.rt.JS, queue.PoolAsm, fleet.TaskMsgID(msg), b)
	}
	if err != nil {
		d.log.Warn("publishing the assembly failed; will retry", zap.String("job", st.id), zap.Error(err))
		return
	}
	d.m.published.WithLabelValues(fleet.TaskKindLabel(msg.Kind)).Inc()
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
