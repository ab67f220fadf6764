package cli

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/safetensors"
)

// tinyTensors reads tiny-llama's tensors, for tests that write edited copies.
func tinyTensors(t *testing.T, shared string) []safetensors.WriteTensor {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(shared, "models", "tiny-llama", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ts []safetensors.WriteTensor
	for _, h := range f.Header().Tensors {
		b, err := f.ReadRaw(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, safetensors.WriteTensor{Name: h.Name, DType: h.DType, Shape: h.Shape, Data: b})
	}
	return ts
}

// withWeight returns tiny-llama's tensors with the first element of one bf16 weight set to v.
func withWeight(t *testing.T, shared string, v float32) []safetensors.WriteTensor {
	ts := tinyTensors(t, shared)
	for i, x := range ts {
		if x.Name == "model.layers.0.self_attn.q_proj.weight" {
			if x.DType != safetensors.BF16 {
				t.Fatalf("%s is %s, want BF16", x.Name, x.DType)
			}
			d := append([]byte(nil), x.Data...)
			bits := math.Float32bits(v) >> 16
			d[0], d[1] = byte(bits), byte(bits>>8)
			ts[i].Data = d
			return ts
		}
	}
	t.Fatal("no q_proj weight")
	return nil
}

// writeShards writes tensors as a sharded checkpoint (round robin over n shards, with an index)
// into dir, and returns the shard names.
func writeShards(t *testing.T, dir string, ts []safetensors.WriteTensor, n int) []string {
	t.Helper()
	if n == 1 {
		if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
			t.Fatal(err)
		}
		return []string{"model.safetensors"}
	}
	var names []string
	parts := make([][]safetensors.WriteTensor, n)
	wm := map[string]string{}
	for i := range n {
		names = append(names, "model-0000"+string(rune('1'+i))+"-of-0000"+string(rune('0'+n))+".safetensors")
	}
	for i, x := range ts {
		parts[i%n] = append(parts[i%n], x)
		wm[x.Name] = names[i%n]
	}
	for i, p := range parts {
		if err := safetensors.WriteFile(filepath.Join(dir, names[i]), p, nil); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": wm})
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestQuantizeExitCodes: bad input in the model files exits 2 with one line, for GGUF and GPTQ.
func TestQuantizeExitCodes(t *testing.T) {
	shared := sharedDir(t)
	calib := filepath.Join(shared, "data", "calib.txt")
	gguf := []string{"--level", "Q8_0"}
	rtn := []string{"--format", "gptq", "--level", "4bit", "--rtn"}
	calibrated := []string{"--format", "gptq", "--level", "4bit", "--calibration-data", calib, "--calibration-samples", "1", "--seqlen", "16"}
	weight := func(v float32) func(t *testing.T) string {
		return func(t *testing.T) string {
			return badModel(t, shared, func(dir string) { writeShards(t, dir, withWeight(t, shared, v), 1) })
		}
	}
	missingShard := func(t *testing.T) string {
		return badModel(t, shared, func(dir string) {
			names := writeShards(t, dir, tinyTensors(t, shared), 2)
			os.Remove(filepath.Join(dir, names[1]))
		})
	}
	badTokenizer := func(t *testing.T) string {
		return badModel(t, shared, func(dir string) {
			writeShards(t, dir, tinyTensors(t, shared), 1)
			os.Remove(filepath.Join(dir, "tokenizer.model"))
			os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model": {"type": "BPE", "vocab": `), 0o644)
		})
	}
	cases := []struct {
		name    string
		model   func(t *testing.T) string
		args    []string
		wantErr string
	}{
		{"gguf NaN weight", weight(float32(math.NaN())), gguf, "NaN or Inf"},
		{"gguf Inf weight", weight(float32(math.Inf(1))), gguf, "NaN or Inf"},
		{"gptq NaN weight", weight(float32(math.NaN())), rtn, "non-finite"},
		{"gptq Inf weight", weight(float32(math.Inf(-1))), rtn, "non-finite"},
		{"gguf missing shard", missingShard, gguf, "model-00002-of-00002.safetensors"},
		{"gptq missing shard", missingShard, rtn, "model-00002-of-00002.safetensors"},
		{"gguf malformed tokenizer", badTokenizer, gguf, "malformed"},
		{"gptq malformed tokenizer", badTokenizer, calibrated, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"quantize", "--model", c.model(t), "--output-dir", out, "--verbosity", "quiet"}, c.args...)
			code, _, stderr := runCLI(t, args...)
			msg := strings.TrimSpace(stderr)
			if code != ExitUsage || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.wantErr) {
				t.Errorf("exit %d, want %d and one line with %q: %s", code, ExitUsage, c.wantErr, msg)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("output dir holds %v after a failure", entries)
			}
		})
	}
}

// TestQuantizeGGUFRefusesLayeredFlags: quantize --format gguf refuses every GPTQ/AWQ-only flag, as
// submit does, with exit 2 and one line naming the flag.
func TestQuantizeGGUFRefusesLayeredFlags(t *testing.T) {
	shared := sharedDir(t)
	model := filepath.Join(shared, "models", "tiny-llama")
	for _, flag := range [][]string{{"--act-order"}, {"--sym=false"}, {"--static-groups"}, {"--damp", "0.1"}, {"--rtn"},
		{"--duo-scaling"}, {"--calibration-data", "x.txt"}, {"--calibration-samples", "8"}, {"--group-size", "64"}, {"--seqlen", "16"}} {
		name := strings.SplitN(strings.TrimPrefix(flag[0], "--"), "=", 2)[0]
		for _, cmd := range []string{"quantize", "submit", "run"} {
			t.Run(cmd+" "+name, func(t *testing.T) {
				out := t.TempDir()
				args := append([]string{cmd, "--model", model, "--format", "gguf", "--level", "Q8_0", "--output-dir", out}, flag...)
				code, _, stderr := runCLI(t, args...)
				msg := strings.TrimSpace(stderr)
				if code != ExitUsage || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "--"+name+" applies to gptq and awq only") {
					t.Errorf("exit %d, want %d and one line naming --%s: %s", code, ExitUsage, name, msg)
				}
				if entries, _ := os.ReadDir(out); len(entries) != 0 {
					t.Errorf("output dir holds %v", entries)
				}
			})
		}
	}
}
