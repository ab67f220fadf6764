package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/gguf/ggufdump"
	"quantfleet.dev/libs/sharedtest"
)

// sharedDir finds ../shared beside the repository. Without it the test skips, except in CI.
func sharedDir(t testing.TB) string {
	t.Helper()
	sharedtest.Path(t, "models", "tiny-llama")
	return sharedtest.Dir(t)
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code = Run(context.Background(), env, args)
	return code, out.String(), errb.String()
}

// gguf levels of the acceptance: every tensor and every reference KV must equal llama.cpp's output.
var referenceLevels = []string{"Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M",
	"Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "BF16"}

func TestQuantizeMatchesLlamaCpp(t *testing.T) {
	shared := sharedDir(t)
	model := filepath.Join(shared, "models", "tiny-llama")
	python, _ := exec.LookPath("python3")
	for _, level := range referenceLevels {
		t.Run(level, func(t *testing.T) {
			ref := filepath.Join(shared, "reference", "tiny-llama", level+".json")
			want, err := ggufdump.LoadDump(ref)
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			code, stdout, stderr := runCLI(t, "quantize", "--model", model, "--format", "gguf", "--level", level,
				"--output-dir", out, "--output-name", "x.gguf", "--json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			path := filepath.Join(out, "x.gguf")
			got, err := ggufdump.DumpFile(path)
			if err != nil {
				t.Fatal(err)
			}
			same, diffs := ggufdump.CompareDumpCount(want, got, []string{"general.name"})
			if len(diffs) > 0 {
				t.Fatalf("%d/%d tensors identical; differences:\n%s", same, len(want.Tensors), strings.Join(diffs, "\n"))
			}
			checkResultEvent(t, stdout, path)
			// The reference's own comparison tool, when Python is there to run it.
			if python != "" {
				cmd := exec.Command(python, filepath.Join(shared, "tools", "gguf_dump.py"), "--compare", ref, path, "--ignore-kv", "general.name")
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("gguf_dump.py --compare: %v\n%s", err, b)
				}
			}
		})
	}
}

func checkResultEvent(t *testing.T, stdout, path string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var last struct {
		Event  string `json:"event"`
		Result struct {
			OutputPath       string  `json:"output_path"`
			FileSize         int64   `json:"file_size"`
			CompressionRatio float64 `json:"compression_ratio"`
			ValidationStatus string  `json:"validation_status"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last stdout line is not JSON: %v: %q", err, lines[len(lines)-1])
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	r := last.Result
	if last.Event != "result" || r.FileSize != st.Size() || r.ValidationStatus != "valid" || r.CompressionRatio <= 0 || r.CompressionRatio >= 1.01 {
		t.Errorf("result event %+v does not describe %s (%d bytes)", last, path, st.Size())
	}
}
