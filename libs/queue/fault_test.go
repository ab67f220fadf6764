package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/queue"
)

// TestFaultClasses: with the NATS server gone, job records, completion records and publishes fail
// as fault.ErrTransient (queue.ErrUnavailable); an unknown job is bad input, not transient.
func TestFaultClasses(t *testing.T) {
	e := newEnv(t, nil)
	nc, err := nats.Connect(e.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	jobs, err := queue.NewJobStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	done, err := queue.NewTaskDone(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.Create(ctx, domain.NewJob("j1", time.Now())); err != nil {
		t.Fatal(err)
	}
	_, _, err = jobs.Get(ctx, "nobody")
	if !errors.Is(err, fault.ErrBadInput) || fault.Transient(err) {
		t.Errorf("unknown job: %v, want bad input", err)
	}
	e.srv.Shutdown()
	for _, tc := range []struct {
		name string
		op   func(context.Context) error
	}{
		{"get job", func(ctx context.Context) error { _, _, err := jobs.Get(ctx, "j1"); return err }},
		{"update job", func(ctx context.Context) error {
			_, err := jobs.Update(ctx, "j1", func(*domain.QuantizationJob) error { return nil })
			return err
		}},
		{"record task", func(ctx context.Context) error { _, _, err := done.Record(ctx, "j1", "t1", []byte("x")); return err }},
		{"get task record", func(ctx context.Context) error { _, _, err := done.Get(ctx, "j1", "t1"); return err }},
		{"publish task", func(ctx context.Context) error {
			_, err := queue.PublishTask(ctx, js, queue.PoolCPU, "m1", []byte("x"))
			return err
		}},
		{"publish event", func(ctx context.Context) error {
			return queue.PublishEvent(ctx, js, "j1", "task_done", "", []byte("x"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op(t.Context())
			if !fault.Transient(err) || !errors.Is(err, queue.ErrUnavailable) || fault.Permanent(err) {
				t.Errorf("with NATS down: %v, want transient", err)
			}
		})
	}
	// The caller's own deadline is the caller's business, not a NATS fault.
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, _, err := jobs.Get(cctx, "j1"); fault.Transient(err) {
		t.Errorf("caller's deadline classified transient: %v", err)
	}
}
