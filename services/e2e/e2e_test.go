package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hub/hubtest"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
)

const taskDelay = "QUANTFLEET_TEST_TASK_DELAY=1200ms"

// TestFleet runs the acceptance scenario on separate processes: a job end to end, a worker killed
// while it holds a task, the dispatcher killed and restarted mid-job, a cancel, and a resume after
// a full stop. Every result must be byte-identical to `quantfleet quantize`.
func TestFleet(t *testing.T) {
	t.Parallel() // beside TestTransientAndPermanent, which mostly waits out its outage
	c := newCluster(t)
	c.startFleet(3, taskDelay)

	t.Run("submit and get", func(t *testing.T) {
		code, stdout, errs := c.cli("submit", "--model", tiny, "--level", "Q4_K_M", "--wait", "--json")
		if code != 0 {
			t.Fatalf("submit --wait: exit %d: %s", code, errs)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		var last struct {
			Event  string                 `json:"event"`
			Result domain.QuantizationJob `json:"result"`
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Event != "result" {
			t.Fatalf("last line of submit --wait --json: %v %q", err, lines[len(lines)-1])
		}
		j := last.Result
		if j.Status != domain.StatusCompleted || j.TotalLayers != 8 || j.CurrentLayer != 8 || j.ProgressPercentage != 100 ||
			j.PeakMemoryUsage <= 0 || j.CheckpointPath == "" || j.Result == nil || j.Result.ValidationStatus != domain.ValidationValid {
			t.Errorf("completed job record: %+v", j)
		}
		var progress int
		for _, l := range lines {
			if strings.Contains(l, `"event":"progress"`) {
				progress++
			}
		}
		if progress < 3 {
			t.Errorf("%d progress events, want one per layer or so", progress)
		}
		c.getAndCompare(j.JobID)
		if n := len(c.shards(j.JobID)); n != 8 {
			t.Errorf("%d shards, want one per task (8)", n)
		}

		// A presigned URL downloads the same bytes without credentials.
		code, stdout, errs = c.cli("get", j.JobID, "--url", "--expiry", "10m")
		if code != 0 {
			t.Fatalf("get --url: exit %d: %s", code, errs)
		}
		resp, err := http.Get(strings.TrimSpace(stdout))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(body, ref) || !strings.Contains(stdout, "X-Amz-Expires=600") {
			t.Errorf("presigned download: HTTP %d, %d bytes, url %s", resp.StatusCode, len(body), stdout)
		}

		code, stdout, _ = c.cli("status", j.JobID)
		if code != 0 || !strings.Contains(stdout, "completed") || !strings.Contains(stdout, "layer 8/8") {
			t.Errorf("status: exit %d\n%s", code, stdout)
		}
		code, stdout, _ = c.cli("list", "--json")
		if code != 0 || !strings.Contains(stdout, j.JobID) {
			t.Errorf("list: exit %d\n%s", code, stdout)
		}
	})

	t.Run("kill -9 a worker holding a task", func(t *testing.T) {
		id := c.submit("Q4_K_M")
		w1 := c.proc("worker1")
		var held string
		deadline := time.Now().Add(30 * time.Second)
		for held == "" && time.Now().Before(deadline) {
			for _, l := range logLines(w1, `"msg":"task started"`, id) {
				task := jsonField(l, "task")
				if len(logLines(w1, `"msg":"task done"`, id, `"task":"`+task+`"`)) == 0 {
					held = task
				}
			}
			if held == "" {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if held == "" {
			t.Fatal("worker1 never held a task")
		}
		c.kill("worker1", syscall.SIGKILL)
		c.waitDone(id, 90*time.Second)
		c.getAndCompare(id)
		shards := c.shards(id)
		if len(shards) != 8 {
			t.Errorf("%d shards after the kill, want 8: %v", len(shards), shards)
		}
		recs, err := c.rt.Done.ListJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 8 {
			t.Errorf("%d completion records, want 8", len(recs))
		}
		r, err := fleet.DecodeResult(recs[held])
		if err != nil {
			t.Fatalf("task %s: %v", held, err)
		}
		if r.WorkerId == "worker1" || r.Delivery < 2 {
			t.Errorf("the killed worker's task %s was recorded by %s on delivery %d, want another worker on a redelivery", held, r.WorkerId, r.Delivery)
		}
		c.startWorker(1, taskDelay)
	})

	t.Run("SIGTERM hands the task back at once", func(t *testing.T) {
		id := c.submit("Q4_K_M")
		w2 := c.proc("worker2")
		var held string
		deadline := time.Now().Add(30 * time.Second)
		for held == "" && time.Now().Before(deadline) {
			for _, l := range logLines(w2, `"msg":"task started"`, id) {
				task := jsonField(l, "task")
				if len(logLines(w2, `"msg":"task done"`, id, `"task":"`+task+`"`)) == 0 {
					held = task
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		if held == "" {
			t.Fatal("worker2 never held a task")
		}
		stop := time.Now()
		c.kill("worker2", syscall.SIGTERM)
		if took := time.Since(stop); took > 10*time.Second {
			t.Errorf("worker2 took %v to stop", took)
		}
		if len(logLines(w2, "handing task back")) == 0 {
			t.Error("worker2 did not log handing its task back")
		}
		// Another worker starts the task again well before AckWait (4 s) would have expired.
		var again time.Duration
		for again == 0 && time.Since(stop) < 4*time.Second {
			for _, n := range []string{"worker1", "worker3"} {
				if len(logLines(c.proc(n), `"msg":"task started"`, id, `"task":"`+held+`"`)) > 0 {
					again = time.Since(stop)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Redelivery by AckWait expiry would take 4 s or more: anything sooner was the Nak.
		if again == 0 || again >= 4*time.Second {
			t.Errorf("task %s restarted after %v, want before AckWait (4 s) expires", held, again)
		}
		c.waitDone(id, 60*time.Second)
		c.getAndCompare(id)
		c.startWorker(2, taskDelay)
	})

	t.Run("dispatcher killed and restarted mid-job", func(t *testing.T) {
		id := c.submit("Q4_K_M")
		c.waitJob(id, 30*time.Second, "two layers done", func(j *domain.QuantizationJob) bool { return j.CurrentLayer >= 2 })
		c.kill("dispatcher", syscall.SIGKILL)
		time.Sleep(1500 * time.Millisecond) // workers go on without it
		if j := c.job(id); j.Status != domain.StatusRunning {
			t.Fatalf("job is %s while the dispatcher is down", j.Status)
		}
		c.startDispatcher()
		c.waitDone(id, 60*time.Second)
		c.getAndCompare(id)
		if n := len(c.shards(id)); n != 8 {
			t.Errorf("%d shards, want 8", n)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		id := c.submit("Q4_K_M")
		c.waitJob(id, 30*time.Second, "a layer done", func(j *domain.QuantizationJob) bool { return j.CurrentLayer >= 1 })
		code, stdout, errs := c.cli("cancel", id)
		if code != 0 || !strings.Contains(stdout, "cancelled") {
			t.Fatalf("cancel: exit %d: %s%s", code, stdout, errs)
		}
		// The running tasks stop within a cancel poll; the dispatcher sweeps again after AckWait+5s.
		end := time.Now().Add(12 * time.Second)
		for time.Now().Before(end) {
			time.Sleep(500 * time.Millisecond)
		}
		if n := c.objects(id); n != 0 {
			t.Errorf("%d objects of the cancelled job are left", n)
		}
		if recs, _ := c.rt.Done.ListJob(context.Background(), id); len(recs) != 0 {
			t.Errorf("%d completion records of the cancelled job are left", len(recs))
		}
		if j := c.job(id); j.Status != domain.StatusCancelled {
			t.Errorf("job is %s", j.Status)
		}
		code, _, errs = c.cli("cancel", id)
		if code != 2 || !strings.Contains(errs, "cancelled") {
			t.Errorf("second cancel: exit %d: %s", code, errs)
		}
	})

	t.Run("resume after a full stop", func(t *testing.T) {
		id := c.submit("Q4_K_M")
		c.waitJob(id, 30*time.Second, "three layers done", func(j *domain.QuantizationJob) bool { return j.CurrentLayer >= 3 })
		for _, n := range []string{"dispatcher", "assembler", "worker1", "worker2", "worker3"} {
			c.kill(n, syscall.SIGKILL)
		}
		before, err := c.rt.Done.ListJob(context.Background(), id)
		if err != nil || len(before) < 3 || len(before) == 8 {
			t.Fatalf("%d tasks recorded at the stop (%v)", len(before), err)
		}
		// Lose one finished shard while everything is down: resume must redo it.
		var lost string
		for task := range before {
			lost = task
			break
		}
		if err := c.rt.Store.Delete(context.Background(), fleet.ShardKey(id, lost)); err != nil {
			t.Fatal(err)
		}
		c.waitLog(c.startDispatcher(), `"msg":"dispatcher started"`, 20*time.Second)
		code, _, errs := c.cli("resume", id, "--level", "Q5_K_M")
		if code != 2 || !strings.Contains(errs, "does not match") {
			t.Fatalf("resume with another level: exit %d: %s", code, errs)
		}
		code, _, errs = c.cli("resume", id, "--level", "q4_k_m")
		if code != 0 {
			t.Fatalf("resume: exit %d: %s", code, errs)
		}
		c.start("assembler", "assembler", []string{"--http-addr", "", "--keep-shards"})
		for i := 1; i <= 3; i++ {
			c.startWorker(i, taskDelay)
		}
		c.waitDone(id, 60*time.Second)
		c.getAndCompare(id)
		after, err := c.rt.Done.ListJob(context.Background(), id)
		if err != nil || len(after) != 8 {
			t.Fatalf("%d records after resume (%v)", len(after), err)
		}
		for task, b := range before {
			old, _ := fleet.DecodeResult(b)
			now, _ := fleet.DecodeResult(after[task])
			if task == lost && old.AttemptId == now.AttemptId {
				t.Errorf("task %s lost its shard but was not redone", task)
			}
			if task != lost && old.AttemptId != now.AttemptId {
				t.Errorf("task %s was done before the stop but ran again", task)
			}
		}
	})

	c.checkSecrets()
}

// TestServiceBadFlags runs each service binary with a wrong flag: one line on stderr naming it,
// exit 2, before anything starts (no server is needed to get there).
func TestServiceBadFlags(t *testing.T) {
	for _, tc := range []struct {
		service string
		args    []string
		want    string
	}{
		{"dispatcher", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"worker", []string{"--concurrency", "x"}, `invalid value "x" for flag -concurrency`},
		{"worker", []string{"--pool"}, "flag needs an argument: -pool"},
		{"assembler", []string{"--bogus", "1"}, "flag provided but not defined: -bogus"},
	} {
		t.Run(tc.service+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runExit(t, exec.Command(filepath.Join(bin, tc.service), tc.args...))
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], tc.service+": ") || !strings.Contains(lines[0], tc.want) || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q: want exit 2 and one line with %q", code, stdout, stderr, tc.want)
			}
		})
	}
}

// TestBadInput covers wrong requests and faults: unknown models, an invalid level, malformed task
// messages, NATS unreachable at submit, and object storage unreachable for the dispatcher.
func TestBadInput(t *testing.T) {
	hubSrv := hubtest.New(t)
	c := newCluster(t)
	c.startDispatcher("--hf-endpoint", hubSrv.URL)
	c.start("assembler", "assembler", []string{"--http-addr", ""})
	c.startWorker(1)

	t.Run("invalid level", func(t *testing.T) {
		code, _, errs := c.cli("submit", "--model", tiny, "--level", "Q9_K")
		if code != 2 || !strings.Contains(errs, "Q9_K") || !strings.Contains(errs, "Q4_K_M") {
			t.Errorf("exit %d: %s", code, errs)
		}
		if jobs, _ := c.c.List(context.Background()); len(jobs) != 0 {
			t.Errorf("an invalid submit created %d jobs", len(jobs))
		}
	})
	t.Run("unknown local model", func(t *testing.T) {
		code, _, errs := c.cli("submit", "--model", "./no/such/dir", "--level", "Q4_K_M")
		if code != 2 || !strings.Contains(errs, "no such directory") {
			t.Errorf("exit %d: %s", code, errs)
		}
	})
	for _, tc := range []struct{ name, model, want string }{
		{"unknown s3 model", "s3://quantfleet/models/nothing-here", "no model found"},
		{"unknown hub model", "nobody/nothing", "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := c.cli("submit", "--model", tc.model, "--level", "Q4_K_M", "--wait")
			if code != 1 || !strings.Contains(errs, "failed") || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d: %s", code, errs)
			}
		})
	}
	t.Run("malformed task messages", func(t *testing.T) {
		ctx := context.Background()
		forged, _ := proto.Marshal(&pb.Task{JobId: "j1", TaskId: "t1", Kind: pb.TaskKind_TASK_KIND_GGUF_TENSORS, Pool: "cpu",
			Plan: &pb.PlanRef{Key: "jobs/j1/plan.json"}, Output: &pb.OutputSpec{Prefix: "models/"}})
		for i, data := range [][]byte{[]byte("this is not a task"), {0xff, 0x01}, forged} {
			if _, err := queue.PublishTask(ctx, c.rt.JS, queue.PoolCPU, "junk-"+string(rune('a'+i)), data); err != nil {
				t.Fatal(err)
			}
		}
		s, err := c.rt.JS.Stream(ctx, queue.DLQStream)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			info, err := s.Info(ctx)
			if err == nil && info.State.Msgs >= 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("malformed tasks not dead-lettered: %+v %v", info, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		m, err := s.GetMsg(ctx, 1)
		if err != nil || m.Header.Get(queue.HeaderDLQReason) == "" {
			t.Errorf("dead letter without a reason: %v %v", m, err)
		}
		if !c.proc("worker1").alive() {
			t.Fatal("the worker died on a malformed message")
		}
		// ...and still works.
		id := c.submit("Q4_K_M")
		c.waitDone(id, 60*time.Second)
		c.getAndCompare(id)
	})
	t.Run("NATS unreachable at submit", func(t *testing.T) {
		code, _, errs := c.cli("submit", "--model", tiny, "--level", "Q4_K_M", "--nats-url", "nats://127.0.0.1:1", "--nats-connect-timeout", "1s")
		if code != 1 || !strings.Contains(errs, "NATS server unreachable") {
			t.Errorf("exit %d: %s", code, errs)
		}
	})
	t.Run("S3 unreachable for the dispatcher", func(t *testing.T) {
		c.kill("dispatcher", syscall.SIGTERM)
		dead := freePort(t)
		c.startDispatcher("--s3-endpoint", "127.0.0.1:"+itoa(dead), "--s3-max-retries", "2", "--transient-budget", "3s")
		code, _, errs := c.cli("submit", "--model", "s3://quantfleet/models/anything", "--level", "Q4_K_M", "--wait")
		if code != 1 || !strings.Contains(errs, "object storage unreachable") || !strings.Contains(errs, "gave up waiting after 3s") {
			t.Errorf("exit %d: %s", code, errs)
		}
	})
	c.checkSecrets()
}

// TestRun is the README's main command on a machine with no services running: `quantfleet run`
// embeds the whole fleet and writes quantize's file.
func TestRun(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(bin, "quantfleet"), "run", "--model", tiny, "--format", "gguf", "--level", "Q4_K_M",
		"--output-dir", out, "--json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()} // no fleet settings at all
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stdout)
	}
	got, err := os.ReadFile(filepath.Join(out, refName))
	if err != nil || !bytes.Equal(got, ref) {
		t.Fatalf("run wrote %d bytes (%v), quantize %d: not identical", len(got), err, len(ref))
	}
	if !bytes.Contains(stdout, []byte(`"validation_status":"valid"`)) {
		t.Errorf("no result event: %s", stdout)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// checkSecrets greps every log, KV value and stored message for the planted secrets.
func (c *cluster) checkSecrets() {
	c.t.Helper()
	secrets := []string{s3SecretKey, hfToken}
	check := func(where string, b []byte) {
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				c.t.Errorf("secret %q found in %s", s[:6]+"…", where)
			}
		}
	}
	logs, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
	if len(logs) < 4 {
		c.t.Errorf("only %d logs to check", len(logs))
	}
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		check(filepath.Base(l), b)
	}
	ctx := context.Background()
	values := 0
	for _, bucket := range []string{queue.JobsBucket, queue.TaskDoneBucket, fleet.RequestsBucket} {
		kv, err := c.rt.JS.KeyValue(ctx, bucket)
		if err != nil {
			c.t.Fatal(err)
		}
		w, err := kv.WatchAll(ctx, jetstream.IncludeHistory())
		if err != nil {
			c.t.Fatal(err)
		}
		for e := range w.Updates() {
			if e == nil {
				break
			}
			values++
			check("KV "+bucket+"/"+e.Key(), e.Value())
		}
		w.Stop()
	}
	msgs := 0
	for _, stream := range []string{queue.EventsStream, queue.DLQStream, queue.TasksStream} {
		s, err := c.rt.JS.Stream(ctx, stream)
		if err != nil {
			c.t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			c.t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				continue
			}
			msgs++
			hdr, _ := json.Marshal(m.Header)
			check("message "+stream+"/"+m.Subject, append(hdr, m.Data...))
		}
	}
	if values == 0 || msgs == 0 {
		c.t.Errorf("checked %d KV values and %d messages: nothing to check?", values, msgs)
	}
}
