package domain

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseEnums(t *testing.T) {
	tests := []struct {
		name  string
		parse func(string) (string, error)
		in    string
		want  string // "" = error
	}{
		{"format lower", str(ParseOutputFormat), "gguf", "gguf"},
		{"format upper", str(ParseOutputFormat), "GPTQ", "gptq"},
		{"format unknown", str(ParseOutputFormat), "exl2", ""},
		{"model type member name", str(ParseModelType), "HF_HUB", "hf_hub"},
		{"model type value", str(ParseModelType), "local_dir", "local_dir"},
		{"model type bad", str(ParseModelType), "s3", ""},
		{"status", str(ParseJobStatus), "Cancelled", "cancelled"},
		{"status bad", str(ParseJobStatus), "done", ""},
		{"verbosity", str(ParseVerbosity), "DEBUG", "debug"},
		{"verbosity bad", str(ParseVerbosity), "loud", ""},
		{"output mode", str(ParseOutputMode), "json", "json"},
		{"output mode bad", str(ParseOutputMode), "yaml", ""},
		{"validation", str(ParseValidationStatus), "UNCHECKED", "unchecked"},
		{"validation bad", str(ParseValidationStatus), "ok", ""},
		{"empty", str(ParseOutputFormat), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("err = %v, want ErrInvalidConfig", err)
				}
				if !strings.Contains(err.Error(), "valid:") || strings.Contains(err.Error(), "\n") {
					t.Errorf("message %q should be one line listing the valid values", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func str[T ~string](f func(string) (T, error)) func(string) (string, error) {
	return func(s string) (string, error) { v, err := f(s); return string(v), err }
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		f      OutputFormat
		in     string
		want   string
		bits   int
		errSub string
	}{
		{FormatGGUF, "q4_k_m", "Q4_K_M", 0, ""},
		{FormatGGUF, "Q8_0", "Q8_0", 0, ""},
		{FormatGGUF, "bf16", "BF16", 0, ""},
		{FormatGGUF, "f32", "F32", 0, ""},
		{FormatGGUF, "Q9_K", "", 0, "level Q9_K is not a gguf level (valid: Q2_K, Q3_K_S"},
		{FormatGGUF, "4bit", "", 0, "not a gguf level"},
		{FormatGPTQ, "4BIT", "4bit", 4, ""},
		{FormatGPTQ, "3bit", "3bit", 3, ""},
		{FormatGPTQ, "8bit", "8bit", 8, ""},
		{FormatGPTQ, "Q4_0", "", 0, "level Q4_0 is not a gptq level (valid: 2bit, 3bit, 4bit, 8bit)"},
		{FormatAWQ, "4bit", "4bit", 4, ""},
		{FormatAWQ, "8bit", "", 0, "level 8bit is not a awq level (valid: 4bit)"},
		{"onnx", "4bit", "", 0, `target_format "onnx" is not valid`},
	}
	for _, tt := range tests {
		t.Run(string(tt.f)+"/"+tt.in, func(t *testing.T) {
			got, bits, err := ParseLevel(tt.f, tt.in)
			if tt.errSub != "" {
				if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.errSub) {
					t.Fatalf("err = %v, want ErrInvalidConfig containing %q", err, tt.errSub)
				}
				return
			}
			if err != nil || got != tt.want || bits != tt.bits {
				t.Fatalf("got %q, %d bits, %v; want %q, %d bits", got, bits, err, tt.want, tt.bits)
			}
		})
	}
	if n := len(GGUFLevels); n != 17 {
		t.Errorf("GGUF has %d levels, want the seed's 14 + F16, BF16, F32", n)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*QuantizationConfig)
		field string // "" = valid
	}{
		{"defaults", func(c *QuantizationConfig) {}, ""},
		{"lower-case level", func(c *QuantizationConfig) { c.QuantizationLevel = "q5_k_s" }, ""},
		{"unknown level", func(c *QuantizationConfig) { c.QuantizationLevel = "Q9_K" }, "quantization_level"},
		{"empty level", func(c *QuantizationConfig) { c.QuantizationLevel = "" }, "quantization_level"},
		{"no format", func(c *QuantizationConfig) { c.TargetFormat = "" }, "target_format"},
		{"samples 1", func(c *QuantizationConfig) { c.CalibrationSamples = 1 }, ""},
		{"samples 1024", func(c *QuantizationConfig) { c.CalibrationSamples = 1024 }, ""},
		{"samples 0", func(c *QuantizationConfig) { c.CalibrationSamples = 0 }, "calibration_samples"},
		{"samples 1025", func(c *QuantizationConfig) { c.CalibrationSamples = 1025 }, "calibration_samples"},
		{"group 32", func(c *QuantizationConfig) { c.GroupSize = 32 }, ""},
		{"group 256", func(c *QuantizationConfig) { c.GroupSize = 256 }, ""},
		{"group 16", func(c *QuantizationConfig) { c.GroupSize = 16 }, "group_size"},
		{"group 512", func(c *QuantizationConfig) { c.GroupSize = 512 }, "group_size"},
		{"group 96", func(c *QuantizationConfig) { c.GroupSize = 96 }, "group_size"},
		{"group -1 gguf", func(c *QuantizationConfig) { c.GroupSize = -1 }, "group_size"},
		{"group -1 gptq", func(c *QuantizationConfig) { c.TargetFormat, c.QuantizationLevel, c.GroupSize = FormatGPTQ, "4bit", -1 }, ""},
		{"group -1 awq", func(c *QuantizationConfig) { c.TargetFormat, c.QuantizationLevel, c.GroupSize = FormatAWQ, "4bit", -1 }, "group_size"},
		{"group 0 gptq", func(c *QuantizationConfig) { c.TargetFormat, c.QuantizationLevel, c.GroupSize = FormatGPTQ, "4bit", 0 }, "group_size"},
		{"verbosity", func(c *QuantizationConfig) { c.Verbosity = "chatty" }, "verbosity"},
		{"output mode", func(c *QuantizationConfig) { c.OutputFormat = "" }, "output_format"},
		{"output name path", func(c *QuantizationConfig) { c.OutputName = "../x.gguf" }, "output_name"},
		{"output name ok", func(c *QuantizationConfig) { c.OutputName = "x.gguf" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig(FormatGGUF, "Q4_K_M")
			tt.edit(&c)
			err := c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.Is(err, ErrInvalidConfig) || !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *FieldError wrapping ErrInvalidConfig", err)
			}
			named := strings.HasPrefix(err.Error(), tt.field) ||
				(tt.field == "quantization_level" && strings.HasPrefix(err.Error(), "level "))
			if fe.Field != tt.field || !named || strings.Contains(err.Error(), "\n") {
				t.Errorf("field %q, message %q; want field %q named at the start of one line", fe.Field, err, tt.field)
			}
		})
	}
}

func TestConfigDefaultsAndJSON(t *testing.T) {
	var c QuantizationConfig
	if err := json.Unmarshal([]byte(`{"target_format":"GGUF","quantization_level":"q4_k_m"}`), &c); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig(FormatGGUF, "q4_k_m")
	if c != want {
		t.Fatalf("decoded %+v, want defaults %+v", c, want)
	}
	if c.OutputDir != "." || c.CalibrationSamples != 256 || c.GroupSize != 128 || !c.EnableCheckpoints ||
		c.Verbosity != VerbosityNormal || c.OutputFormat != OutputHuman {
		t.Errorf("defaults differ from the seed: %+v", c)
	}
	if err := c.Normalize(); err != nil || c.QuantizationLevel != "Q4_K_M" {
		t.Fatalf("Normalize: %v, level %q", err, c.QuantizationLevel)
	}
	// Explicit values override defaults, including false.
	if err := json.Unmarshal([]byte(`{"target_format":"gptq","quantization_level":"4bit","enable_checkpoints":false,"group_size":-1}`), &c); err != nil {
		t.Fatal(err)
	}
	if c.EnableCheckpoints || c.GroupSize != -1 || c.CalibrationSamples != 256 {
		t.Errorf("explicit fields lost: %+v", c)
	}
	b, _ := json.Marshal(c)
	for _, key := range []string{`"target_format":"gptq"`, `"quantization_level":"4bit"`, `"calibration_samples":256`, `"group_size":-1`, `"enable_checkpoints":false`, `"verbosity":"normal"`, `"output_format":"human"`, `"output_dir":"."`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON %s lacks %s", b, key)
		}
	}
	if err := json.Unmarshal([]byte(`{"target_format":"onnx"}`), &c); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("unknown enum in JSON: err = %v, want ErrInvalidConfig", err)
	}
}

func TestSourceModelSecretNeverSerialized(t *testing.T) {
	s := SourceModel{ModelPath: "org/model", ModelType: ModelHFHub, Architecture: "LlamaForCausalLM",
		ParameterCount: 1, Dtype: "bfloat16", HFToken: "hf_SECRETxyz"}
	j := QuantizationJob{JobID: "j", Status: StatusPending, Source: &s}
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "hf_SECRET") || strings.Contains(string(b), "hf_token") {
		t.Fatalf("token leaked into JSON: %s", b)
	}
	var back SourceModel
	if err := json.Unmarshal([]byte(`{"model_path":"x","hf_token":"hf_SECRET"}`), &back); err != nil || back.HFToken != "" {
		t.Fatalf("hf_token must not be decoded either: %+v %v", back, err)
	}
}

func TestSourceModelValidate(t *testing.T) {
	ok := SourceModel{ModelPath: "meta-llama/Llama-3.2-1B", ModelType: ModelHFHub, Architecture: "LlamaForCausalLM", ParameterCount: 1e9, Dtype: "bfloat16"}
	tests := []struct {
		name  string
		edit  func(*SourceModel)
		field string
	}{
		{"ok", func(s *SourceModel) {}, ""},
		{"revision", func(s *SourceModel) { s.ModelPath = "org/name@main" }, ""},
		{"local", func(s *SourceModel) { s.ModelType, s.ModelPath = ModelLocalDir, "/tmp/my model" }, ""},
		{"bad hub id", func(s *SourceModel) { s.ModelPath = "a/b/c" }, "model_path"},
		{"empty path", func(s *SourceModel) { s.ModelPath = "" }, "model_path"},
		{"type", func(s *SourceModel) { s.ModelType = "s3" }, "model_type"},
		{"arch", func(s *SourceModel) { s.Architecture = "" }, "architecture"},
		{"params", func(s *SourceModel) { s.ParameterCount = 0 }, "parameter_count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.edit(&s)
			checkField(t, s.Validate(), tt.field)
		})
	}
}

func checkField(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err = %v, want FieldError for %s", err, field)
	}
}

func TestQuantizedModelAndMetadataValidate(t *testing.T) {
	q := QuantizedModel{OutputPath: "s3://b/k.gguf", Format: FormatGGUF, FileSize: 10, CompressionRatio: 0.3,
		SourceModelPath: "m", ValidationStatus: ValidationValid}
	checkField(t, q.Validate(), "")
	for _, r := range []float64{0, 1, 1.5, -0.1} {
		q2 := q
		q2.CompressionRatio = r
		checkField(t, q2.Validate(), "compression_ratio")
	}
	q2 := q
	q2.ValidationStatus = ""
	checkField(t, q2.Validate(), "validation_status")

	m := ModelMetadata{ModelName: "tiny", Architecture: "LlamaForCausalLM", HiddenSize: 256, NumLayers: 4,
		NumHeads: 4, VocabSize: 32000, MaxPositionEmbeddings: 2048, TorchDtype: "bfloat16"}
	checkField(t, m.Validate(), "")
	m.NumLayers = 0
	checkField(t, m.Validate(), "num_layers")
}

func TestJobTransitions(t *testing.T) {
	all := []JobStatus{StatusPending, StatusRunning, StatusCompleted, StatusFailed, StatusCancelled}
	legal := map[[2]JobStatus]bool{
		{StatusPending, StatusRunning}:   true,
		{StatusPending, StatusCancelled}: true,
		{StatusRunning, StatusCompleted}: true,
		{StatusRunning, StatusFailed}:    true,
		{StatusRunning, StatusCancelled}: true,
		{StatusFailed, StatusPending}:    true, // resume of a failed job
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, from := range all {
		for _, to := range all {
			j := &QuantizationJob{JobID: "j1", Status: from}
			err := j.Transition(to, t0)
			if legal[[2]JobStatus{from, to}] {
				if err != nil || j.Status != to {
					t.Errorf("%s → %s: %v (status %s)", from, to, err, j.Status)
				}
				continue
			}
			if !errors.Is(err, ErrIllegalTransition) || j.Status != from {
				t.Errorf("%s → %s: err %v, status %s; want ErrIllegalTransition and no change", from, to, err, j.Status)
			}
			if err != nil && !strings.Contains(err.Error(), "j1") {
				t.Errorf("message %q should name the job", err)
			}
		}
	}
}

func TestJobLifecycle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j := NewJob("j", t0)
	if j.Status != StatusPending {
		t.Fatalf("new job status %s", j.Status)
	}
	if err := j.Fail("x", t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("PENDING → FAILED: %v", err)
	}
	if err := j.Transition(StatusRunning, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if !j.StartTime.Equal(t0.Add(time.Second)) {
		t.Errorf("start time %v", j.StartTime)
	}
	// Layers only: 1 of 4 done after 10 s → 30 s left.
	j.SetProgress(Progress{LayersDone: 1, Layers: 4}, j.StartTime.Add(10*time.Second))
	if j.ProgressPercentage != 25 || j.CurrentLayer != 1 || j.TotalLayers != 4 {
		t.Errorf("progress %+v", j)
	}
	if want := j.StartTime.Add(40 * time.Second); !j.EstimatedCompletion.Equal(want) {
		t.Errorf("ETA %v, want %v", j.EstimatedCompletion, want)
	}
	// Layers of many tasks: 1 of 4 layers but 30 of 40 tasks after 30 s → 75 %, 10 s left (the
	// tasks, not the layers, pace the job).
	j.SetProgress(Progress{LayersDone: 1, Layers: 4, TasksDone: 30, Tasks: 40}, j.StartTime.Add(30*time.Second))
	if j.ProgressPercentage != 75 || j.CurrentLayer != 1 || j.TotalLayers != 4 || j.TasksDone != 30 || j.TotalTasks != 40 {
		t.Errorf("progress %+v", j)
	}
	if want := j.StartTime.Add(40 * time.Second); !j.EstimatedCompletion.Equal(want) {
		t.Errorf("ETA %v, want %v", j.EstimatedCompletion, want)
	}
	if err := j.Validate(); err != nil {
		t.Error(err)
	}
	j.SetProgress(Progress{LayersDone: 9, Layers: 4, TasksDone: 50, Tasks: 40}, j.StartTime.Add(20*time.Second))
	if j.CurrentLayer != 4 || j.TasksDone != 40 || j.ProgressPercentage != 100 {
		t.Errorf("progress not clamped: %+v", j)
	}
	bad := *j
	bad.TasksDone = 41
	if err := bad.Validate(); err == nil {
		t.Error("tasks_done above total_tasks validated")
	}
	j.SetProgress(Progress{LayersDone: 3, Layers: 4, TasksDone: 39, Tasks: 40}, j.StartTime.Add(20*time.Second))
	j.ObserveMemory(300)
	j.ObserveMemory(100)
	if j.CurrentMemoryUsage != 100 || j.PeakMemoryUsage != 300 {
		t.Errorf("memory current %d peak %d", j.CurrentMemoryUsage, j.PeakMemoryUsage)
	}
	end := t0.Add(time.Minute)
	if err := j.Transition(StatusCompleted, end); err != nil {
		t.Fatal(err)
	}
	if !j.EndTime.Equal(end) || !j.EstimatedCompletion.IsZero() || j.ProgressPercentage != 100 || j.CurrentLayer != 4 || j.TasksDone != 40 {
		t.Errorf("completed job %+v", j)
	}
	if err := j.Validate(); err != nil {
		t.Error(err)
	}
	b, _ := json.Marshal(j)
	var back QuantizationJob
	if err := json.Unmarshal(b, &back); err != nil || back.Status != StatusCompleted || !back.EndTime.Equal(end) {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	if strings.Contains(string(b), "estimated_completion") {
		t.Errorf("zero time should be omitted: %s", b)
	}
}

func TestCheckpoint(t *testing.T) {
	cfg := DefaultConfig(FormatGGUF, "Q4_K_M")
	cp := Checkpoint{CheckpointID: "c1", JobID: "j", LayerIndex: 2, ConfigSnapshot: cfg,
		LayerStates: map[string]LayerState{"blk.0": {Status: "done", Object: "jobs/j/shards/blk.0", Size: 10, SHA256: "ab"}}}
	tests := []struct {
		name  string
		total int
		edit  func(*Checkpoint)
		field string
	}{
		{"ok", 4, func(*Checkpoint) {}, ""},
		{"last layer", 3, func(*Checkpoint) {}, ""},
		{"index = total", 2, func(*Checkpoint) {}, "layer_index"},
		{"negative", 4, func(c *Checkpoint) { c.LayerIndex = -1 }, "layer_index"},
		{"no id", 4, func(c *Checkpoint) { c.CheckpointID = "" }, "checkpoint_id"},
		{"bad snapshot", 4, func(c *Checkpoint) { c.ConfigSnapshot.GroupSize = 7 }, "group_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cp
			tt.edit(&c)
			checkField(t, c.Validate(tt.total), tt.field)
		})
	}

	resume := []struct {
		name string
		edit func(*QuantizationConfig)
		bad  string
	}{
		{"same", func(*QuantizationConfig) {}, ""},
		{"level case", func(c *QuantizationConfig) { c.QuantizationLevel = "q4_k_m" }, ""},
		{"presentation only", func(c *QuantizationConfig) {
			c.OutputDir, c.Verbosity, c.OutputFormat = "/x", VerbosityDebug, OutputJSON
		}, ""},
		{"level", func(c *QuantizationConfig) { c.QuantizationLevel = "Q5_K_M" }, "quantization_level"},
		{"format", func(c *QuantizationConfig) { c.TargetFormat, c.QuantizationLevel = FormatGPTQ, "4bit" }, "target_format"},
		{"samples", func(c *QuantizationConfig) { c.CalibrationSamples = 128 }, "calibration_samples"},
		{"group", func(c *QuantizationConfig) { c.GroupSize = 64 }, "group_size"},
		{"calib data", func(c *QuantizationConfig) { c.CalibrationDataPath = "x.txt" }, "calibration_data_path"},
	}
	for _, tt := range resume {
		t.Run("resume/"+tt.name, func(t *testing.T) {
			c := cfg
			tt.edit(&c)
			err := cp.CheckResume(c)
			if tt.bad == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrConfigMismatch) || !strings.Contains(err.Error(), tt.bad) {
				t.Fatalf("err = %v, want ErrConfigMismatch naming %s", err, tt.bad)
			}
		})
	}

	b, _ := json.Marshal(cp)
	for _, key := range []string{"checkpoint_id", "job_id", "layer_index", "layer_states", "config_snapshot", "created_at", "file_path"} {
		if !strings.Contains(string(b), `"`+key+`"`) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}

// TestJobResumeFailed: FAILED → PENDING (resume) clears the end time and the error but keeps both in
// the history, which records every change with its reason.
func TestJobResumeFailed(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j := NewJob("j", t0)
	for i, step := range []func() error{
		func() error { return j.Transition(StatusRunning, t0.Add(1*time.Second)) },
		func() error { return j.Fail("object storage unavailable", t0.Add(2*time.Second)) },
		func() error { return j.TransitionWhy(StatusPending, "resumed", t0.Add(3*time.Second)) },
		func() error { return j.Transition(StatusRunning, t0.Add(4*time.Second)) },
		func() error { return j.Transition(StatusCompleted, t0.Add(5*time.Second)) },
	} {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if i == 2 && (j.ErrorMessage != "" || !j.EndTime.IsZero() || j.Status != StatusPending) {
			t.Fatalf("resumed job %+v", j)
		}
	}
	want := []StatusChange{
		{StatusPending, StatusRunning, t0.Add(1 * time.Second), ""},
		{StatusRunning, StatusFailed, t0.Add(2 * time.Second), "object storage unavailable"},
		{StatusFailed, StatusPending, t0.Add(3 * time.Second), "resumed"},
		{StatusPending, StatusRunning, t0.Add(4 * time.Second), ""},
		{StatusRunning, StatusCompleted, t0.Add(5 * time.Second), ""},
	}
	if !reflect.DeepEqual(j.History, want) {
		t.Fatalf("history %+v\nwant %+v", j.History, want)
	}
	for i := 0; i < 2*MaxHistory; i++ {
		j.Status = StatusFailed
		_ = j.Transition(StatusPending, t0)
	}
	if len(j.History) != MaxHistory || j.History[0] != want[0] {
		t.Errorf("history of %d entries, first %+v", len(j.History), j.History[0])
	}
}
