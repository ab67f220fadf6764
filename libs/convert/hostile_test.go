package convert

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/sharedtest"
	"quantfleet.dev/libs/sharedtest/weights"
)

// copyModel copies a synthetic checkpoint into a fresh directory the case may edit.
func copyModel(t *testing.T, name string) string {
	t.Helper()
	src := synthModel(t, name)
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// setConfig sets config.json keys to raw JSON texts.
func setConfig(kv map[string]string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) { sharedtest.SetJSON(t, filepath.Join(dir, hfmodel.ConfigFile), kv) }
}

// editWeights rewrites the checkpoint's model.safetensors in place.
func editWeights(edit weights.Edit) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) { weights.Write(t, dir, dir, edit) }
}

// TestPlanRejectsHostileModels: config.json values that would exhaust memory or not fit the GGUF
// fields, and configs that disagree with the weights, are bad input before anything is sized by
// them; the unchanged checkpoint still plans.
func TestPlanRejectsHostileModels(t *testing.T) {
	const mistral = "mistral-synth" // 2 layers, hidden 256, 8 heads / 2 KV heads, ff 512, vocab 8192
	cases := []struct {
		name, model string
		edit        func(t *testing.T, dir string)
		want        string // in the error; "" means the model must plan
	}{
		{"unchanged", mistral, func(*testing.T, string) {}, ""},
		{"unchanged qwen2 (tied, biases)", "Qwen2-Synth-Instruct", func(*testing.T, string) {}, ""},
		{"unchanged qwen3 (q/k norms, yarn)", "Qwen3-Synth-v1.5-Chat", func(*testing.T, string) {}, ""},
		// Values that would exhaust memory.
		{"vocab_size 1e12", mistral, setConfig(map[string]string{"vocab_size": "1000000000000"}), `"vocab_size" = 1000000000000`},
		{"vocab_size 2^30", mistral, setConfig(map[string]string{"vocab_size": "1073741824"}), "model.embed_tokens.weight has shape [8192 256], config.json implies [1073741824 256]"},
		{"head_dim huge", mistral, setConfig(map[string]string{"head_dim": "1073741824"}), "self_attn.q_proj.weight has shape"},
		{"hidden_size huge", mistral, setConfig(map[string]string{"hidden_size": "2147483640"}), "model.embed_tokens.weight has shape [8192 256], config.json implies [8192 2147483640]"},
		{"num_hidden_layers huge", mistral, setConfig(map[string]string{"num_hidden_layers": "2000000000"}), `"num_hidden_layers" = 2000000000 exceeds`},
		{"num_hidden_layers many", mistral, setConfig(map[string]string{"num_hidden_layers": "60000"}), "num_hidden_layers 60000, but the weights hold only"},
		// Values a GGUF uint32 field would truncate into agreement with the weights.
		{"hidden_size 2^32+256", mistral, setConfig(map[string]string{"hidden_size": "4294967552"}), `"hidden_size" = 4294967552 does not fit`},
		{"context 2^32+2048", mistral, setConfig(map[string]string{"max_position_embeddings": "4294969344"}), `"max_position_embeddings" = 4294969344 does not fit`},
		{"yarn original context 2^32", "Qwen3-Synth-v1.5-Chat", setConfig(map[string]string{
			"rope_scaling": `{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":4294967296}`}), "original_max_position_embeddings 4.294967296e+09 does not fit"},
		// Configs that disagree with the weights.
		{"one layer too many", mistral, setConfig(map[string]string{"num_hidden_layers": "3"}), "no tensor model.layers.2.input_layernorm.weight"},
		{"one layer too few", mistral, setConfig(map[string]string{"num_hidden_layers": "1"}), "tensor model.layers.1.input_layernorm.weight is not part of the model config.json describes (1 layers)"},
		{"wrong hidden_size", mistral, setConfig(map[string]string{"hidden_size": "512"}), "model.embed_tokens.weight has shape [8192 256], config.json implies [8192 512]"},
		{"wrong intermediate_size", mistral, setConfig(map[string]string{"intermediate_size": "1024"}), "mlp.gate_proj.weight has shape [512 256], config.json implies [1024 256]"},
		{"vocab_size vs embedding rows", mistral, setConfig(map[string]string{"vocab_size": "8000"}), "model.embed_tokens.weight has shape [8192 256], config.json implies [8000 256]"},
		{"wrong kv heads", mistral, setConfig(map[string]string{"num_key_value_heads": "4"}), "self_attn.k_proj.weight has shape [64 256], config.json implies [128 256]"},
		{"tied config, untied weights", "Qwen2-Synth-Instruct", setConfig(map[string]string{"tie_word_embeddings": "false"}), "no tensor lm_head.weight"},
		{"wrong projection shape", mistral, editWeights(weights.Reshape("model.layers.1.self_attn.k_proj.weight", 32, 256)), "model.layers.1.self_attn.k_proj.weight has shape [32 256], config.json implies [64 256]"},
		{"transposed down_proj", mistral, editWeights(weights.Reshape("model.layers.0.mlp.down_proj.weight", 512, 256)), "mlp.down_proj.weight has shape [512 256], config.json implies [256 512]"},
		{"missing block tensor", mistral, editWeights(weights.Drop("model.layers.1.mlp.down_proj.weight")), "no tensor model.layers.1.mlp.down_proj.weight"},
		{"missing qwen2 bias", "Qwen2-Synth-Instruct", editWeights(weights.Drop("model.layers.0.self_attn.k_proj.bias")), "no tensor model.layers.0.self_attn.k_proj.bias"},
		{"zero-sized tensor", mistral, editWeights(weights.Reshape("model.layers.0.input_layernorm.weight", 0)), "input_layernorm.weight has shape [0], config.json implies [256]"},
		{"zero-sized embedding", mistral, editWeights(weights.Reshape("model.embed_tokens.weight", 0, 256)), "model.embed_tokens.weight has shape [0 256]"},
		{"extra block", mistral, editWeights(weights.Copy("model.layers.1.mlp.up_proj.weight", "model.layers.7.mlp.up_proj.weight")), "tensor model.layers.7.mlp.up_proj.weight is not part of the model"},
		{"bias the config does not have", mistral, editWeights(weights.Copy("model.norm.weight", "model.layers.0.self_attn.o_proj.bias")), "tensor model.layers.0.self_attn.o_proj.bias is not part of the model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyModel(t, c.model)
			c.edit(t, dir)
			var err error
			grew := sharedtest.Allocated(func() { err = planDir(dir) })
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("planned; want an error mentioning %q", c.want)
			}
			msg := err.Error()
			if !fault.BadInput(err) || !errors.Is(err, hfmodel.ErrBadConfig) || strings.Contains(msg, "\n") || !strings.Contains(msg, c.want) {
				t.Errorf("error %q: want one line of bad config.json mentioning %q", msg, c.want)
			}
			// Opening reads headers only: nothing may be sized by the hostile value.
			if grew > 64<<20 {
				t.Errorf("allocated %d MiB before failing", grew>>20)
			}
		})
	}
}

func planDir(dir string) error {
	m, err := hfmodel.OpenDir(dir)
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = NewPlan(m, dir, "Q8_0", Options{})
	return err
}
