package dispatcher_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/queue"
	pb "quantfleet.dev/proto/quantfleet/v1"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/assembler"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/dispatcher"
	"quantfleet.dev/services/fleet/modelstore"
	"quantfleet.dev/services/fleet/worker"
	"quantfleet.dev/services/internal/testenv"
)

// TestForgedMessages: for each forgery a job B whose tasks wait in the gpu pool while forged messages about B go through
// the cpu pool's worker and the dispatcher. None may change B: task_done events without a
// completion record, permanent failures of B's tasks from another job's subject or of tasks B does
// not run, a task message pointing at another job's plan, and one pointing at another (poisoned)
// source. Then a gpu worker runs B, which completes with quantize's bytes.
func TestForgedMessages(t *testing.T) {
	tiny := testenv.TinyLlama(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	want := testenv.QuantizeGGUF(t, tiny, "Q4_K_M")

	rt, store := fleetIn(t, ctx, s3Config("integrity"))
	startDispatcher(t, ctx, rt("dispatcher"), dispatcher.Config{Queue: queue.Config{AckWait: 5 * time.Second, MaxDeliver: 2}})
	run(t, ctx, worker.New(rt("cpu-worker"), worker.Config{Pool: queue.PoolCPU,
		RetryDelay: func(uint64) time.Duration { return 100 * time.Millisecond }}, nil, zaptest.NewLogger(t)).Run)
	run(t, ctx, assembler.New(rt("assembler"), assembler.Config{}, nil, zaptest.NewLogger(t)).Run)
	c := newClient(t, ctx, rt)
	submit := func(level string) (string, string) {
		sub, err := c.Submit(ctx, client.SubmitRequest{Model: tiny, Pool: queue.PoolGPU, Config: domain.DefaultConfig(domain.FormatGGUF, level)})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, func() bool { j, _ := c.Job(ctx, sub.JobID); return j != nil && j.TotalLayers == 8 })
		_, sum, err := fleet.ReadPlan(ctx, store, fleet.PlanKey(sub.JobID), "")
		if err != nil {
			t.Fatal(err)
		}
		return sub.JobID, sum
	}
	other, otherSum := submit("Q8_0")
	poisoned := copyModel(t, tiny, func(dir string) {
		poisonTensor(t, filepath.Join(dir, "model.safetensors"), "model.layers.3.mlp.down_proj.weight")
	})
	poisonedPrefix, _, err := modelstore.UploadDir(ctx, store, poisoned, nil)
	if err != nil {
		t.Fatal(err)
	}

	event := func(subjectJob string, ev *pb.JobEvent) {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := queue.PublishEvent(ctx, c.RT.JS, subjectJob, fleet.EventKind(ev), "", b); err != nil {
			t.Fatal(err)
		}
	}
	task := func(msg *pb.Task) {
		msg.Kind, msg.Pool, msg.Output = pb.TaskKind_TASK_KIND_GGUF_TENSORS, queue.PoolCPU, &pb.OutputSpec{Prefix: fleet.ShardPrefix(msg.JobId)}
		msg.Args = &pb.Task_GgufTensors{GgufTensors: &pb.GGUFTensorsArgs{Alignment: 32}}
		b, err := fleet.EncodeTask(msg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := queue.PublishTask(ctx, c.RT.JS, queue.PoolCPU, fleet.TaskMsgID(msg), b); err != nil {
			t.Fatal(err)
		}
	}
	var jobs []string
	for _, tc := range []struct {
		name  string
		forge func(job, sum string)
	}{
		{"task_done without a completion record", func(job, _ string) {
			for i := range 8 {
				ev := fleet.NewEvent(job)
				id := fmt.Sprintf("t%04d", i)
				ev.Event = &pb.JobEvent_TaskDone{TaskDone: &pb.TaskResult{JobId: job, TaskId: id,
					Shards: []*pb.Shard{{Key: fleet.ShardKey(job, id), Size: 1, Sha256: "00"}}}}
				event(job, ev)
			}
		}},
		{"permanent failure of B's task on another job's subject", func(job, _ string) {
			ev := fleet.NewEvent(job)
			ev.Event = &pb.JobEvent_TaskFailed{TaskFailed: &pb.TaskFailed{TaskId: "t0003", Permanent: true, ErrorMessage: "forged"}}
			event(other, ev)
		}},
		{"permanent failure of a task B does not run", func(job, _ string) {
			ev := fleet.NewEvent(job)
			ev.Event = &pb.JobEvent_TaskFailed{TaskFailed: &pb.TaskFailed{TaskId: "t0003", Generation: 7, Permanent: true, ErrorMessage: "forged"}}
			event(job, ev)
		}},
		{"task of B made from another job's plan", func(job, _ string) {
			task(&pb.Task{JobId: job, TaskId: "t0003", Generation: 5, Plan: &pb.PlanRef{Key: fleet.PlanKey(other), Sha256: otherSum}})
		}},
		{"assembly of B before its tasks are done", func(job, sum string) {
			msg := &pb.Task{JobId: job, TaskId: "assemble", Kind: pb.TaskKind_TASK_KIND_ASSEMBLE, Pool: queue.PoolAsm,
				Plan: &pb.PlanRef{Key: fleet.PlanKey(job), Sha256: sum}, Output: &pb.OutputSpec{Prefix: fleet.OutputPrefix(job)},
				Args: &pb.Task_Assemble{Assemble: &pb.AssembleArgs{OutputName: "x.gguf"}}}
			b, err := fleet.EncodeTask(msg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := queue.PublishTask(ctx, c.RT.JS, queue.PoolAsm, "forged-"+job, b); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, func() bool { return consumerIdle(t, ctx, c.RT, queue.TasksStream, queue.ConsumerName(queue.PoolAsm)) })
		}},
		{"task of B not in its plan", func(job, sum string) {
			task(&pb.Task{JobId: job, TaskId: "t0099", Generation: 6, Plan: &pb.PlanRef{Key: fleet.PlanKey(job), Sha256: sum}})
		}},
		{"task of B pointing at a poisoned source", func(job, sum string) {
			task(&pb.Task{JobId: job, TaskId: "t0005", Generation: 8, Plan: &pb.PlanRef{Key: fleet.PlanKey(job), Sha256: sum},
				Source: &pb.SourceRef{Prefix: strings.TrimSuffix(poisonedPrefix, "/"), ModelName: "tiny-llama"}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, sum := submit("Q4_K_M")
			jobs = append(jobs, job)
			tc.forge(job, sum)
			// Settled once the dispatcher and the cpu worker have nothing left to handle.
			waitFor(t, ctx, func() bool {
				return consumerIdle(t, ctx, c.RT, queue.EventsStream, "dispatcher") && consumerIdle(t, ctx, c.RT, queue.TasksStream, queue.ConsumerName(queue.PoolCPU))
			})
			time.Sleep(300 * time.Millisecond)
			if j, _ := c.Job(ctx, job); j.Status != domain.StatusRunning {
				t.Fatalf("job is %s: %s", j.Status, j.ErrorMessage)
			}
		})
	}
	run(t, ctx, worker.New(rt("gpu-worker"), worker.Config{Pool: queue.PoolGPU, Slots: 2}, nil, zaptest.NewLogger(t)).Run)
	for _, job := range jobs {
		j, err := c.Wait(ctx, job, nil)
		if err != nil || j.Status != domain.StatusCompleted {
			t.Fatalf("job: %v %+v", err, j)
		}
		got, err := c.Download(ctx, job, t.TempDir(), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(got.OutputPath); !bytes.Equal(b, want) {
			t.Fatal("output differs from quantize's")
		}
	}
}

func consumerIdle(t *testing.T, ctx context.Context, rt *fleet.Runtime, stream, name string) bool {
	cons, err := rt.JS.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}
