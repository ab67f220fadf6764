package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/synth"
)

// TestQuantizeAWQArchitectures runs `quantize --format awq` on synthetic checkpoints: an
// architecture AutoAWQ has no model for (Gemma 3) exits 2 with one line saying it is not
// supported for AWQ and writes nothing; one it supports (Phi-3, fused qkv_proj and
// gate_up_proj) writes an AWQ checkpoint.
func TestQuantizeAWQArchitectures(t *testing.T) {
	shared := sharedDir(t)
	a, err := synth.LoadRepoAssets(filepath.Join("..", "..", "libs"), shared)
	if err != nil {
		t.Fatal(err)
	}
	calib := filepath.Join(shared, "data", "calib.txt")
	for _, tc := range []struct {
		model, wantErr string
	}{
		{"gemma-3-synth-it", "unsupported architecture Gemma3ForCausalLM for AWQ"},
		{"Phi-3-synth-128k-instruct", ""},
	} {
		t.Run(tc.model, func(t *testing.T) {
			src, err := synth.Write(t.TempDir(), tc.model, a)
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			code, _, stderr := runCLI(t, "quantize", "--model", src, "--format", "awq", "--level", "4bit", "--output-dir", out,
				"--output-name", "awq", "--calibration-data", calib, "--calibration-samples", "2", "--seqlen", "32", "--device", "cpu")
			if tc.wantErr == "" {
				if _, err := os.Stat(filepath.Join(out, "awq", "model.safetensors")); code != 0 || err != nil {
					t.Fatalf("exit %d (%v): %s", code, err, stderr)
				}
				return
			}
			msg := strings.TrimSpace(stderr)
			if code != 2 || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tc.wantErr) {
				t.Errorf("exit %d, stderr %q: want exit 2 and one line mentioning %q", code, msg, tc.wantErr)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("output dir holds %v after a refusal", entries)
			}
		})
	}
}
