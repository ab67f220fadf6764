package cli

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// badModel copies tiny-llama's small files into a temp dir and lets the case edit them.
func badModel(t *testing.T, shared string, edit func(dir string)) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(shared, "models", "tiny-llama")
	for _, f := range []string{"config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit(dir)
	return dir
}

func writeSafetensors(t *testing.T, path, header string, data int) {
	t.Helper()
	b := make([]byte, 8, 8+len(header)+data)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	b = append(b, make([]byte, data)...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestQuantizeBadInput(t *testing.T) {
	shared := sharedDir(t)
	tiny := filepath.Join(shared, "models", "tiny-llama")
	truncated := func(dir string) {
		b, err := os.ReadFile(filepath.Join(tiny, "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "model.safetensors"), b[:len(b)/2], 0o644)
	}
	cases := []struct {
		name    string
		model   func(t *testing.T) string
		args    []string
		wantErr string
	}{
		{"truncated safetensors", func(t *testing.T) string { return badModel(t, shared, truncated) }, nil, "outside data section"},
		{"lying offsets", func(t *testing.T) string {
			return badModel(t, shared, func(dir string) {
				writeSafetensors(t, filepath.Join(dir, "model.safetensors"),
					`{"model.embed_tokens.weight":{"dtype":"BF16","shape":[4,4],"data_offsets":[0,4096]}}`, 32)
			})
		}, nil, "safetensors"},
		{"unsupported dtype", func(t *testing.T) string {
			return badModel(t, shared, func(dir string) {
				writeSafetensors(t, filepath.Join(dir, "model.safetensors"),
					`{"model.embed_tokens.weight":{"dtype":"Q9","shape":[4,4],"data_offsets":[0,32]}}`, 32)
			})
		}, nil, "dtype"},
		{"unsupported architecture", func(t *testing.T) string {
			return badModel(t, shared, func(dir string) {
				os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"architectures":["GPTNeoXForCausalLM"],"hidden_size":8}`), 0o644)
				writeSafetensors(t, filepath.Join(dir, "model.safetensors"), `{}`, 0)
			})
		}, nil, "unsupported architecture GPTNeoXForCausalLM"},
		{"unknown level", func(t *testing.T) string { return tiny }, []string{"--level", "Q9_K"}, "Q9_K"},
		{"missing model", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, nil, "nope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"quantize", "--model", c.model(t), "--output-dir", out, "--output-name", "x.gguf", "--level", "Q4_K_M"}, c.args...)
			code, stdout, stderr := runCLI(t, args...)
			if code == 0 {
				t.Fatalf("exit 0, want failure; stdout %q", stdout)
			}
			msg := strings.TrimSpace(stderr)
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.wantErr) {
				t.Errorf("stderr %q: want one line mentioning %q", msg, c.wantErr)
			}
			entries, _ := os.ReadDir(out)
			if len(entries) != 0 {
				t.Errorf("output dir holds %v after a failure", entries)
			}
		})
	}
	t.Run("unwritable output dir", func(t *testing.T) {
		// root ignores permission bits, so make the directory impossible: a path under a regular file.
		file := filepath.Join(t.TempDir(), "file")
		os.WriteFile(file, nil, 0o644)
		code, _, stderr := runCLI(t, "quantize", "--model", tiny, "--level", "Q8_0", "--output-dir", filepath.Join(file, "sub"))
		if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "output directory") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}
