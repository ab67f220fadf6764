package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/synth"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
)

// layeredJob is a small calibrated job on tiny-llama: 8 calibration samples of 64 tokens in 2
// shards of 4.
type layeredJob struct {
	name  string   // output directory name
	flags []string // submit/quantize flags but --model, --output-*
	tasks int      // tasks of the plan
	model string   // model directory; "": tiny-llama
}

func layeredJobs(shared string) (gptqJob, awqJob layeredJob) {
	calib := []string{"--group-size", "128", "--calibration-data", filepath.Join(shared, "data", "calib.txt"),
		"--calibration-samples", "8", "--seqlen", "64", "--shard-samples", "4"}
	gptqJob = layeredJob{name: "tl-gptq", flags: append([]string{"--format", "gptq", "--level", "4bit", "--sym=false", "--act-order"}, calib...),
		// 6 layers × 4 groups × (2 Hessian partials + a solve) + 5 layers × 2 forwards
		tasks: gptqLayers*4*3 + (gptqLayers-1)*2}
	awqJob = layeredJob{name: "tl-awq", flags: append([]string{"--format", "awq", "--level", "4bit"}, calib...),
		// 6 layers × (3 steps × 2 shards + a finish)
		tasks: gptqLayers * (3*2 + 1)}
	return gptqJob, awqJob
}

const (
	gptqLayers = 6 // tiny-llama's decoder layers
	// layeredDelay makes each task slow enough to be caught while held.
	layeredDelay = "QUANTFLEET_TEST_TASK_DELAY=300ms"
)

// quantizeRef runs `quantfleet quantize` with the job's flags and reads the directory it wrote.
func quantizeRef(t *testing.T, j layeredJob) map[string][]byte {
	t.Helper()
	refDir := filepath.Join(t.TempDir(), "ref")
	model := j.model
	if model == "" {
		model = tiny
	}
	q := exec.Command(filepath.Join(bin, "quantfleet"), append([]string{"quantize", "--model", model, "--output-dir", refDir,
		"--output-name", j.name, "--verbosity", "quiet"}, j.flags...)...)
	if b, err := q.CombinedOutput(); err != nil {
		t.Fatalf("quantfleet quantize: %v\n%s", err, b)
	}
	want := readDir(t, filepath.Join(refDir, j.name))
	if len(want) < 4 || want["model.safetensors"] == nil {
		t.Fatalf("quantize wrote %d files", len(want))
	}
	return want
}

// TestFleetLayered runs a GPTQ 4-bit act-order job (the sharded pipeline: Hessian partials per
// calibration shard, group solves, forwards per shard) and an AWQ 4-bit job (statistics, scale
// losses and clip statistics per shard, a finish per layer) on separate worker processes: with
// 1 and 2 workers, with 3 workers of which one is killed by SIGKILL while it holds a Hessian
// partial and another while it holds a solve, and with the dispatcher killed and restarted.
// Every downloaded checkpoint directory must equal `quantfleet quantize`'s file for file, and
// every task must leave one completion record whose objects are intact.
func TestFleetLayered(t *testing.T) {
	shared := filepath.Dir(filepath.Dir(tiny))
	gj, aj := layeredJobs(shared)
	want := map[string]map[string][]byte{gj.name: quantizeRef(t, gj), aj.name: quantizeRef(t, aj)}

	c := newCluster(t)
	submit := func(j layeredJob) string {
		return c.submit("4bit", append(slices.Clone(j.flags[4:]), "--format", j.flags[1], "--output-name", j.name)...)
	}
	check := func(id string, j layeredJob, rec *domain.QuantizationJob) map[string][]byte {
		if rec.TotalLayers != gptqLayers || rec.CurrentLayer != gptqLayers || rec.TotalTasks != j.tasks || rec.TasksDone != j.tasks {
			t.Errorf("job %s record: layer %d/%d, task %d/%d; want %d/%d, %d/%d", id, rec.CurrentLayer, rec.TotalLayers, rec.TasksDone, rec.TotalTasks,
				gptqLayers, gptqLayers, j.tasks, j.tasks)
		}
		if rec.PeakMemoryUsage <= 0 || rec.CheckpointPath == "" {
			t.Errorf("job %s record: peak memory %d, checkpoint %q", id, rec.PeakMemoryUsage, rec.CheckpointPath)
		}
		c.compareDir(id, j.name, want[j.name])
		return c.checkTaskObjects(id, j.tasks)
	}

	c.startDispatcher()
	c.start("assembler", "assembler", []string{"--http-addr", "", "--keep-shards"})
	for n := 1; n <= 2; n++ {
		t.Run(fmt.Sprintf("%d workers", n), func(t *testing.T) {
			c.startWorker(n)
			g, a := submit(gj), submit(aj)
			check(g, gj, c.waitDone(g, 180*time.Second))
			check(a, aj, c.waitDone(a, 180*time.Second))
		})
	}

	// The rest runs on 3 workers with slow tasks, so that a task can be caught while held.
	workers := []string{"worker1", "worker2", "worker3"}
	for i, n := range workers {
		c.kill(n, syscall.SIGTERM)
		c.startWorker(i+1, layeredDelay)
	}
	// held waits for a worker holding a task of job id whose id starts with prefix (and is past
	// layer 0) and returns the worker and the task.
	held := func(id, prefix string) (string, string) {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			for _, n := range workers {
				for _, l := range logLines(c.proc(n), `"msg":"task started"`, id, `"task":"`+prefix) {
					task := jsonField(l, "task")
					if !strings.HasPrefix(task, prefix+"0000") && len(logLines(c.proc(n), `"msg":"task done"`, id, `"task":"`+task+`"`)) == 0 {
						return n, task
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no worker was seen holding a %s… task of job %s", prefix, id)
		return "", ""
	}

	t.Run("3 workers, kill -9 the workers holding a Hessian partial and a solve", func(t *testing.T) {
		id, a := submit(gj), submit(aj)
		var killed [][2]string
		for _, prefix := range []string{"h", "q"} {
			victim, task := held(id, prefix)
			c.kill(victim, syscall.SIGKILL)
			killed = append(killed, [2]string{victim, task})
			c.startWorker(slices.Index(workers, victim)+1, layeredDelay)
		}
		recs := check(id, gj, c.waitDone(id, 240*time.Second))
		check(a, aj, c.waitDone(a, 240*time.Second))
		for _, k := range killed {
			r, err := fleet.DecodeResult(recs[k[1]])
			if err != nil {
				t.Fatalf("task %s: %v", k[1], err)
			}
			if r.Delivery < 2 {
				t.Errorf("the killed %s's task %s was recorded on delivery %d, want a redelivery", k[0], k[1], r.Delivery)
			}
		}
	})

	t.Run("dispatcher killed and restarted", func(t *testing.T) {
		id := submit(gj)
		c.waitJob(id, 120*time.Second, "ten tasks done", func(j *domain.QuantizationJob) bool { return j.TasksDone >= 10 })
		c.kill("dispatcher", syscall.SIGKILL)
		before, err := c.rt.Done.ListJob(context.Background(), id)
		if err != nil || len(before) < 10 || len(before) == gj.tasks {
			t.Fatalf("%d tasks recorded at the kill (%v)", len(before), err)
		}
		time.Sleep(1500 * time.Millisecond)
		if j := c.job(id); j.Status != domain.StatusRunning {
			t.Fatalf("job is %s while the dispatcher is down", j.Status)
		}
		c.startDispatcher()
		after := check(id, gj, c.waitDone(id, 240*time.Second))
		// Finished tasks did not run again.
		for task, b := range before {
			old, _ := fleet.DecodeResult(b)
			now, _ := fleet.DecodeResult(after[task])
			if old == nil || now == nil || old.AttemptId != now.AttemptId {
				t.Errorf("task %s was finished before the kill but ran again", task)
			}
		}
		if n := len(logLines(c.proc("dispatcher"), `"msg":"dispatcher started"`)); n < 2 {
			t.Errorf("the dispatcher log shows %d starts, want 2", n)
		}
	})

	c.checkSecrets()
}

// readDir reads every file of a directory (not recursive).
func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		if e.IsDir() {
			t.Errorf("%s holds a directory %s", dir, e.Name())
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// compareDir downloads a checkpoint directory with `quantfleet get` and compares every file
// with want.
func (c *cluster) compareDir(id, name string, want map[string][]byte) {
	c.t.Helper()
	out := filepath.Join(c.t.TempDir(), "out")
	code, _, errs := c.cli("get", id, "--output-dir", out)
	if code != 0 {
		c.t.Fatalf("get: exit %d: %s", code, errs)
	}
	got := readDir(c.t, filepath.Join(out, name))
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			c.t.Errorf("job %s: the fleet's checkpoint has no %s", id, name)
		case !bytes.Equal(g, w):
			c.t.Errorf("job %s: %s differs from quantize's (%d vs %d bytes)", id, name, len(g), len(w))
		}
	}
	for name := range got {
		if want[name] == nil {
			c.t.Errorf("job %s: the fleet's checkpoint has an extra file %s", id, name)
		}
	}
}

// checkTaskObjects checks that every task left one completion record whose objects are intact,
// and that the job's shard prefix holds exactly those objects and the layer-0 inputs; it returns
// the records.
func (c *cluster) checkTaskObjects(id string, tasks int) map[string][]byte {
	c.t.Helper()
	recs, err := c.rt.Done.ListJob(context.Background(), id)
	if err != nil {
		c.t.Fatal(err)
	}
	if len(recs) != tasks {
		c.t.Errorf("%d completion records, want %d", len(recs), tasks)
	}
	var wantKeys []string
	for task, b := range recs {
		r, err := fleet.DecodeResult(b)
		if err != nil {
			c.t.Errorf("task %s: record %v", task, err)
			continue
		}
		if len(r.Shards) == 0 || r.Shards[0].Key != fleet.ShardKey(id, task) {
			c.t.Errorf("task %s: record names %v first", task, r.Shards)
		}
		for _, sh := range r.Shards {
			wantKeys = append(wantKeys, sh.Key)
		}
		c.checkShardSums(r)
	}
	var got []string
	for _, k := range c.shards(id) {
		if !strings.HasPrefix(k, fleet.ShardPrefix(id)+"x0000s") { // the layer-0 inputs come from planning
			got = append(got, k)
		}
	}
	slices.Sort(wantKeys)
	if !slices.Equal(got, wantKeys) {
		c.t.Errorf("job %s: %d objects under its shard prefix, its records name %d", id, len(got), len(wantKeys))
	}
	return recs
}

// checkShardSums checks the objects a record names against its sizes and SHA-256s: a
// duplicate attempt must not have rewritten them with other bytes.
func (c *cluster) checkShardSums(r *pb.TaskResult) {
	c.t.Helper()
	for _, sh := range r.Shards {
		rc, _, err := c.rt.Store.Get(context.Background(), sh.Key)
		if err != nil {
			c.t.Errorf("%s: %v", sh.Key, err)
			continue
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		sum := sha256.Sum256(b)
		if err != nil || int64(len(b)) != sh.Size || hex.EncodeToString(sum[:]) != sh.Sha256 {
			c.t.Errorf("%s: %d bytes (%v), SHA-256 %x; the record says %d bytes, %s", sh.Key, len(b), err, sum, sh.Size, sh.Sha256)
		}
	}
}

// TestFleetLayeredFullStop stops a whole fleet running a GPTQ act-order job by SIGKILL — the
// dispatcher, the assembler, the workers, the NATS server and the S3 server — once a layer is
// complete, keeps only their data directory, and starts everything again: the job must complete
// with quantize's checkpoint, byte for byte, without running again a task finished before the
// stop. Mid-job the record counts whole layers and tasks apart.
func TestFleetLayeredFullStop(t *testing.T) {
	shared := filepath.Dir(filepath.Dir(tiny))
	gj, _ := layeredJobs(shared)
	want := quantizeRef(t, gj)

	c := newCluster(t)
	c.startFleet(2, layeredDelay)
	id := c.submit("4bit", append(slices.Clone(gj.flags[4:]), "--format", gj.flags[1], "--output-name", gj.name)...)
	// A GPTQ layer is 4 groups × (2 Hessian partials + a solve) + 2 forwards: 14 tasks.
	const perLayer = 4*3 + 2
	mid := c.waitJob(id, 120*time.Second, "a layer complete", func(j *domain.QuantizationJob) bool { return j.CurrentLayer >= 1 })
	if mid.TotalLayers != gptqLayers || mid.TotalTasks != gj.tasks || mid.TasksDone < min(mid.CurrentLayer*perLayer, gj.tasks) || mid.TasksDone == gj.tasks ||
		mid.ProgressPercentage != 100*float64(mid.TasksDone)/float64(gj.tasks) || mid.CheckpointPath == "" || mid.PeakMemoryUsage <= 0 {
		t.Errorf("running job record: layer %d/%d, task %d/%d, %.1f%%, checkpoint %q, peak memory %d", mid.CurrentLayer, mid.TotalLayers,
			mid.TasksDone, mid.TotalTasks, mid.ProgressPercentage, mid.CheckpointPath, mid.PeakMemoryUsage)
	}

	fleetProcs := []string{"dispatcher", "assembler", "worker1", "worker2"}
	for _, n := range fleetProcs {
		c.kill(n, syscall.SIGKILL)
	}
	// Nothing of the fleet runs now: these are the records the stop leaves.
	before, err := c.rt.Done.ListJob(context.Background(), id)
	if err != nil || len(before) < perLayer || len(before) == gj.tasks {
		t.Fatalf("%d tasks recorded at the stop (%v)", len(before), err)
	}
	for _, n := range []string{"nats", "s3"} {
		c.kill(n, syscall.SIGKILL)
	}
	// Where each worker's log stands at the restart: later lines are the restarted fleet's.
	offsets := map[string]int{}
	for _, n := range fleetProcs[2:] {
		offsets[n] = len(logLines(c.proc(n)))
	}

	c.restartServers()
	c.startFleet(2)
	done := c.waitDone(id, 240*time.Second)
	if done.CurrentLayer != gptqLayers || done.TotalLayers != gptqLayers || done.TasksDone != gj.tasks || done.TotalTasks != gj.tasks {
		t.Errorf("completed job record: layer %d/%d, task %d/%d", done.CurrentLayer, done.TotalLayers, done.TasksDone, done.TotalTasks)
	}
	c.compareDir(id, gj.name, want)
	after := c.checkTaskObjects(id, gj.tasks)
	for task, b := range before {
		old, _ := fleet.DecodeResult(b)
		now, _ := fleet.DecodeResult(after[task])
		if old == nil || now == nil || old.AttemptId != now.AttemptId {
			t.Errorf("task %s: its record changed across the stop", task)
		}
	}
	// Records are first-wins, so only the logs tell whether a finished task ran again.
	rerun, ran := 0, 0
	for n, off := range offsets {
		for _, l := range logLines(c.proc(n))[off:] {
			if !strings.Contains(l, `"msg":"task started"`) || !strings.Contains(l, id) {
				continue
			}
			ran++
			if task := jsonField(l, "task"); before[task] != nil {
				rerun++
				t.Errorf("task %s was finished before the stop but %s ran it again", task, n)
			}
		}
	}
	if ran != gj.tasks-len(before) {
		t.Errorf("the restarted workers started %d tasks (%d reruns), want the %d missing ones", ran, rerun, gj.tasks-len(before))
	}
	if n := len(logLines(c.proc("dispatcher"), `"msg":"dispatcher started"`)); n != 2 {
		t.Errorf("the dispatcher log shows %d starts, want 2", n)
	}
	c.checkSecrets()
}

// restartServers starts the NATS and S3 servers again on their addresses and data directory (after
// they were killed) and waits until both answer.
func (c *cluster) restartServers() {
	c.t.Helper()
	// The killed server's connections can hold its port for a while (their sockets close after
	// the clients notice): wait until it can be bound, and start again if the start lost a race.
	addr := strings.TrimPrefix(c.natsURL, "nats://")
	deadline := time.Now().Add(120 * time.Second)
	var nats *proc
	for nats == nil {
		for {
			l, err := net.Listen("tcp", addr)
			if err == nil {
				l.Close()
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("the NATS port stays taken: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		started := len(logLines(c.proc("nats"), `"nats_url"`))
		p := c.startNATS()
		for p.alive() && len(logLines(p, `"nats_url"`)) == started {
			time.Sleep(50 * time.Millisecond)
		}
		if p.alive() {
			nats = p
		} else if time.Now().After(deadline) {
			c.t.Fatalf("NATS did not start again: %v", p.err)
		}
	}
	c.startS3()
	c.servers = []*proc{nats, c.proc("s3")}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.rt.Done.ListJob(ctx, "none")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("NATS not back for the test's client: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFleetLayeredMoE runs jobs of the synthetic Mixtral (2 layers of 8 experts) on 2 worker
// processes: GPTQ 4-bit (each expert's gate/up and down are groups of their own, with Hessian
// partials per shard and a solve, independent of the other experts') and AWQ 4-bit (per layer
// statistics, scale losses and clipping statistics per shard, then a finish; every expert's
// gate/up scaled against the whole block). The downloaded checkpoint directory must equal
// `quantfleet quantize`'s file for file and every task must leave one completion record; both
// workers must have run expert tasks of the GPTQ job.
func TestFleetLayeredMoE(t *testing.T) {
	mod, err := moduleDir()
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Dir(filepath.Dir(tiny))
	a, err := synth.LoadRepoAssets(filepath.Join(mod, "..", "libs"), shared)
	if err != nil {
		t.Fatal(err)
	}
	model, err := synth.Write(t.TempDir(), "Mixtral-synth-8x", a)
	if err != nil {
		t.Fatal(err)
	}
	calib := []string{"--calibration-data", filepath.Join(shared, "data", "calib.txt"), "--calibration-samples", "4", "--seqlen", "32", "--shard-samples", "2"}
	jobs := []struct {
		format string
		job    layeredJob
	}{
		{"gptq", layeredJob{name: "mixtral-gptq", model: model,
			flags: append([]string{"--format", "gptq", "--level", "4bit", "--group-size", "32", "--act-order"}, calib...),
			// 2 layers × (q/k/v, o, 8 × (gate/up, down)) × (2 Hessian partials + a solve) + 2 forwards
			tasks: 2*(2+8*2)*3 + 2}},
		{"awq", layeredJob{name: "mixtral-awq", model: model,
			flags: append([]string{"--format", "awq", "--level", "4bit"}, calib...),
			// 2 layers × (3 steps × 2 shards + a finish)
			tasks: 2 * (3*2 + 1)}},
	}
	c := newCluster(t)
	c.startFleet(2)
	for _, tc := range jobs {
		j := tc.job
		want := quantizeRef(t, j)
		start := time.Now()
		id := c.submitModel(model, "4bit", append(slices.Clone(j.flags[4:]), "--format", tc.format, "--output-name", j.name)...)
		rec := c.waitDone(id, 240*time.Second)
		t.Logf("the fleet's %s job took %.1fs (%d tasks, 2 workers)", tc.format, time.Since(start).Seconds(), j.tasks)
		if rec.TotalLayers != 2 || rec.CurrentLayer != 2 || rec.TotalTasks != j.tasks || rec.TasksDone != j.tasks {
			t.Errorf("%s job record: layer %d/%d, task %d/%d; want 2/2, %d/%d", tc.format, rec.CurrentLayer, rec.TotalLayers, rec.TasksDone, rec.TotalTasks, j.tasks, j.tasks)
		}
		c.compareDir(id, j.name, want)
		c.checkTaskObjects(id, j.tasks)
		if tc.format != "gptq" {
			continue
		}
		for _, w := range []string{"worker1", "worker2"} {
			if len(logLines(c.proc(w), `"msg":"task done"`, id, "experts.")) == 0 && len(logLines(c.proc(w), `"msg":"task done"`, id, `"task":"h`)) == 0 {
				t.Errorf("%s ran no Hessian task of the job", w)
			}
		}
	}
	c.checkSecrets()
}
