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
		{`{"architectures":["GPT2LMHeadModel"]}`, "", ErrUnsupportedArchitecture, "unsupported architecture GPT2LMHeadModel (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)"},
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
