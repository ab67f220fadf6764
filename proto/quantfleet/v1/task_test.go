package quantfleetv1

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// blockTask is a GGUF task for one block of a large Llama model (9 tensors, long names).
func blockTask(layer int) *Task {
	t := &Task{
		JobId: "0190a0b0-1234-7000-8000-00000000abcd", TaskId: fmt.Sprintf("blk-%d", layer), Generation: 2,
		Kind: TaskKind_TASK_KIND_GGUF_TENSORS, Pool: "cpu", LayerIndex: int32(layer), TotalTasks: 81,
		Plan:      &PlanRef{Key: "jobs/0190a0b0-1234-7000-8000-00000000abcd/plan.json", Sha256: "ab"},
		Output:    &OutputSpec{Prefix: fmt.Sprintf("jobs/0190a0b0-1234-7000-8000-00000000abcd/shards/blk-%d/", layer), Alignment: 32},
		CreatedAt: timestamppb.New(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)),
		Params:    map[string]string{"imatrix": ""},
	}
	for _, n := range []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
		"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"} {
		name := fmt.Sprintf("model.layers.%d.%s.weight", layer, n)
		t.Plan.Entries = append(t.Plan.Entries, name)
		t.Inputs = append(t.Inputs, &NamedRange{Name: name, Range: &ObjectRange{
			Key: "models/sha256-0123456789abcdef/model-00003-of-00004.safetensors", Offset: 1 << 33, Length: 117440512,
			Sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}})
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
		{"bad range", func(t *Task) { t.Inputs[0].Range.Offset = -4 }},
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
	res := &TaskResult{JobId: "j", TaskId: "blk-1", AttemptId: "a1", Shards: []*Shard{{Key: "k", Size: 64, Sha256: "00",
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
