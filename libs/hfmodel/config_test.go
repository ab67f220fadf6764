package hfmodel

import (
	"errors"
	"strings"
	"testing"
)

func TestParseConfigArchitecture(t *testing.T) {
	cases := []struct {
		json, arch string
		err        error
		text       string
	}{
		{`{"architectures":["Qwen2ForCausalLM"],"model_type":"llama"}`, "Qwen2ForCausalLM", nil, ""},
		{`{"model_type":"mistral"}`, "MistralForCausalLM", nil, ""},
		{`{"model_type":"qwen3"}`, "Qwen3ForCausalLM", nil, ""},
		{`{"architectures":["GPT2LMHeadModel"]}`, "", ErrUnsupportedArchitecture, "unsupported architecture GPT2LMHeadModel (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Phi3ForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM)"},
		{`{"model_type":"gemma"}`, "", ErrUnsupportedArchitecture, `unsupported architecture with model_type "gemma" (supported: `},
		{`null`, "", ErrBadConfig, "not a JSON object"},
	}
	for _, c := range cases {
		cfg, err := ParseConfig([]byte(c.json))
		if c.err != nil {
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.text) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: error %v, want %v containing %q on one line", c.json, err, c.err, c.text)
			}
			continue
		}
		if err != nil || cfg.Architecture != c.arch {
			t.Errorf("%s: got %+v, %v; want architecture %s", c.json, cfg, err, c.arch)
		}
	}
}

// TestParseConfigNulls checks that an explicit null means what transformers' config classes make of
// None, while an absent key gets the class default.
func TestParseConfigNulls(t *testing.T) {
	cases := []struct {
		name, json  string
		kv, headDim int
	}{
		{"mistral absent kv", `{"architectures":["MistralForCausalLM"],"hidden_size":256,"num_attention_heads":8}`, 8, 32},
		{"mistral null kv", `{"architectures":["MistralForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":null}`, 4, 64},
		{"qwen3 absent head_dim", `{"architectures":["Qwen3ForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":2}`, 2, 128},
		{"qwen3 null head_dim", `{"architectures":["Qwen3ForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":null}`, 2, 64},
		{"qwen2 has none", `{"architectures":["Qwen2ForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":2}`, 2, 0},
	}
	for _, c := range cases {
		cfg, err := ParseConfig([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if cfg.NumKVHeads != c.kv || cfg.HeadDim != c.headDim {
			t.Errorf("%s: kv %d head_dim %d, want %d %d", c.name, cfg.NumKVHeads, cfg.HeadDim, c.kv, c.headDim)
		}
	}
}
