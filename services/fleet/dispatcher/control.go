package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
)

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
	var missing []fleet.PlanTask
	for _, t := range plan.Tasks {
		ok := done[t.ID] != nil
		if ok {
			if ok, err = st.kind.Verify(ctx, d.rt.Store, plan, t, done[t.ID]); err != nil {
				return j.Status, err
			}
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
	st.countLayers()
	st.generation++
	runnable, err := st.runnable()
	gen := st.generation
	st.assembled = false // with every shard there, the assembly is queued again in this generation
	st.dirty = true
	st.mu.Unlock()
	if err != nil {
		return j.Status, err
	}
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
