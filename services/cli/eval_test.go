package cli

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

// resultOf returns the result object of a --json run (the last line of stdout).
func resultOf(t *testing.T, stdout string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var ev struct {
		Event  string         `json:"event"`
		Result map[string]any `json:"result"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ev); err != nil || ev.Event != "result" {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	return ev.Result
}

// TestGPTQRTNThenEval writes an RTN GPTQ checkpoint through the CLI and evaluates it and the
// source model on 4 short windows: the checkpoint is read from its files, and 4-bit RTN costs
// a little perplexity, not a lot.
func TestGPTQRTNThenEval(t *testing.T) {
	sh := sharedDir(t)
	model := filepath.Join(sh, "models", "tiny-llama")
	data := filepath.Join(sh, "data", "eval.txt")
	out := t.TempDir()
	code, stdout, stderr := runCLI(t, "quantize", "--model", model, "--format", "gptq", "--level", "4bit", "--sym=false", "--rtn",
		"--output-dir", out, "--output-name", "q", "--json")
	if code != 0 {
		t.Fatalf("quantize: exit %d: %s", code, stderr)
	}
	res := resultOf(t, stdout)
	if res["output_path"] != filepath.Join(out, "q") || res["format"] != "gptq" || res["validation_status"] != "valid" {
		t.Fatalf("result %v", res)
	}
	meta := res["quantization_metadata"].(map[string]any)
	if meta["method"] != "rtn" || meta["bits"] != 4.0 || meta["sym"] != false || meta["group_size"] != 128.0 {
		t.Errorf("metadata %v", meta)
	}
	ppl := map[string]float64{}
	for name, dir := range map[string]string{"bf16": model, "rtn": filepath.Join(out, "q")} {
		code, stdout, stderr := runCLI(t, "eval", "--model", dir, "--data", data, "--ctx", "256", "--windows", "4", "--json")
		if code != 0 {
			t.Fatalf("eval %s: exit %d: %s", name, code, stderr)
		}
		r := resultOf(t, stdout)
		if r["tokens"] != 1024.0 || r["windows"] != 4.0 {
			t.Errorf("eval result %v", r)
		}
		ppl[name] = r["perplexity"].(float64)
		if math.Abs(math.Log(ppl[name])-r["mean_nll"].(float64)) > 1e-9 {
			t.Errorf("perplexity %v is not exp(mean_nll %v)", ppl[name], r["mean_nll"])
		}
	}
	if !(ppl["rtn"] > ppl["bf16"] && ppl["rtn"] < ppl["bf16"]*1.15) {
		t.Errorf("perplexity bf16 %.4f, RTN 4-bit %.4f: want RTN slightly worse", ppl["bf16"], ppl["rtn"])
	}
	code, stdout, _ = runCLI(t, "eval", "--model", model, "--data", data, "--ctx", "256", "--windows", "4")
	if code != 0 || !strings.HasPrefix(stdout, "perplexity ") {
		t.Errorf("human output %q (exit %d)", stdout, code)
	}
}

func TestGPTQAWQBadInput(t *testing.T) {
	sh := sharedDir(t)
	model := filepath.Join(sh, "models", "tiny-llama")
	data := filepath.Join(sh, "data", "eval.txt")
	calib := filepath.Join(sh, "data", "calib.txt")
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"quantize", "--model", model, "--format", "gptq", "--level", "4bit"}, "--calibration-data"},
		{[]string{"quantize", "--model", model, "--format", "awq", "--level", "4bit"}, "--calibration-data"},
		{[]string{"quantize", "--model", model, "--format", "awq", "--level", "3bit", "--calibration-data", calib}, "not a awq level"},
		{[]string{"quantize", "--model", model, "--format", "awq", "--level", "4bit", "--sym", "--calibration-data", calib}, "asymmetrically"},
		{[]string{"quantize", "--model", model, "--format", "awq", "--level", "4bit", "--rtn"}, "gptq only"},
		{[]string{"quantize", "--model", model, "--format", "gptq", "--level", "4bit", "--rtn", "--calibration-data", calib}, "--rtn uses no calibration"},
		{[]string{"quantize", "--model", model, "--format", "gptq", "--level", "5bit", "--rtn"}, "not a gptq level"},
		{[]string{"quantize", "--model", model, "--format", "gptq", "--level", "4bit", "--calibration-data", calib, "--damp", "1.5"}, "--damp"},
		{[]string{"quantize", "--model", model, "--format", "gptq", "--level", "4bit", "--calibration-data", filepath.Join(sh, "nope.txt")}, "no such file"},
		{[]string{"quantize", "--model", model, "--format", "gptq", "--level", "4bit", "--calibration-data", calib, "--calibration-samples", "1000"}, "samples fit"},
		{[]string{"eval", "--model", model}, "--data is required"},
		{[]string{"eval", "--data", data}, "--model is required"},
		{[]string{"eval", "--model", model, "--data", data, "--windows", "100000"}, "windows fit"},
		{[]string{"eval", "--model", filepath.Join(sh, "nope"), "--data", data}, "not a directory"},
	}
	for _, tc := range cases {
		code, _, stderr := runCLI(t, tc.args...)
		if code != ExitUsage || !strings.Contains(stderr, tc.wantErr) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, code, stderr, ExitUsage, tc.wantErr)
		}
	}
}
