package cli

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/cuda/llamacuda"
	"quantfleet.dev/libs/device"
	"quantfleet.dev/libs/sharedtest"
)

// gpuPresent reports whether a CUDA device can be opened here.
func gpuPresent() bool {
	n, err := cuda.Count(context.Background())
	return err == nil && n > 0
}

// sharedFile is $env (the GPU machine's copies) or ../shared/elem.
func sharedFile(t *testing.T, env string, elem ...string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	return sharedtest.Path(t, elem...)
}

// TestDeviceFlagErrors: a bad --device value is a usage error (exit 2) on every command that
// takes the flag, before anything else is done.
func TestDeviceFlagErrors(t *testing.T) {
	out := t.TempDir()
	for _, args := range [][]string{
		{"quantize", "--model", out, "--format", "gptq", "--level", "4bit", "--rtn", "--device", "gpu", "--output-dir", out},
		{"run", "--model", out, "--format", "gptq", "--level", "4bit", "--rtn", "--device", "tpu", "--output-dir", out},
		{"eval", "--model", out, "--data", filepath.Join(out), "--device", "cuda:x"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != ExitUsage || !strings.Contains(stderr, "want auto, cpu, cuda or cuda:N") || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and one line", args[0], code, stderr)
		}
	}
}

// TestDeviceCUDAWithoutGPU: --device cuda on a machine without a usable GPU is bad input:
// exit 2, one line naming what was not found, nothing at the output path; auto (the default)
// runs on the CPU and records it.
func TestDeviceCUDAWithoutGPU(t *testing.T) {
	if gpuPresent() {
		t.Skip("a CUDA device is present")
	}
	sh := sharedDir(t)
	model := filepath.Join(sh, "models", "tiny-llama")
	data := filepath.Join(sh, "data", "eval.txt")
	out := t.TempDir()
	for _, args := range [][]string{
		{"quantize", "--model", model, "--format", "gptq", "--level", "4bit", "--rtn", "--output-dir", out, "--output-name", "q", "--device", "cuda"},
		{"quantize", "--model", model, "--format", "gguf", "--level", "Q8_0", "--output-dir", out, "--output-name", "q.gguf", "--device", "cuda"},
		{"run", "--model", model, "--format", "gptq", "--level", "4bit", "--rtn", "--output-dir", out, "--output-name", "q", "--device", "cuda"},
		{"eval", "--model", model, "--data", data, "--ctx", "64", "--windows", "1", "--device", "cuda"},
	} {
		code, stdout, stderr := runCLI(t, args...)
		msg := strings.TrimSpace(stderr)
		if code != ExitUsage || strings.Contains(msg, "\n") || !strings.Contains(msg, "--device cuda") ||
			!strings.Contains(msg, "cuda: not available") {
			t.Errorf("%s --device cuda: exit %d, stderr %q", args[0], code, stderr)
		}
		if stdout != "" {
			t.Errorf("%s: stdout %q", args[0], stdout)
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("output directory holds %d entries after refused runs", len(ents))
	}
	code, stdout, stderr := runCLI(t, "quantize", "--model", model, "--format", "gptq", "--level", "4bit", "--rtn",
		"--output-dir", out, "--output-name", "q", "--json", "--verbosity", "quiet")
	if code != 0 {
		t.Fatalf("quantize --device auto: exit %d: %s", code, stderr)
	}
	meta := resultOf(t, stdout)["quantization_metadata"].(map[string]any)
	if meta["device"] != "cpu" || meta["gpu"] != nil {
		t.Errorf("metadata device %v gpu %v; want cpu and none", meta["device"], meta["gpu"])
	}
	code, stdout, stderr = runCLI(t, "eval", "--model", model, "--data", data, "--ctx", "64", "--windows", "2", "--json", "--device", "auto")
	if code != 0 {
		t.Fatalf("eval: exit %d: %s", code, stderr)
	}
	if r := resultOf(t, stdout); r["device"] != "cpu" {
		t.Errorf("eval result device %v", r["device"])
	}
}

// TestDeviceCUDA runs on a GPU machine (make test-gpu builds it into bin/gpu-tests/cli.test):
//   - quantize --device cuda (GPTQ 4bit g128 act-order, 32×512 calibration tokens) records
//     device cuda and the GPU's name, and is deterministic: a second run is byte-identical;
//   - run --device cuda (the embedded fleet, 2 workers) writes a checkpoint byte-identical to
//     quantize --device cuda's;
//   - eval --device cuda agrees with eval --device cpu within 1e-4 relative on that checkpoint.
func TestDeviceCUDA(t *testing.T) {
	if !gpuPresent() {
		t.Skip("no CUDA device")
	}
	model := sharedFile(t, "QUANTFLEET_TINY_LLAMA", "models", "tiny-llama")
	calib := sharedFile(t, "QUANTFLEET_CALIB", "data", "calib.txt")
	data := os.Getenv("QUANTFLEET_EVAL")
	if data == "" {
		if data = filepath.Join(filepath.Dir(calib), "eval.txt"); !fileExists(data) {
			data = calib
		}
	}
	out := t.TempDir()
	args := func(cmd, name string) []string {
		return []string{cmd, "--model", model, "--format", "gptq", "--level", "4bit", "--sym=false", "--act-order",
			"--calibration-data", calib, "--calibration-samples", "32", "--seqlen", "512",
			"--output-dir", out, "--output-name", name, "--json", "--verbosity", "quiet", "--device", "cuda"}
	}
	for _, name := range []string{"q1", "q2"} {
		t0 := time.Now()
		code, stdout, stderr := runCLI(t, args("quantize", name)...)
		if code != 0 {
			t.Fatalf("FAIL quantize --device cuda: exit %d: %s", code, stderr)
		}
		meta := resultOf(t, stdout)["quantization_metadata"].(map[string]any)
		if meta["device"] != "cuda" || meta["gpu"] == nil || meta["gpu"] == "" {
			t.Errorf("FAIL metadata device %v gpu %v", meta["device"], meta["gpu"])
		}
		t.Logf("quantize --device cuda %s: %.1fs on %v", name, time.Since(t0).Seconds(), meta["gpu"])
	}
	checkSame(t, "quantize --device cuda twice", filepath.Join(out, "q1"), filepath.Join(out, "q2"))
	t0 := time.Now()
	code, stdout, stderr := runCLI(t, args("run", "r")...)
	if code != 0 {
		t.Fatalf("FAIL run --device cuda: exit %d: %s", code, stderr)
	}
	if meta := resultOf(t, stdout)["quantization_metadata"].(map[string]any); meta["device"] != "cuda" {
		t.Errorf("FAIL run metadata device %v", meta["device"])
	}
	t.Logf("run --device cuda: %.1fs", time.Since(t0).Seconds())
	checkSame(t, "run --device cuda vs quantize --device cuda", filepath.Join(out, "q1"), filepath.Join(out, "r"))
	ppl := map[string]float64{}
	for _, dev := range []string{"cpu", "cuda"} {
		t0 := time.Now()
		code, stdout, stderr := runCLI(t, "eval", "--model", filepath.Join(out, "q1"), "--data", data, "--ctx", "512", "--windows", "100", "--json", "--device", dev)
		if code != 0 {
			t.Fatalf("FAIL eval --device %s: exit %d: %s", dev, code, stderr)
		}
		r := resultOf(t, stdout)
		ppl[dev] = r["perplexity"].(float64)
		t.Logf("eval --device %s: perplexity %.6f in %.1fs (device %v, gpu %v)", dev, ppl[dev], time.Since(t0).Seconds(), r["device"], r["gpu"])
	}
	if rel := math.Abs(ppl["cuda"]-ppl["cpu"]) / ppl["cpu"]; !(rel <= 1e-4) {
		t.Errorf("FAIL eval --device cuda %.6f vs cpu %.6f: rel %.2e > 1e-4", ppl["cuda"], ppl["cpu"], rel)
	} else {
		t.Logf("PASS eval --device cuda vs cpu: rel %.2e ≤ 1e-4", rel)
	}
}

// TestDeviceCUDAAWQ runs AWQ through the command line on the GPU: `quantize --format awq
// --device cuda` records the GPU, and `run --device cuda` (the fleet's workers, the context's
// llamacuda.Compute) writes the same bytes.
func TestDeviceCUDAAWQ(t *testing.T) {
	if !gpuPresent() {
		t.Skip("no CUDA device")
	}
	model := sharedFile(t, "QUANTFLEET_TINY_LLAMA", "models", "tiny-llama")
	calib := sharedFile(t, "QUANTFLEET_CALIB", "data", "calib.txt")
	out := t.TempDir()
	for _, cmd := range []string{"quantize", "run"} {
		t0 := time.Now()
		code, stdout, stderr := runCLI(t, cmd, "--model", model, "--format", "awq", "--level", "4bit",
			"--calibration-data", calib, "--calibration-samples", "32", "--seqlen", "512", "--shard-samples", "16",
			"--output-dir", out, "--output-name", cmd, "--json", "--verbosity", "quiet", "--device", "cuda")
		if code != 0 {
			t.Fatalf("FAIL %s --format awq --device cuda: exit %d: %s", cmd, code, stderr)
		}
		meta := resultOf(t, stdout)["quantization_metadata"].(map[string]any)
		if meta["device"] != "cuda" || (cmd == "quantize" && (meta["gpu"] == nil || meta["gpu"] == "")) {
			t.Errorf("FAIL %s AWQ metadata device %v gpu %v", cmd, meta["device"], meta["gpu"])
		}
		t.Logf("%s --format awq --device cuda: %.1fs on %v", cmd, time.Since(t0).Seconds(), meta["gpu"])
	}
	checkSame(t, "AWQ run --device cuda vs quantize --device cuda", filepath.Join(out, "quantize"), filepath.Join(out, "run"))
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// checkSame fails unless directories a and b hold the same files with the same bytes.
func checkSame(t *testing.T, what, a, b string) {
	t.Helper()
	ea, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := os.ReadDir(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ea) != len(eb) {
		t.Errorf("FAIL %s: %d files vs %d", what, len(ea), len(eb))
		return
	}
	for i, e := range ea {
		x, err1 := os.ReadFile(filepath.Join(a, e.Name()))
		y, err2 := os.ReadFile(filepath.Join(b, eb[i].Name()))
		if e.Name() != eb[i].Name() || err1 != nil || err2 != nil || string(x) != string(y) {
			t.Errorf("FAIL %s: %s differs", what, e.Name())
			return
		}
	}
	t.Logf("PASS %s: byte-identical (%d files)", what, len(ea))
}

// TestRecordGPUArithmetic: on a GPU, a result's metadata names the arithmetic that computed its
// calibrated layers — gpu_tf32 for GPTQ and AWQ with TF32 forwards, gpu_awq_half for AWQ with
// the half-precision grid — and nothing for round-to-nearest, GGUF (no method) or the CPU.
func TestRecordGPUArithmetic(t *testing.T) {
	gpu := &device.Device{GPU: &cuda.Device{}} // what record reads of a GPU; no card needed
	all, none := llamacuda.DefaultOptions(), llamacuda.Options{}
	for _, tc := range []struct {
		dev        *device.Device
		method     string
		opts       llamacuda.Options
		tf32, half bool
	}{
		{gpu, "gptq", all, true, false},
		{gpu, "awq", all, true, true},
		{gpu, "awq", llamacuda.Options{AWQHalf: true}, false, true},
		{gpu, "awq", none, false, false},
		{gpu, "rtn", all, false, false},
		{gpu, "", all, false, false},
		{&device.Device{}, "awq", all, false, false},
	} {
		meta := map[string]any{}
		if tc.method != "" {
			meta["method"] = tc.method
		}
		f := &deviceFlag{dev: tc.dev, gpu: tc.opts}
		meta = f.record(meta)
		_, tf32 := meta["gpu_tf32"]
		_, half := meta["gpu_awq_half"]
		if tf32 != tc.tf32 || half != tc.half || meta["device"] != tc.dev.Name() {
			t.Errorf("method %q, %+v on %s: metadata %v, want gpu_tf32 %v, gpu_awq_half %v", tc.method, tc.opts, tc.dev.Name(), meta, tc.tf32, tc.half)
		}
	}
}
