package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
)

// FailJob moves a job to FAILED with msg (a PENDING job passes through RUNNING, as the state machine
// wants). A job that is already terminal is left alone; FailJob then returns nil.
func FailJob(ctx context.Context, rt *Runtime, job, msg string) error {
	msg = OneLine(msg, 2000)
	from := domain.StatusRunning
	_, err := rt.Jobs.Update(ctx, job, func(j *domain.QuantizationJob) error {
		from = j.Status
		if j.Status.Terminal() {
			return errTerminal
		}
		now := time.Now().UTC()
		if j.Status == domain.StatusPending {
			if err := j.Transition(domain.StatusRunning, now); err != nil {
				return err
			}
		}
		return j.Fail(msg, now)
	})
	if errors.Is(err, errTerminal) {
		return nil
	}
	if err == nil {
		ev := NewEvent(job)
		ev.Event = &pb.JobEvent_State{State: &pb.JobStateChanged{From: string(from), To: string(domain.StatusFailed), ErrorMessage: msg}}
		_ = rt.PublishEvent(ctx, ev, job+"/failed")
	}
	return err
}

var errTerminal = errors.New("job is terminal")

// JobActive reports whether job is still PENDING or RUNNING. A job that no longer exists is not.
func JobActive(ctx context.Context, rt *Runtime, job string) (bool, error) {
	j, _, err := rt.Jobs.Get(ctx, job)
	if errors.Is(err, queue.ErrJobNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return !j.Status.Terminal(), nil
}

// WatchJob returns a context that is cancelled when job leaves PENDING/RUNNING (checked every
// poll) or when parent ends, and a function that reports whether the job ended. Call stop when done.
func WatchJob(parent context.Context, rt *Runtime, job string, poll time.Duration) (ctx context.Context, ended func() bool, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	var gone bool
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				active, err := JobActive(ctx, rt, job)
				if err == nil && !active {
					gone = true
					cancel()
					return
				}
			}
		}
	}()
	stop = func() {
		close(done)
		<-finished
		cancel()
	}
	ended = func() bool {
		select {
		case <-finished:
			return gone
		default:
			return false
		}
	}
	return ctx, ended, stop
}

// OneLine flattens s to one line of at most n bytes.
func OneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// TaskErrorMessage is the error_message recorded for a task that failed for good.
func TaskErrorMessage(task, label string, attempts uint32, err string) string {
	what := task
	if label != "" && label != task {
		what = fmt.Sprintf("%s (%s)", task, label)
	}
	return fmt.Sprintf("task %s failed after %d attempt(s): %s", what, attempts, err)
}
