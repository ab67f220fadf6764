package local_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/local"
	"quantfleet.dev/services/internal/testenv"
)

func TestLocalFleetMatchesQuantize(t *testing.T) {
	model := testenv.TinyLlama(t)
	want := testenv.QuantizeGGUF(t, model, "Q4_K_M")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := local.Start(ctx, local.Options{Workers: 2, KeepShards: true, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}()
	c := &client.Client{RT: f.RT}
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: model, Config: domain.DefaultConfig(domain.FormatGGUF, "q4_k_m")})
	if err != nil {
		t.Fatal(err)
	}
	var seen []float64
	j, err := c.Wait(ctx, sub.JobID, func(j *domain.QuantizationJob) { seen = append(seen, j.ProgressPercentage) })
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != domain.StatusCompleted {
		t.Fatalf("job %s: %s", j.Status, j.ErrorMessage)
	}
	if j.TotalLayers != 8 || j.CurrentLayer != 8 || j.PeakMemoryUsage <= 0 || j.CheckpointPath == "" || j.StartTime.IsZero() || j.EndTime.IsZero() {
		t.Errorf("job record incomplete: %+v", j)
	}
	out := t.TempDir()
	res, err := c.Download(ctx, sub.JobID, out, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(res.OutputPath) != "tiny-llama-Q4_K_M.gguf" {
		t.Errorf("output name %s", res.OutputPath)
	}
	got, err := os.ReadFile(res.OutputPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("fleet output (%d bytes) differs from quantize's (%d bytes)", len(got), len(want))
	}
	if res.ValidationStatus != domain.ValidationValid || res.CompressionRatio <= 0 || res.CompressionRatio >= 1 {
		t.Errorf("result record: %+v", res)
	}
	// One shard per task, each recorded once.
	recs, err := f.RT.Done.ListJob(ctx, sub.JobID)
	if err != nil {
		t.Fatal(err)
	}
	var shards int
	for oi, err := range f.RT.Store.List(ctx, fleet.ShardPrefix(sub.JobID)) {
		if err != nil {
			t.Fatal(err)
		}
		shards++
		_ = oi
	}
	if len(recs) != 8 || shards != 8 {
		t.Errorf("%d completion records and %d shards, want 8 each", len(recs), shards)
	}

	// A second job of the same directory does not upload it again.
	sub2, err := c.Submit(ctx, client.SubmitRequest{Model: model, Config: domain.DefaultConfig(domain.FormatGGUF, "Q8_0")})
	if err != nil {
		t.Fatal(err)
	}
	if sub2.Uploaded || *sub2.Request.Location != *sub.Request.Location {
		t.Errorf("second submit uploaded=%v location %v vs %v", sub2.Uploaded, sub2.Request.Location, sub.Request.Location)
	}
	if j, err := c.Wait(ctx, sub2.JobID, nil); err != nil || j.Status != domain.StatusCompleted {
		t.Fatalf("second job: %v %+v", err, j)
	}
}

// TestLocalFleetFaults: a duplicate of a finished task changes nothing, malformed messages are
// dead-lettered while the fleet goes on, and a cancelled job leaves nothing behind.
func TestLocalFleetFaults(t *testing.T) {
	model := testenv.TinyLlama(t)
	want := testenv.QuantizeGGUF(t, model, "Q4_K_M")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := local.Start(ctx, local.Options{Workers: 2, Slots: 1, KeepShards: true, TaskDelay: 400 * time.Millisecond,
		Queue: queue.Config{AckWait: 3 * time.Second}, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &client.Client{RT: f.RT}
	cfg := domain.DefaultConfig(domain.FormatGGUF, "Q4_K_M")

	// Junk on the task subject first: it is dead-lettered, the job after it completes.
	for i, junk := range [][]byte{[]byte("junk"), {0x0a, 0xff}} {
		if _, err := queue.PublishTask(ctx, f.RT.JS, queue.PoolCPU, fmt.Sprintf("junk-%d", i), junk); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: model, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	// Once two tasks are done, enqueue one of them again in another generation.
	var dup string
	var before []byte
	for dup == "" {
		recs, err := f.RT.Done.ListJob(ctx, sub.JobID)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) >= 2 {
			for id, b := range recs {
				dup, before = id, b
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p, sum, err := fleet.ReadPlan(ctx, f.RT.Store, fleet.PlanKey(sub.JobID), "")
	if err != nil {
		t.Fatal(err)
	}
	msg := &pb.Task{JobId: sub.JobID, TaskId: dup, Generation: 99, Kind: pb.TaskKind_TASK_KIND_GGUF_TENSORS, Pool: "cpu",
		Plan: &pb.PlanRef{Key: fleet.PlanKey(sub.JobID), Sha256: sum}, Output: &pb.OutputSpec{Prefix: fleet.ShardPrefix(sub.JobID)},
		Source: &pb.SourceRef{Prefix: p.SourcePrefix, ModelName: p.ModelName},
		Args:   &pb.Task_GgufTensors{GgufTensors: &pb.GGUFTensorsArgs{Alignment: 32}}}
	b, err := fleet.EncodeTask(msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queue.PublishTask(ctx, f.RT.JS, queue.PoolCPU, fleet.TaskMsgID(msg), b); err != nil {
		t.Fatal(err)
	}
	j, err := c.Wait(ctx, sub.JobID, nil)
	if err != nil || j.Status != domain.StatusCompleted {
		t.Fatalf("job: %v %+v", err, j)
	}
	res, err := c.Download(ctx, sub.JobID, t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(res.OutputPath); !bytes.Equal(got, want) {
		t.Fatal("output differs from quantize's")
	}
	after, _, err := f.RT.Done.Get(ctx, sub.JobID, dup)
	if err != nil || !bytes.Equal(after, before) {
		t.Errorf("the duplicate of %s changed its record (%v)", dup, err)
	}
	if n, _ := blob.ListAll(ctx, f.RT.Store, fleet.ShardPrefix(sub.JobID)); len(n) != 8 {
		t.Errorf("%d shards, want 8", len(n))
	}
	dlq, err := f.RT.JS.Stream(ctx, queue.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := dlq.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Errorf("dead letters: %+v %v", info, err)
	}

	// Cancel a running job: its objects and records go away.
	sub2, err := c.Submit(ctx, client.SubmitRequest{Model: model, Config: domain.DefaultConfig(domain.FormatGGUF, "Q8_0")})
	if err != nil {
		t.Fatal(err)
	}
	for {
		j, err := c.Job(ctx, sub2.JobID)
		if err != nil {
			t.Fatal(err)
		}
		if j.CurrentLayer >= 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := c.Cancel(ctx, sub2.JobID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(ctx, sub2.JobID); !errors.Is(err, client.ErrJobEnded) {
		t.Errorf("second cancel: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		objs, _ := blob.ListAll(ctx, f.RT.Store, fleet.JobPrefix(sub2.JobID))
		recs, _ := f.RT.Done.ListJob(ctx, sub2.JobID)
		if len(objs) == 0 && len(recs) == 0 && time.Now().After(deadline.Add(-5*time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cancelled job left %d objects and %d records", len(objs), len(recs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestHeartbeatsKeepLongTasks: tasks that run longer than AckWait are not redelivered, because
// workers heartbeat.
func TestHeartbeatsKeepLongTasks(t *testing.T) {
	model := testenv.TinyLlama(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Heartbeats every AckWait/4 = 500 ms keep 3 s tasks alive, with room for a loaded machine.
	f, err := local.Start(ctx, local.Options{Workers: 4, Slots: 1, KeepShards: true, TaskDelay: 3 * time.Second,
		Queue: queue.Config{AckWait: 2 * time.Second}, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &client.Client{RT: f.RT}
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: model, Config: domain.DefaultConfig(domain.FormatGGUF, "Q8_0")})
	if err != nil {
		t.Fatal(err)
	}
	if j, err := c.Wait(ctx, sub.JobID, nil); err != nil || j.Status != domain.StatusCompleted {
		t.Fatalf("job: %v %+v", err, j)
	}
	recs, err := f.RT.Done.ListJob(ctx, sub.JobID)
	if err != nil || len(recs) != 8 {
		t.Fatalf("%d records (%v)", len(recs), err)
	}
	for id, b := range recs {
		r, err := fleet.DecodeResult(b)
		if err != nil {
			t.Fatal(err)
		}
		if r.Delivery != 1 {
			t.Errorf("task %s (3 s, AckWait 2 s) was delivered %d times", id, r.Delivery)
		}
	}
}
