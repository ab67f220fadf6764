package local_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/local"
	"quantfleet.dev/services/internal/testenv"
)

// sameDir fails unless the directories hold the same files with the same bytes.
func sameDir(t *testing.T, want, got string) {
	t.Helper()
	we, err := os.ReadDir(want)
	if err != nil {
		t.Fatal(err)
	}
	ge, err := os.ReadDir(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(we) != len(ge) {
		t.Errorf("%d files, want %d", len(ge), len(we))
	}
	for _, e := range we {
		a, err := os.ReadFile(filepath.Join(want, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(got, e.Name()))
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		if string(a) != string(b) {
			t.Errorf("%s differs from the local pipeline's (%d vs %d bytes)", e.Name(), len(b), len(a))
		}
	}
}

// TestLocalFleetGPTQMatchesQuantize runs a GPTQ 4-bit job (8 calibration samples of 128
// tokens in 2 shards) as the sharded pipeline's tasks over two workers and compares the
// checkpoint directory with quantize.GPTQ's, file by file.
func TestLocalFleetGPTQMatchesQuantize(t *testing.T) {
	model := testenv.TinyLlama(t)
	calib := filepath.Join(filepath.Dir(filepath.Dir(model)), "data", "calib.txt")
	const samples, seqlen, shardSamples = 8, 128, 4
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wantDir := t.TempDir()
	if _, err := quantize.GPTQ(ctx, quantize.GPTQRequest{Request: quantize.Request{ModelDir: model, ModelName: "tiny-llama",
		CalibrationData: calib, CalibrationSamples: samples, SeqLen: seqlen, ShardSamples: shardSamples, OutputDir: wantDir, OutputName: "out"},
		Config: gptq.Config{Bits: 4, GroupSize: 128, Damp: gptq.DefaultDamp}}); err != nil {
		t.Fatal(err)
	}

	f, err := local.Start(ctx, local.Options{Workers: 2, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}()
	c := &client.Client{RT: f.RT}
	cfg := domain.DefaultConfig(domain.FormatGPTQ, "4bit")
	cfg.CalibrationDataPath, cfg.CalibrationSamples, cfg.GroupSize = calib, samples, 128
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: model, Config: cfg,
		Layered: &fleet.LayerOptions{LayerOptions: domain.LayerOptions{SeqLen: seqlen, Damp: gptq.DefaultDamp, ShardSamples: shardSamples}}})
	if err != nil {
		t.Fatal(err)
	}
	// 6 layers × 4 groups × (2 Hessian partials + a solve) + 5 layers × 2 forwards; a layer is
	// complete with its last solve and forwards, 14 tasks (the last layer 12), so k complete layers
	// take at least 14k of them.
	const layers, tasks, perLayer = 6, 6*4*3 + 5*2, 4*3 + 2
	midway := 0 // records seen with some but not all tasks done
	j, err := c.Wait(ctx, sub.JobID, func(j *domain.QuantizationJob) {
		if j.Status != domain.StatusRunning || j.TotalTasks == 0 {
			return
		}
		if j.TotalLayers != layers || j.TotalTasks != tasks || min(j.CurrentLayer*perLayer, tasks) > j.TasksDone ||
			(j.TasksDone > 0 && j.CheckpointPath == "") || // the checkpoint is written before the first task is
			(j.TasksDone < tasks && j.ProgressPercentage != 100*float64(j.TasksDone)/tasks) { // all done: 99 % until assembled
			t.Errorf("running job record: layer %d/%d, task %d/%d, %.1f%%, checkpoint %q", j.CurrentLayer, j.TotalLayers,
				j.TasksDone, j.TotalTasks, j.ProgressPercentage, j.CheckpointPath)
		}
		if j.TasksDone > 0 && j.TasksDone < tasks {
			midway++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != domain.StatusCompleted {
		t.Fatalf("job %s: %s", j.Status, j.ErrorMessage)
	}
	if j.TotalLayers != layers || j.CurrentLayer != layers || j.TotalTasks != tasks || j.TasksDone != tasks || j.PeakMemoryUsage <= 0 ||
		j.Result == nil || j.Result.Format != domain.FormatGPTQ {
		t.Errorf("job record: layer %d/%d, task %d/%d, peak memory %d, result %+v", j.CurrentLayer, j.TotalLayers, j.TasksDone, j.TotalTasks,
			j.PeakMemoryUsage, j.Result)
	}
	if midway == 0 {
		t.Error("no record of the running job showed partial progress")
	}
	out := t.TempDir()
	res, err := c.Download(ctx, sub.JobID, out, "out", nil)
	if err != nil {
		t.Fatal(err)
	}
	sameDir(t, filepath.Join(wantDir, "out"), res.OutputPath)
}
