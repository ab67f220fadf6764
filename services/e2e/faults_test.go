package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
)

// outage is how long the S3 server stays down mid-job: the 150 s, longer than the five
// quick attempts that used to fail a job, shorter than the default 10-minute budget.
const outage = 150 * time.Second

// TestTransientAndPermanent runs on separate processes: the S3 server stopped for 150 s mid-job and
// started again (the job waits, shows "waiting for object storage", and completes with quantize's
// bytes); a FAILED job resumed once its cause is fixed (completes); a hostile model (fails at
// planning, naming the user's directory, while the services stay up and run the next job). It runs
// in parallel with the other tests: it mostly waits.
func TestTransientAndPermanent(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	// Short retry intervals so the job goes on soon after S3 is back; the budget stays the default.
	c.env = append(c.env, "QUANTFLEET_TRANSIENT_BACKOFF_MAX=3s")
	c.startFleet(2, taskDelay)

	t.Run("S3 down for 150 s mid-job", func(t *testing.T) {
		id := c.submit("Q4_K_M")
		c.waitJob(id, time.Minute, "two layers done", func(j *domain.QuantizationJob) bool { return j.CurrentLayer >= 2 })
		c.kill("s3", syscall.SIGKILL)
		down := time.Now()
		c.waitJob(id, time.Minute, "waiting for object storage", func(j *domain.QuantizationJob) bool {
			return j.Waiting == "waiting for object storage"
		})
		code, stdout, _ := c.cli("status", id)
		if code != 0 || !strings.Contains(stdout, "waiting for object storage") {
			t.Errorf("status during the outage: exit %d\n%s", code, stdout)
		}
		for time.Since(down) < outage {
			if j := c.job(id); j.Status != domain.StatusRunning {
				t.Fatalf("job %s after %v of outage: %s", j.Status, time.Since(down).Round(time.Second), j.ErrorMessage)
			}
			time.Sleep(5 * time.Second)
		}
		c.startS3()
		j := c.waitDone(id, 3*time.Minute)
		if j.Waiting != "" {
			t.Errorf("completed job still waiting: %q", j.Waiting)
		}
		c.getAndCompare(id)
		for _, n := range []string{"dispatcher", "assembler", "worker1", "worker2"} {
			if !c.proc(n).alive() {
				t.Errorf("%s died during the outage", n)
			}
		}
	})

	t.Run("FAILED job resumed after its cause is fixed", func(t *testing.T) {
		code, _, errs := c.cli("submit", "--model", "s3://quantfleet/models/tiny-llama", "--level", "Q4_K_M", "--wait")
		if code != 1 || !strings.Contains(errs, "no model found") {
			t.Fatalf("submit of a missing model: exit %d: %s", code, errs)
		}
		id := c.lastJob().JobID
		if j := c.job(id); j.Status != domain.StatusFailed {
			t.Fatalf("job %s is %s", id, j.Status)
		}
		// The fix: the model appears where the job looks for it.
		entries, _ := os.ReadDir(tiny)
		for _, e := range entries {
			f, err := os.Open(filepath.Join(tiny, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			_, err = c.rt.Store.Put(context.Background(), "models/tiny-llama/"+e.Name(), f, st.Size(), blob.PutOptions{})
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		code, _, errs = c.cli("resume", id, "--wait")
		if code != 0 {
			t.Fatalf("resume of the failed job: exit %d: %s", code, errs)
		}
		j := c.waitDone(id, 2*time.Minute)
		c.getAndCompare(id)
		var seen []string
		for _, h := range j.History {
			seen = append(seen, string(h.From)+"→"+string(h.To))
		}
		if got := strings.Join(seen, " "); !strings.Contains(got, "running→failed failed→pending pending→running running→completed") {
			t.Errorf("history %s", got)
		}
	})

	t.Run("hostile model fails at planning, services stay up", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "hostile-llama")
		if err := os.CopyFS(dir, os.DirFS(tiny)); err != nil {
			t.Fatal(err)
		}
		_ = filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error { return os.Chmod(p, 0o755) })
		raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
		var cfg map[string]any
		if err := json.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		// A vocabulary of 10^12 entries once made the planner allocate until the kernel killed
		// it, on every restart; now the config is checked against the weights first.
		cfg["vocab_size"] = 1_000_000_000_000
		raw, _ = json.Marshal(cfg)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
		pids := map[string]int{}
		for _, n := range []string{"dispatcher", "worker1", "worker2", "assembler"} {
			pids[n] = c.proc(n).cmd.Process.Pid
		}
		code, _, errs := c.cli("submit", "--model", dir, "--level", "Q4_K_M", "--wait")
		if code != 1 || !strings.Contains(errs, "vocab_size") || !strings.Contains(errs, dir) || strings.Contains(errs, "quantfleet-plan-") {
			t.Fatalf("submit of a hostile model: exit %d: %s", code, errs)
		}
		bad := c.lastJob()
		// A good job after it completes on the same processes.
		id := c.submit("Q4_K_M")
		c.waitDone(id, 2*time.Minute)
		c.getAndCompare(id)
		for n, pid := range pids {
			if p := c.proc(n); !p.alive() || p.cmd.Process.Pid != pid {
				t.Errorf("%s died or was restarted", n)
			}
		}
		// Failed once, never taken up again.
		if j := c.job(bad.JobID); j.Status != domain.StatusFailed || len(j.History) != 2 {
			t.Errorf("hostile job %s, history %+v", j.Status, j.History)
		}
		if n := len(logLines(c.proc("dispatcher"), `"msg":"job claimed"`, bad.JobID)); n != 1 {
			t.Errorf("the hostile job was claimed %d times", n)
		}
	})
	c.checkSecrets()
}

// startS3 starts the S3 server again on its address and data directory, and waits until it answers.
func (c *cluster) startS3() {
	c.t.Helper()
	c.start("s3", "quantfleet", []string{"dev-servers", "--serve", "s3", "--dir", filepath.Join(c.dir, "data"), "--s3-addr", c.s3})
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.rt.Store.Exists(ctx, "ping")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("S3 server not back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lastJob is the job submitted last.
func (c *cluster) lastJob() *domain.QuantizationJob {
	c.t.Helper()
	jobs, err := c.c.List(context.Background())
	if err != nil || len(jobs) == 0 {
		c.t.Fatalf("no jobs (%v)", err)
	}
	return jobs[len(jobs)-1]
}
