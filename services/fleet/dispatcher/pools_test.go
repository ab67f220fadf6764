package dispatcher_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/assembler"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/dispatcher"
	"quantfleet.dev/services/fleet/worker"
	"quantfleet.dev/services/internal/testenv"
)

// TestPools: a job for a pool no worker serves is refused at submit when the name is invalid; a
// valid idle pool shows "waiting for a worker of pool NAME" and cancel removes its queued tasks; a
// worker of the pool that turns up runs the next job and the note goes.
func TestPools(t *testing.T) {
	tiny := testenv.TinyLlama(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt, _ := fleetIn(t, ctx, s3Config("pools"))
	startDispatcher(t, ctx, rt("dispatcher"), dispatcher.Config{Queue: queue.Config{AckWait: 2 * time.Second}, CleanupGrace: time.Second})
	run(t, ctx, assembler.New(rt("assembler"), assembler.Config{}, nil, zaptest.NewLogger(t)).Run)
	c := newClient(t, ctx, rt)
	submit := func(pool string) (string, error) {
		sub, err := c.Submit(ctx, client.SubmitRequest{Model: tiny, Pool: pool, Config: domain.DefaultConfig(domain.FormatGGUF, "Q4_K_M")})
		if err != nil {
			return "", err
		}
		return sub.JobID, nil
	}
	queued := func(pool, job string) int {
		s, err := c.RT.JS.Stream(ctx, queue.TasksStream)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for seq := uint64(1); ; {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(queue.TaskSubject(pool)))
			if err != nil {
				return n
			}
			if tk, err := fleet.DecodeTask(m.Data); err == nil && tk.JobId == job {
				n++
			}
			seq = m.Sequence + 1
		}
	}
	waiting := func(job, want string) {
		t.Helper()
		waitFor(t, ctx, func() bool { j, _ := c.Job(ctx, job); return j != nil && j.Waiting == want })
	}
	for _, tc := range []struct {
		name, pool string
		check      func(t *testing.T, job string, err error)
	}{
		{"invalid name", "no/such", func(t *testing.T, _ string, err error) {
			if !errors.Is(err, fault.ErrBadInput) {
				t.Fatalf("submit: %v, want bad input", err)
			}
		}},
		{"the assembler's pool", queue.PoolAsm, func(t *testing.T, _ string, err error) {
			if !errors.Is(err, fault.ErrBadInput) {
				t.Fatalf("submit: %v, want bad input", err)
			}
		}},
		{"idle pool, cancelled", "tpu", func(t *testing.T, job string, err error) {
			if err != nil {
				t.Fatal(err)
			}
			waiting(job, "waiting for a worker of pool tpu")
			if n := queued("tpu", job); n != 8 {
				t.Fatalf("%d tasks queued, want 8", n)
			}
			if _, err := c.Cancel(ctx, job); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, func() bool { return queued("tpu", job) == 0 })
		}},
		{"idle pool, a worker turns up", "tpu", func(t *testing.T, job string, err error) {
			if err != nil {
				t.Fatal(err)
			}
			waiting(job, "waiting for a worker of pool tpu")
			run(t, ctx, worker.New(rt("tpu-worker"), worker.Config{Pool: "tpu", Slots: 2}, nil, zaptest.NewLogger(t)).Run)
			j, err := c.Wait(ctx, job, nil)
			if err != nil || j.Status != domain.StatusCompleted || j.Waiting != "" {
				t.Fatalf("job: %v %s %q", err, j.Status, j.Waiting)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, err := submit(tc.pool)
			tc.check(t, job, err)
		})
	}
}
