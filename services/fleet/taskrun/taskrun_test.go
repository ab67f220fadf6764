package taskrun_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/natsembed"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/taskrun"
)

// handler runs tasks by their id: "dup" is already done, "perm" fails for good, "flaky" fails
// once, anything else succeeds.
type handler struct {
	mu        sync.Mutex
	runs      map[string]int
	committed map[string]bool
}

func (h *handler) Prepare(_ context.Context, a *taskrun.Attempt) error {
	if a.Task.TaskId == "dup" {
		return taskrun.ErrDuplicate
	}
	return nil
}

func (h *handler) Run(_ context.Context, a *taskrun.Attempt) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.runs[a.Task.TaskId]++
	switch {
	case a.Task.TaskId == "perm":
		return fault.New(fault.ErrBadInput, "weights hold NaN")
	case a.Task.TaskId == "flaky" && h.runs["flaky"] == 1:
		return errors.New("a passing hiccup")
	}
	return nil
}

func (h *handler) Commit(_ context.Context, a *taskrun.Attempt) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.committed[a.Task.TaskId] = true
	return nil
}

func (h *handler) Discard(context.Context, *taskrun.Attempt) {}

func (h *handler) FailMessage(a *taskrun.Attempt, err string) string {
	return fmt.Sprintf("task %s failed: %s", a.Task.TaskId, err)
}

func (h *handler) state(id string) (runs int, committed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runs[id], h.committed[id]
}

func TestLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns, err := natsembed.Start(natsembed.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	store, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rt, err := fleet.NewRuntime(nc, store, "qf", nil, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := fleet.Setup(ctx, rt.JS, queue.Config{AckWait: 5 * time.Second, MaxDeliver: 3}); err != nil {
		t.Fatal(err)
	}
	if err := rt.Bind(ctx); err != nil {
		t.Fatal(err)
	}
	job := func(id string) {
		if _, err := rt.Jobs.Create(ctx, domain.NewJob(id, time.Now().UTC())); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(jobID, taskID string) {
		msg := &pb.Task{JobId: jobID, TaskId: taskID, Kind: pb.TaskKind_TASK_KIND_GGUF_TENSORS, Pool: queue.PoolCPU,
			Plan: &pb.PlanRef{Key: fleet.PlanKey(jobID)}, Output: &pb.OutputSpec{Prefix: fleet.ShardPrefix(jobID)},
			Args: &pb.Task_GgufTensors{GgufTensors: &pb.GGUFTensorsArgs{}}}
		b, err := fleet.EncodeTask(msg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := queue.PublishTask(ctx, rt.JS, queue.PoolCPU, fleet.TaskMsgID(msg), b); err != nil {
			t.Fatal(err)
		}
	}

	h := &handler{runs: map[string]int{}, committed: map[string]bool{}}
	settled := map[string]int{}
	var mu sync.Mutex
	srv := &taskrun.Server{RT: rt, Pool: queue.PoolCPU, Name: "test", Slots: 2, PullWait: 200 * time.Millisecond,
		RetryDelay: func(uint64) time.Duration { return 100 * time.Millisecond }, Events: true, Log: zaptest.NewLogger(t),
		Metrics: taskrun.Metrics{Settled: func(kind, result string) {
			mu.Lock()
			settled[kind+"/"+result]++
			mu.Unlock()
		}}}
	srv.Handle(pb.TaskKind_TASK_KIND_GGUF_TENSORS, h)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()

	job("j-ok")
	job("j-perm")
	job("j-ended")
	if _, err := rt.Jobs.Update(ctx, "j-ended", func(j *domain.QuantizationJob) error {
		return j.Transition(domain.StatusCancelled, time.Now().UTC())
	}); err != nil {
		t.Fatal(err)
	}
	publish("j-ok", "ok")
	publish("j-ok", "dup")
	publish("j-ok", "flaky")
	publish("j-perm", "perm")
	publish("j-ended", "late")

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	waitFor("ok committed", func() bool { _, c := h.state("ok"); return c })
	waitFor("flaky committed after a retry", func() bool { n, c := h.state("flaky"); return c && n == 2 })
	waitFor("j-perm failed", func() bool {
		j, _, err := rt.Jobs.Get(ctx, "j-perm")
		return err == nil && j.Status == domain.StatusFailed
	})
	j, _, _ := rt.Jobs.Get(ctx, "j-perm")
	if want := "task perm failed: weights hold NaN"; j.ErrorMessage != want {
		t.Errorf("error_message %q, want %q", j.ErrorMessage, want)
	}
	waitFor("dup and late settled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return settled["gguf_tensors/duplicate"] == 1 && settled["gguf_tensors/dropped"] == 1
	})
	if n, _ := h.state("perm"); n != 1 {
		t.Errorf("a permanent failure ran %d times, want once", n)
	}
	if n, _ := h.state("late"); n != 0 {
		t.Errorf("a task of a cancelled job ran %d times", n)
	}
	if n, c := h.state("dup"); n != 0 || c {
		t.Errorf("a duplicate ran %d times (committed %v)", n, c)
	}
	stop()
	<-done
}
