package queue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"quantfleet.dev/libs/natsembed"
	"quantfleet.dev/libs/queue"
)

type env struct {
	srv *natsembed.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg queue.Config
}

// newEnv starts an embedded server and sets up the layout with test-sized timeouts.
func newEnv(t *testing.T, edit func(*queue.Config)) *env {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := queue.Config{AckWait: 2 * time.Second, MaxDeliver: 3}
	if edit != nil {
		edit(&cfg)
	}
	if err := queue.Setup(t.Context(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, nc: nc, js: js, cfg: cfg}
}

func (e *env) consumer(t *testing.T, pool string) jetstream.Consumer {
	t.Helper()
	c, err := queue.BindConsumer(t.Context(), e.js, pool)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) publish(t *testing.T, pool, id string, data string) {
	t.Helper()
	if _, err := queue.PublishTask(t.Context(), e.js, pool, id, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

func (e *env) streamMsgs(t *testing.T, name string) uint64 {
	t.Helper()
	st, err := e.js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSetupLayout(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	// Idempotent, and a second run with other tunables updates in place.
	if err := queue.Setup(ctx, e.js, queue.Config{AckWait: 3 * time.Second, MaxDeliver: 3}); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	st, err := e.js.Stream(ctx, queue.TasksStream)
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	if sc.Retention != jetstream.WorkQueuePolicy || sc.Discard != jetstream.DiscardNew ||
		sc.MaxMsgSize != 64<<10 || sc.Duplicates != time.Hour || sc.Subjects[0] != "qf.tasks.*" {
		t.Errorf("QF_TASKS config %+v", sc)
	}
	for _, pool := range []string{"cpu", "gpu", "asm"} {
		c := e.consumer(t, pool)
		cc := c.CachedInfo().Config
		if cc.Durable != "pool-"+pool || cc.FilterSubject != "qf.tasks."+pool || cc.AckPolicy != jetstream.AckExplicitPolicy ||
			cc.AckWait != 3*time.Second || cc.MaxDeliver != 3 || cc.MaxAckPending != 256 || len(cc.BackOff) != 0 ||
			cc.InactiveThreshold != 0 {
			t.Errorf("consumer %s config %+v", pool, cc)
		}
	}
	ev, err := e.js.Stream(ctx, queue.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if c := ev.CachedInfo().Config; c.Retention != jetstream.LimitsPolicy || c.MaxAge != 7*24*time.Hour {
		t.Errorf("QF_EVENTS config %+v", c)
	}
	for _, b := range []string{queue.JobsBucket, queue.TaskDoneBucket} {
		if _, err := e.js.KeyValue(ctx, b); err != nil {
			t.Errorf("bucket %s: %v", b, err)
		}
	}
	if _, err := queue.BindConsumer(ctx, e.js, "tpu"); err == nil {
		t.Error("binding a pool without a consumer succeeded")
	}
	if err := queue.Setup(ctx, e.js, queue.Config{Pools: []string{"a.b"}}); !errors.Is(err, queue.ErrInvalidName) {
		t.Errorf("pool with a dot: %v", err)
	}
}

func TestPublishDedupAndLimits(t *testing.T) {
	e := newEnv(t, func(c *queue.Config) { c.MaxTasks = 3 })
	ctx := t.Context()
	id := queue.TaskMsgID("job1", "blk-0", 0)
	if id != "job1/blk-0/0" {
		t.Fatalf("TaskMsgID = %s", id)
	}
	dup, err := queue.PublishTask(ctx, e.js, "cpu", id, []byte("t"))
	if err != nil || dup {
		t.Fatalf("first publish: dup=%v err=%v", dup, err)
	}
	dup, err = queue.PublishTask(ctx, e.js, "cpu", id, []byte("t"))
	if err != nil || !dup {
		t.Fatalf("second publish: dup=%v err=%v, want a duplicate", dup, err)
	}
	if n := e.streamMsgs(t, queue.TasksStream); n != 1 {
		t.Fatalf("stream holds %d tasks, want 1", n)
	}
	// A new generation is a new task.
	if dup, err := queue.PublishTask(ctx, e.js, "cpu", queue.TaskMsgID("job1", "blk-0", 1), []byte("t")); err != nil || dup {
		t.Fatalf("generation 1: dup=%v err=%v", dup, err)
	}
	// Oversized tasks are refused client-side; the stream would refuse them too.
	if _, err := queue.PublishTask(ctx, e.js, "cpu", "big", make([]byte, 64<<10+1)); err == nil {
		t.Fatal("65 KiB task accepted")
	}
	if _, err := e.js.Publish(ctx, queue.TaskSubject("cpu"), make([]byte, 64<<10+1)); err == nil {
		t.Fatal("stream accepted a 65 KiB message")
	}
	// Backlog cap with DiscardNew: the 4th pending task is refused, nothing is dropped.
	e.publish(t, "gpu", "x", "t")
	if _, err := queue.PublishTask(ctx, e.js, "gpu", "y", []byte("t")); err == nil {
		t.Fatal("publish beyond MaxTasks succeeded")
	}
	if n := e.streamMsgs(t, queue.TasksStream); n != 3 {
		t.Fatalf("stream holds %d tasks, want 3", n)
	}
	if err := queue.PublishEvent(ctx, e.js, "job1", "progress", "", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := queue.PublishEvent(ctx, e.js, "job.1", "progress", "", nil); !errors.Is(err, queue.ErrInvalidName) {
		t.Fatalf("event with a dotted job id: %v", err)
	}
}

// TestWorkerSlots checks one task per slot: with 3 slots and 8 tasks, at most 3 run at once and
// the consumer never has more than 3 tasks delivered-but-unacked (no prefetch).
func TestWorkerSlots(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 8; i++ {
		e.publish(t, "cpu", fmt.Sprintf("j/t%d/0", i), fmt.Sprint(i))
	}
	cons := e.consumer(t, "cpu")
	var running, peak, done atomic.Int32
	var maxAckPending atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &queue.Worker{JS: e.js, Consumer: cons, Pool: "cpu", Slots: 3, PullWait: time.Second,
		Handler: func(ctx context.Context, d *queue.Delivery) error {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			if info, err := cons.Info(ctx); err == nil && int64(info.NumAckPending) > maxAckPending.Load() {
				maxAckPending.Store(int64(info.NumAckPending))
			}
			time.Sleep(150 * time.Millisecond)
			running.Add(-1)
			done.Add(1)
			return nil
		}}
	go w.Run(ctx)
	waitFor(t, "8 tasks", 20*time.Second, func() bool { return done.Load() == 8 })
	if p := peak.Load(); p > 3 || p < 2 {
		t.Errorf("peak concurrency %d, want 2..3", p)
	}
	if m := maxAckPending.Load(); m > 3 {
		t.Errorf("NumAckPending reached %d with 3 slots: worker prefetches", m)
	}
	waitFor(t, "acked tasks removed", 5*time.Second, func() bool { return e.streamMsgs(t, queue.TasksStream) == 0 })
}

// TestWorkerHeartbeat: tasks longer than AckWait are not redelivered while the worker heartbeats.
func TestWorkerHeartbeat(t *testing.T) {
	e := newEnv(t, func(c *queue.Config) { c.AckWait = time.Second })
	e.publish(t, "gpu", "j/long/0", "x")
	var deliveries atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	finished := make(chan struct{})
	w := &queue.Worker{JS: e.js, Consumer: e.consumer(t, "gpu"), Pool: "gpu", Slots: 2, Heartbeat: 250 * time.Millisecond,
		PullWait: time.Second, Handler: func(ctx context.Context, d *queue.Delivery) error {
			deliveries.Add(1)
			time.Sleep(2500 * time.Millisecond) // 2.5 × AckWait
			close(finished)
			return nil
		}}
	go w.Run(ctx)
	<-finished
	time.Sleep(1500 * time.Millisecond) // a redelivery would have arrived by now
	if n := deliveries.Load(); n != 1 {
		t.Fatalf("task delivered %d times, want 1", n)
	}
}

// TestWorkerShutdownNaks: cancelling a worker mid-task hands the task back at once (well before
// AckWait), and the next worker sees it as delivery 2.
func TestWorkerShutdownNaks(t *testing.T) {
	e := newEnv(t, func(c *queue.Config) { c.AckWait = 30 * time.Second })
	e.publish(t, "cpu", "j/t/0", "payload")
	started := make(chan struct{})
	ctx1, stop1 := context.WithCancel(t.Context())
	w1 := &queue.Worker{JS: e.js, Consumer: e.consumer(t, "cpu"), Pool: "cpu", PullWait: time.Second,
		Handler: func(ctx context.Context, d *queue.Delivery) error {
			close(started)
			<-ctx.Done() // a long task that honours cancellation
			return ctx.Err()
		}}
	w1done := make(chan struct{})
	go func() { w1.Run(ctx1); close(w1done) }()
	<-started
	stop1() // SIGTERM
	<-w1done

	got := make(chan *queue.Delivery, 1)
	ctx2, stop2 := context.WithCancel(t.Context())
	defer stop2()
	start := time.Now()
	w2 := &queue.Worker{JS: e.js, Consumer: e.consumer(t, "cpu"), Pool: "cpu", PullWait: time.Second,
		Handler: func(ctx context.Context, d *queue.Delivery) error { got <- d; return nil }}
	go w2.Run(ctx2)
	select {
	case d := <-got:
		if d.NumDelivered != 2 || string(d.Data()) != "payload" || d.MsgID != "j/t/0" {
			t.Fatalf("redelivery %+v", d)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("redelivered after %v: not Nak'd", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("task not handed back within 10 s (AckWait is 30 s)")
	}
}

// TestWorkerDeadLetters: malformed tasks go to the DLQ at once; a panicking handler does not kill
// the worker; failing tasks are retried and dead-lettered on the last attempt; good tasks still run.
func TestWorkerDeadLetters(t *testing.T) {
	e := newEnv(t, func(c *queue.Config) { c.MaxDeliver = 3 })
	e.publish(t, "cpu", "j/bad/0", "garbage")
	e.publish(t, "cpu", "j/panic/0", "panic")
	e.publish(t, "cpu", "j/flaky/0", "flaky")
	e.publish(t, "cpu", "j/perm/0", "permanent")
	e.publish(t, "cpu", "j/good/0", "good")
	var flaky, good atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &queue.Worker{JS: e.js, Consumer: e.consumer(t, "cpu"), Pool: "cpu", Slots: 2, PullWait: time.Second,
		RetryDelay: func(uint64) time.Duration { return 50 * time.Millisecond },
		Handler: func(ctx context.Context, d *queue.Delivery) error {
			switch string(d.Data()) {
			case "garbage":
				return queue.Malformed(errors.New("cannot decode task"))
			case "panic":
				panic("boom")
			case "flaky":
				flaky.Add(1)
				return errors.New("s3 timeout")
			case "permanent":
				return queue.Permanent(errors.New("unknown tensor"))
			}
			good.Add(1)
			return nil
		}}
	go w.Run(ctx)
	waitFor(t, "tasks settled", 20*time.Second, func() bool {
		return e.streamMsgs(t, queue.TasksStream) == 0 && e.streamMsgs(t, queue.DLQStream) == 3
	})
	if good.Load() != 1 || flaky.Load() != 3 {
		t.Errorf("good ran %d times (want 1), flaky %d (want MaxDeliver=3)", good.Load(), flaky.Load())
	}
	dlq, err := e.js.Stream(t.Context(), queue.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := dlq.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "qf.dlq.cpu" || m.Header.Get(queue.HeaderOriginalSubject) != "qf.tasks.cpu" {
			t.Errorf("DLQ message subject %s, original %s", m.Subject, m.Header.Get(queue.HeaderOriginalSubject))
		}
		reasons[string(m.Data)] = m.Header.Get(queue.HeaderDLQReason)
	}
	for data, want := range map[string]string{"garbage": "cannot decode task", "panic": "panicked: boom", "flaky": "out of attempts (3): s3 timeout"} {
		if !strings.Contains(reasons[data], want) {
			t.Errorf("DLQ reason for %s = %q, want it to contain %q", data, reasons[data], want)
		}
	}
}

// TestKilledWorkerRedelivery: a worker that dies holding a task (no ack, no nak) loses it for
// AckWait only; then another worker gets it. SweepExhausted dead-letters a task whose last
// delivery died the same way.
func TestKilledWorkerRedelivery(t *testing.T) {
	e := newEnv(t, func(c *queue.Config) { c.AckWait = time.Second; c.MaxDeliver = 2 })
	moved, err := queue.SweepExhausted(t.Context(), e.nc, e.js, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, "cpu", "j/t/0", "x")
	// The "killed" worker: its own connection pulls the task and disappears.
	nc2, err := nats.Connect(e.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js2, _ := jetstream.New(nc2)
	c2, _ := queue.BindConsumer(t.Context(), js2, "cpu")
	if _, err := c2.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	nc2.Close()
	// Second delivery, also abandoned: now MaxDeliver is exhausted.
	cons := e.consumer(t, "cpu")
	start := time.Now()
	m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	md, _ := m.Metadata()
	if md.NumDelivered != 2 || time.Since(start) > 5*time.Second {
		t.Fatalf("redelivery %d after %v", md.NumDelivered, time.Since(start))
	}
	// The server checks for exhausted tasks while workers are pulling (as live workers always are).
	go func() {
		if m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err == nil {
			t.Errorf("exhausted task delivered again: %s", m.Data())
		}
	}()
	select {
	case seq := <-moved:
		if seq != md.Sequence.Stream {
			t.Fatalf("swept seq %d, want %d", seq, md.Sequence.Stream)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exhausted task not swept to the DLQ")
	}
	if n := e.streamMsgs(t, queue.TasksStream); n != 0 {
		t.Fatalf("tasks stream still holds %d", n)
	}
	if n := e.streamMsgs(t, queue.DLQStream); n != 1 {
		t.Fatalf("DLQ holds %d, want 1", n)
	}
}

func TestTaskDoneFirstWins(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	td, err := queue.NewTaskDone(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	// Many attempts race; exactly one wins and everyone learns the winner.
	var wg sync.WaitGroup
	var winners atomic.Int32
	results := make([]string, 10)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			won, rec, err := td.Record(ctx, "job1", "blk-3", []byte(fmt.Sprintf("attempt-%d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			if won {
				winners.Add(1)
			}
			results[i] = string(rec)
		}(i)
	}
	wg.Wait()
	if winners.Load() != 1 {
		t.Fatalf("%d winners", winners.Load())
	}
	for _, r := range results[1:] {
		if r != results[0] {
			t.Fatalf("attempts disagree on the winner: %v", results)
		}
	}
	if _, _, err := td.Record(ctx, "job1", "blk-4", []byte("b")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := td.Record(ctx, "job10", "blk-1", []byte("other job")); err != nil {
		t.Fatal(err)
	}
	recs, err := td.ListJob(ctx, "job1")
	if err != nil || len(recs) != 2 || string(recs["blk-4"]) != "b" {
		t.Fatalf("ListJob = %v, %v", recs, err)
	}
	if v, ok, err := td.Get(ctx, "job1", "blk-3"); err != nil || !ok || string(v) != results[0] {
		t.Fatalf("Get = %q %v %v", v, ok, err)
	}
	if _, ok, _ := td.Get(ctx, "job1", "blk-9"); ok {
		t.Fatal("Get of an unrecorded task")
	}
	if err := td.DeleteJob(ctx, "job1"); err != nil {
		t.Fatal(err)
	}
	if recs, _ := td.ListJob(ctx, "job1"); len(recs) != 0 {
		t.Fatalf("after DeleteJob: %v", recs)
	}
	if recs, _ := td.ListJob(ctx, "job10"); len(recs) != 1 {
		t.Fatalf("DeleteJob touched another job: %v", recs)
	}
	// After a delete, a re-run can record again.
	if won, _, err := td.Record(ctx, "job1", "blk-3", []byte("rerun")); err != nil || !won {
		t.Fatalf("record after delete: won=%v %v", won, err)
	}
	if _, _, err := td.Record(ctx, "job1", "blk.3", nil); !errors.Is(err, queue.ErrInvalidName) {
		t.Fatalf("dotted task id: %v", err)
	}
}
