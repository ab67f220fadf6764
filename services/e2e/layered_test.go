package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"quantfleet.dev/libs/domain"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/layered"
)

// gptqFlags is a small GPTQ 4-bit job (8 calibration samples of 128 tokens): a chain of 6 layer
// tasks on tiny-llama.
func gptqFlags(shared string) []string {
	return []string{"--format", "gptq", "--level", "4bit", "--sym=false", "--group-size", "128",
		"--calibration-data", filepath.Join(shared, "data", "calib.txt"), "--calibration-samples", "8", "--seqlen", "128"}
}

const (
	gptqName   = "tl-gptq"
	gptqLayers = 6 // tiny-llama's decoder layers
	// layerDelay makes each layer task slow enough to be caught while held.
	layerDelay = "QUANTFLEET_TEST_TASK_DELAY=900ms"
)

// TestFleetGPTQ runs a GPTQ job as a chain of layer tasks on separate processes: a worker killed
// with SIGKILL while it holds a layer task, and the dispatcher killed and restarted mid-chain.
// Each downloaded checkpoint directory must equal `quantfleet quantize`'s file for file, and each
// layer must leave one result, one activations object and one completion record.
func TestFleetGPTQ(t *testing.T) {
	shared := filepath.Dir(filepath.Dir(tiny))
	flags := gptqFlags(shared)

	// The reference: the local pipeline with the same flags.
	refDir := filepath.Join(t.TempDir(), "ref")
	q := exec.Command(filepath.Join(bin, "quantfleet"), append([]string{"quantize", "--model", tiny, "--output-dir", refDir,
		"--output-name", gptqName, "--verbosity", "quiet"}, flags...)...)
	if b, err := q.CombinedOutput(); err != nil {
		t.Fatalf("quantfleet quantize: %v\n%s", err, b)
	}
	want := readDir(t, filepath.Join(refDir, gptqName))
	if len(want) < 4 || want["model.safetensors"] == nil {
		t.Fatalf("quantize wrote %d files", len(want))
	}

	c := newCluster(t)
	c.startFleet(3, layerDelay)
	submit := func() string {
		return c.submit("4bit", append(slices.Clone(flags[2:]), "--format", "gptq", "--output-name", gptqName)...)
	}

	t.Run("kill -9 the worker holding a layer", func(t *testing.T) {
		id := submit()
		// Wait for layer 1 or later to be held, so the kill lands mid-chain.
		var victim, held string
		deadline := time.Now().Add(30 * time.Second)
		for victim == "" && time.Now().Before(deadline) {
			for _, n := range []string{"worker1", "worker2", "worker3"} {
				for _, l := range logLines(c.proc(n), `"msg":"task started"`, id) {
					task := jsonField(l, "task")
					if task != layered.LayerTaskID(0) && len(logLines(c.proc(n), `"msg":"task done"`, id, `"task":"`+task+`"`)) == 0 {
						victim, held = n, task
					}
				}
			}
			if victim == "" {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if victim == "" {
			t.Fatal("no worker was seen holding a layer task")
		}
		c.kill(victim, syscall.SIGKILL)
		j := c.waitDone(id, 120*time.Second)
		if j.TotalLayers != gptqLayers || j.CurrentLayer != gptqLayers {
			t.Errorf("job record: layer %d/%d, want %d/%d", j.CurrentLayer, j.TotalLayers, gptqLayers, gptqLayers)
		}
		c.compareDir(id, want)
		recs := c.checkLayerObjects(id)
		r, err := fleet.DecodeResult(recs[held])
		if err != nil {
			t.Fatalf("task %s: %v", held, err)
		}
		if r.WorkerId == victim || r.Delivery < 2 {
			t.Errorf("the killed worker's layer %s was recorded by %s on delivery %d, want another worker on a redelivery", held, r.WorkerId, r.Delivery)
		}
		i := slices.IndexFunc([]string{"worker1", "worker2", "worker3"}, func(s string) bool { return s == victim })
		c.startWorker(i+1, layerDelay)
	})

	t.Run("dispatcher killed and restarted mid-chain", func(t *testing.T) {
		id := submit()
		c.waitJob(id, 60*time.Second, "two layers done", func(j *domain.QuantizationJob) bool { return j.CurrentLayer >= 2 })
		c.kill("dispatcher", syscall.SIGKILL)
		before, err := c.rt.Done.ListJob(context.Background(), id)
		if err != nil || len(before) < 2 || len(before) == gptqLayers {
			t.Fatalf("%d layers recorded at the kill (%v)", len(before), err)
		}
		time.Sleep(1500 * time.Millisecond) // the layer in flight finishes; the next is not published
		if j := c.job(id); j.Status != domain.StatusRunning {
			t.Fatalf("job is %s while the dispatcher is down", j.Status)
		}
		c.startDispatcher()
		j := c.waitDone(id, 120*time.Second)
		if j.CurrentLayer != gptqLayers {
			t.Errorf("job record: layer %d/%d", j.CurrentLayer, j.TotalLayers)
		}
		c.compareDir(id, want)
		after := c.checkLayerObjects(id)
		// The chain resumed at the first layer without a record: finished layers did not run again.
		for task, b := range before {
			old, _ := fleet.DecodeResult(b)
			now, _ := fleet.DecodeResult(after[task])
			if old == nil || now == nil || old.AttemptId != now.AttemptId {
				t.Errorf("layer %s was finished before the kill but ran again", task)
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
func (c *cluster) compareDir(id string, want map[string][]byte) {
	c.t.Helper()
	out := filepath.Join(c.t.TempDir(), "out")
	code, _, errs := c.cli("get", id, "--output-dir", out)
	if code != 0 {
		c.t.Fatalf("get: exit %d: %s", code, errs)
	}
	got := readDir(c.t, filepath.Join(out, gptqName))
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

// checkLayerObjects checks that every layer left exactly one result object, one activations
// object (but the last) and one completion record, and returns the records.
func (c *cluster) checkLayerObjects(id string) map[string][]byte {
	c.t.Helper()
	ctx := context.Background()
	var wantShards, wantActs []string
	for i := range gptqLayers {
		wantShards = append(wantShards, fleet.ShardKey(id, layered.LayerTaskID(i)))
		wantActs = append(wantActs, fleet.ActivationsKey(id, i)) // 0 from planning, i+1 from layer i
	}
	if shards := c.shards(id); !slices.Equal(shards, wantShards) {
		c.t.Errorf("layer results %v, want one per layer %v", shards, wantShards)
	}
	var acts []string
	for oi, err := range c.rt.Store.List(ctx, fleet.JobPrefix(id)+"act/") {
		if err != nil {
			c.t.Fatal(err)
		}
		acts = append(acts, oi.Key)
	}
	slices.Sort(acts)
	slices.Sort(wantActs)
	if !slices.Equal(acts, wantActs) {
		c.t.Errorf("activations %v, want %v", acts, wantActs)
	}
	recs, err := c.rt.Done.ListJob(ctx, id)
	if err != nil {
		c.t.Fatal(err)
	}
	if len(recs) != gptqLayers {
		c.t.Errorf("%d completion records, want %d", len(recs), gptqLayers)
	}
	for i := range gptqLayers {
		task := layered.LayerTaskID(i)
		r, err := fleet.DecodeResult(recs[task])
		if err != nil {
			c.t.Errorf("layer %s: record %v", task, err)
			continue
		}
		// The record names the layer's result and, but for the last layer, the activations it wrote.
		keys := []string{fleet.ShardKey(id, task)}
		if i+1 < gptqLayers {
			keys = append(keys, fleet.ActivationsKey(id, i+1))
		}
		var got []string
		for _, sh := range r.Shards {
			got = append(got, sh.Key)
		}
		if !slices.Equal(got, keys) {
			c.t.Errorf("layer %s: record names %v, want %v", task, got, keys)
		}
		c.checkShardSums(r)
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
