package cli

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/progress"
)

// A sharded GPTQ job mid-run: 2 of 6 layers complete, 80 of 200 tasks. watch and status must show
// whole layers and the tasks apart, with the percentage and ETA of the tasks.
func runningShardedJob() *domain.QuantizationJob {
	start := time.Now().Add(-80 * time.Second)
	j := &domain.QuantizationJob{JobID: "j1", Status: domain.StatusRunning, StartTime: start, CurrentMemoryUsage: 300 << 20,
		PeakMemoryUsage: 500 << 20, CheckpointPath: "s3://quantfleet/jobs/j1/checkpoint.json"}
	j.SetProgress(domain.Progress{LayersDone: 2, Layers: 6, TasksDone: 80, Tasks: 200}, start.Add(80*time.Second))
	return j
}

func TestProgressLineLayersAndTasks(t *testing.T) {
	line := progressLine(runningShardedJob())
	for _, want := range []string{"layer 2/6", "task 80/200", " 40%", "ETA 2:0", "mem 300.0 MiB (peak 500.0 MiB)"} {
		if !strings.Contains(line, want) {
			t.Errorf("progress line %q lacks %q", line, want)
		}
	}
	var b bytes.Buffer
	jobSummary(&b, runningShardedJob())
	for _, want := range []string{"layer 2/6, task 80/200, 40.0%", "s3://quantfleet/jobs/j1/checkpoint.json", "300.0 MiB (peak 500.0 MiB)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

func TestWatchJSONLayersAndTasks(t *testing.T) {
	var out bytes.Buffer
	w := newJobWatcher(Env{Stdout: &out, Stderr: &bytes.Buffer{}}, domain.VerbosityNormal, true)
	w.update(runningShardedJob())
	var ev progressEvent
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.CurrentLayer != 2 || ev.TotalLayers != 6 || ev.TasksDone != 80 || ev.TotalTasks != 200 || ev.Percent != 40 ||
		ev.ETASeconds < 100 || ev.ETASeconds > 121 || ev.PeakMemoryBytes != 500<<20 {
		t.Errorf("event %+v", ev)
	}
}

// Without a terminal, watch prints a line when a tenth of the tasks is done even though no layer
// completed, and not for every task.
func TestWatchPlainPrintsByTenths(t *testing.T) {
	var errb bytes.Buffer
	w := newJobWatcher(Env{Stdout: &bytes.Buffer{}, Stderr: &errb}, domain.VerbosityNormal, false)
	j := runningShardedJob()
	for tasks := 80; tasks <= 100; tasks++ {
		j.SetProgress(domain.Progress{LayersDone: 2, Layers: 6, TasksDone: tasks, Tasks: 200}, time.Now())
		w.update(j)
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "task 100/200") {
		t.Errorf("%d lines:\n%s", len(lines), errb.String())
	}
}

// TestQuantizeJSONLayersAndTasks: local GPTQ quantize's --json progress counts tasks (Hessian
// partials, solves, forwards: 6 layers × 4 groups × (2 partials + a solve) + 5 × 2 forwards) and
// names the whole layers complete in its item, ending at "layer 6/6".
func TestQuantizeJSONLayersAndTasks(t *testing.T) {
	shared := sharedDir(t)
	out := t.TempDir()
	code, stdout, stderr := runCLI(t, "quantize", "--model", filepath.Join(shared, "models", "tiny-llama"), "--format", "gptq", "--level", "4bit",
		"--calibration-data", filepath.Join(shared, "data", "calib.txt"), "--calibration-samples", "2", "--seqlen", "16", "--shard-samples", "1",
		"--output-dir", out, "--output-name", "q", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	const tasks = 6*4*3 + 5*2
	var last progress.Event
	layersSeen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var ev progress.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if ev.Stage != "quantize" || ev.Kind != progress.KindProgress {
			continue
		}
		if ev.Total != tasks {
			t.Fatalf("progress over %d, want %d tasks: %s", ev.Total, tasks, l)
		}
		layer, _, _ := strings.Cut(ev.Item, ",")
		layersSeen[layer] = true
		last = ev
	}
	if last.Done != tasks || !strings.HasPrefix(last.Item, "layer 6/6, ") {
		t.Errorf("last progress event: %d/%d, item %q; want %d tasks, layer 6/6", last.Done, last.Total, last.Item, tasks)
	}
	if len(layersSeen) < 2 {
		t.Errorf("the items named only %v", layersSeen)
	}
}
