package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/sharedtest"
	"quantfleet.dev/libs/sharedtest/weights"
)

// hostileModel is tiny-llama's small files (badModel) with its weights linked, then edited.
func hostileModel(t *testing.T, shared string, edits ...func(t *testing.T, dir string)) string {
	tiny := filepath.Join(shared, "models", "tiny-llama")
	return badModel(t, shared, func(dir string) {
		if err := os.Symlink(filepath.Join(tiny, "model.safetensors"), filepath.Join(dir, "model.safetensors")); err != nil {
			t.Fatal(err)
		}
		for _, e := range edits {
			e(t, dir)
		}
	})
}

func config(kv map[string]string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) { sharedtest.SetJSON(t, filepath.Join(dir, "config.json"), kv) }
}

// editedWeights replaces the linked weights by an edited copy of tiny-llama's.
func editedWeights(shared string, edit weights.Edit) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		os.Remove(filepath.Join(dir, "model.safetensors"))
		weights.Write(t, filepath.Join(shared, "models", "tiny-llama"), dir, edit)
	}
}

func remove(name string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, name)) }
}

// addedTokenID appends an added token with the given id to tokenizer.json.
func addedTokenID(id string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		p := filepath.Join(dir, "tokenizer.json")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		tok := `{"id":` + id + `,"content":"<x>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}`
		b = []byte(strings.Replace(string(b), `"added_tokens": [`, `"added_tokens": [`+tok+",", 1))
		if !strings.Contains(string(b), tok) {
			t.Fatal("tokenizer.json has no added_tokens list")
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// truncateTokenizerModel keeps the first n pieces of tokenizer.model.
func truncateTokenizerModel(n int) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		p := filepath.Join(dir, "tokenizer.model")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, sharedtest.TruncatePieces(t, b, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQuantizeHostileModel: config.json, tokenizer and weight values that would exhaust memory,
// overflow a GGUF field or make a file llama.cpp cannot load end `quantfleet quantize` with exit 2,
// one line naming the culprit, nothing in the output directory, and no big allocation.
func TestQuantizeHostileModel(t *testing.T) {
	shared := sharedDir(t)
	gptq := []string{"--format", "gptq", "--level", "4bit", "--rtn"}
	cases := []struct {
		name  string
		edits []func(t *testing.T, dir string)
		args  []string
		want  string
	}{
		// Values that would exhaust memory.
		{"vocab_size 1e12", mk(config(map[string]string{"vocab_size": "1000000000000"})), nil, `"vocab_size" = 1000000000000 does not fit`},
		{"vocab_size 2^30", mk(config(map[string]string{"vocab_size": "1073741824"})), nil, "model.embed_tokens.weight has shape [8192 512], config.json implies [1073741824 512]"},
		{"head_dim huge", mk(config(map[string]string{"head_dim": "1073741824"})), nil, "model.layers.0.self_attn.q_proj.weight has shape [512 512], config.json implies [8589934592 512]"},
		{"hidden_size huge", mk(config(map[string]string{"hidden_size": "2147483640"})), nil, "config.json implies [8192 2147483640]"},
		{"num_hidden_layers huge", mk(config(map[string]string{"num_hidden_layers": "2000000000"})), nil, `"num_hidden_layers" = 2000000000 exceeds 65536`},
		{"added token id 2^31", mk(remove("tokenizer.model"), addedTokenID("2147483648")), nil, `added token "<x>" has id 2147483648`},
		{"gptq vocab_size 2^30", mk(config(map[string]string{"vocab_size": "1073741824"})), gptq, "config.json implies [1073741824 512]"},
		{"gptq head_dim huge", mk(config(map[string]string{"head_dim": "1073741824"})), gptq, "q_proj.weight has shape [512 512]"},
		// Values a GGUF uint32 field would truncate.
		{"hidden_size 2^32+512", mk(config(map[string]string{"hidden_size": "4294967808"})), nil, `"hidden_size" = 4294967808 does not fit a GGUF uint32 field`},
		{"intermediate_size 2^32+1536", mk(config(map[string]string{"intermediate_size": "4294968832"})), nil, `"intermediate_size" = 4294968832 does not fit`},
		// Configs that disagree with the weights.
		{"layer count", mk(config(map[string]string{"num_hidden_layers": "7"})), nil, "the weights have no tensor model.layers.6.input_layernorm.weight"},
		{"gptq layer count", mk(config(map[string]string{"num_hidden_layers": "5"})), gptq, "tensor model.layers.5.input_layernorm.weight is not part of the model config.json describes (5 layers)"},
		{"hidden_size", mk(config(map[string]string{"hidden_size": "1024"})), nil, "model.embed_tokens.weight has shape [8192 512], config.json implies [8192 1024]"},
		{"intermediate_size", mk(config(map[string]string{"intermediate_size": "2048"})), nil, "mlp.gate_proj.weight has shape [1536 512], config.json implies [2048 512]"},
		{"vocab_size vs embedding rows", mk(config(map[string]string{"vocab_size": "8000"})), nil, "config.json implies [8000 512]"},
		{"wrong projection shape", mk(editedWeights(shared, weights.Reshape("model.layers.2.self_attn.v_proj.weight", 128, 512))), nil, "model.layers.2.self_attn.v_proj.weight has shape [128 512], config.json implies [256 512]"},
		{"missing block tensor", mk(editedWeights(shared, weights.Drop("model.layers.4.mlp.up_proj.weight"))), nil, "no tensor model.layers.4.mlp.up_proj.weight"},
		{"gptq missing block tensor", mk(editedWeights(shared, weights.Drop("model.layers.4.mlp.up_proj.weight"))), gptq, "no tensor model.layers.4.mlp.up_proj.weight"},
		{"zero-sized tensor", mk(editedWeights(shared, weights.Reshape("model.layers.1.post_attention_layernorm.weight", 0))), nil, "post_attention_layernorm.weight has shape [0], config.json implies [512]"},
		// A truncated tokenizer.model that still parses.
		{"truncated tokenizer.model", mk(truncateTokenizerModel(4000)), nil, "tokenizer.model has 4000 pieces and 0 added tokens for vocab_size 8192"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			model := hostileModel(t, shared, c.edits...)
			out := t.TempDir()
			args := append([]string{"quantize", "--model", model, "--output-dir", out, "--output-name", "x", "--level", "Q4_K_M"}, c.args...)
			var code int
			var stdout, stderr string
			grew := sharedtest.Allocated(func() { code, stdout, stderr = runCLI(t, args...) })
			if code != 2 {
				t.Fatalf("exit %d, want 2; stdout %q stderr %q", code, stdout, stderr)
			}
			msg := strings.TrimSpace(stderr)
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.want) {
				t.Errorf("stderr %q: want one line mentioning %q", msg, c.want)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 0 {
				t.Errorf("output dir holds %v after a failure", entries)
			}
			if grew > 128<<20 {
				t.Errorf("allocated %d MiB before failing", grew>>20)
			}
		})
	}
}

func mk(edits ...func(t *testing.T, dir string)) []func(t *testing.T, dir string) { return edits }
