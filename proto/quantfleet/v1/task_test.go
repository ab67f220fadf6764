package quantfleetv1

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// blockTask is a GGUF task for one block of a large Llama model (9 tensors, long names), as the
// dispatcher makes it.
func blockTask(layer int) *Task {
	job := "0190a0b0-1234-7000-8000-00000000abcd"
	args := &GGUFTensorsArgs{Alignment: 32}
	t := &Task{
		JobId: job, TaskId: fmt.Sprintf("t%04d", layer+1), Generation: 2,
		Kind: TaskKind_TASK_KIND_GGUF_TENSORS, Pool: "cpu", LayerIndex: int32(layer), TotalTasks: 81,
		Plan:      &PlanRef{Key: "jobs/" + job + "/plan.json", Sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		Output:    &OutputSpec{Prefix: "jobs/" + job + "/shards/"},
		CreatedAt: timestamppb.New(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)),
		Label:     fmt.Sprintf("blk.%d", layer),
		Source:    &SourceRef{Prefix: "models/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", ModelName: "Llama-3.1-70B"},
		Args:      &Task_GgufTensors{GgufTensors: args},
	}
	for _, n := range []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "attn_norm", "ffn_norm"} {
		args.Tensors = append(args.Tensors, fmt.Sprintf("blk.%d.%s.weight", layer, n))
	}
	return t
}

func TestTaskRoundTripAndSize(t *testing.T) {
	task := blockTask(79)
	b, err := proto.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 4<<10 {
		t.Errorf("a block task encodes to %d bytes; the stream limit is 64 KiB, keep tasks small", len(b))
	}
	got, err := DecodeTask(b)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, task) {
		t.Fatal("round trip changed the task")
	}
	t.Logf("block task: %d bytes", len(b))
}

func TestDecodeTaskRejects(t *testing.T) {
	good := blockTask(0)
	tests := []struct {
		name string
		edit func(*Task)
	}{
		{"no job", func(t *Task) { t.JobId = "" }},
		{"dotted task id", func(t *Task) { t.TaskId = "blk.0" }},
		{"no kind", func(t *Task) { t.Kind = TaskKind_TASK_KIND_UNSPECIFIED }},
		{"unknown kind", func(t *Task) { t.Kind = 99 }},
		{"no pool", func(t *Task) { t.Pool = "" }},
		{"no output", func(t *Task) { t.Output = nil }},
		{"no arguments", func(t *Task) { t.Args = nil }},
		{"arguments of another kind", func(t *Task) { t.Args = &Task_Layer{Layer: &LayerArgs{Layer: 3}} }},
	}
	for _, tt := range tests {
		task := proto.Clone(good).(*Task)
		tt.edit(task)
		b, _ := proto.Marshal(task)
		if _, err := DecodeTask(b); !errors.Is(err, ErrInvalidTask) {
			t.Errorf("%s: err = %v, want ErrInvalidTask", tt.name, err)
		}
	}
	for _, junk := range [][]byte{[]byte("not a protobuf at all"), {0xff, 0xff, 0xff}, nil, []byte(`{"job_id":"x"}`)} {
		if _, err := DecodeTask(junk); !errors.Is(err, ErrInvalidTask) {
			t.Errorf("junk %q decoded: %v", junk, err)
		}
	}
}

func TestJobEventOneof(t *testing.T) {
	res := &TaskResult{JobId: "j", TaskId: "t0002", AttemptId: "a1", Shards: []*Shard{{Key: "k", Size: 64, Sha256: "00",
		Tensors: []*TensorEntry{{Name: "blk.1.attn_q.weight", GgmlType: 12, Dims: []uint64{4096, 4096}, Offset: 0, Size: 9437184}}}}}
	ev := &JobEvent{JobId: "j", Time: timestamppb.Now(), Event: &JobEvent_TaskDone{TaskDone: res}}
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var back JobEvent
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.GetTaskDone().GetShards()[0].GetTensors()[0].GetDims()[1] != 4096 || back.GetState() != nil {
		t.Fatalf("oneof round trip: %v", &back)
	}
}
