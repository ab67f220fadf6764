package transformer

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/sharedtest"
)

func TestReadConfigTinyLlama(t *testing.T) {
	c, err := ReadConfig(filepath.Join(sharedtest.Dir(t), "models", "tiny-llama"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Architecture: "LlamaForCausalLM", HiddenSize: 512, IntermediateSize: 1536, NumLayers: 6, NumHeads: 8,
		NumKVHeads: 4, HeadDim: 64, VocabSize: 8192, MaxPositionEmbeddings: 2048, RMSNormEps: 1e-5,
		SlidingWindow: make([]int, 6), BOSTokenID: 1, EOSTokenID: 2,
		Rope: Rope{Type: "default", Theta: 10000, Factor: 1, Truncate: true, Dim: 64},
	}
	if !reflect.DeepEqual(*c, want) {
		t.Fatalf("config\n%+v\nwant\n%+v", *c, want)
	}
}

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name  string
		json  string
		check func(t *testing.T, c *Config)
	}{
		{"llama defaults, transformers 4 rope", `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":4,
			"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}`,
			func(t *testing.T, c *Config) {
				if c.NumKVHeads != 4 || c.HeadDim != 16 || c.RMSNormEps != 1e-6 || c.VocabSize != 32000 || c.NumLayers != 32 || c.TieWordEmbeddings || c.AttentionBias {
					t.Errorf("defaults: %+v", c)
				}
				if c.Rope.Type != "llama3" || c.Rope.Theta != 500000 || c.Rope.Factor != 8 || c.Rope.OriginalMaxPositionEmbeddings != 8192 {
					t.Errorf("rope: %+v", c.Rope)
				}
			}},
		{"old rope_scaling type key", `{"architectures":["LlamaForCausalLM"],"rope_scaling":{"type":"linear","factor":2.0}}`,
			func(t *testing.T, c *Config) {
				if c.Rope.Type != "linear" || c.Rope.Factor != 2 || c.Rope.Theta != 10000 {
					t.Errorf("rope: %+v", c.Rope)
				}
			}},
		{"llama biases", `{"architectures":["LlamaForCausalLM"],"attention_bias":true,"mlp_bias":true,"tie_word_embeddings":true}`,
			func(t *testing.T, c *Config) {
				if !c.AttentionBias || !c.OutputBias || !c.MLPBias || !c.TieWordEmbeddings {
					t.Errorf("%+v", c)
				}
			}},
		{"mistral defaults", `{"architectures":["MistralForCausalLM"],"num_hidden_layers":2}`,
			func(t *testing.T, c *Config) {
				if c.NumKVHeads != 8 || !reflect.DeepEqual(c.SlidingWindow, []int{4096, 4096}) || c.MaxPositionEmbeddings != 131072 {
					t.Errorf("%+v", c)
				}
			}},
		{"mistral null window and kv heads", `{"architectures":["MistralForCausalLM"],"num_hidden_layers":2,"sliding_window":null,"num_key_value_heads":null}`,
			func(t *testing.T, c *Config) {
				if c.NumKVHeads != 32 || !reflect.DeepEqual(c.SlidingWindow, []int{0, 0}) {
					t.Errorf("%+v", c)
				}
			}},
		{"qwen2 from model_type, sliding layers", `{"model_type":"qwen2","num_hidden_layers":4,"use_sliding_window":true,"sliding_window":128,"max_window_layers":2}`,
			func(t *testing.T, c *Config) {
				if c.Architecture != "Qwen2ForCausalLM" || !c.AttentionBias || c.OutputBias || !reflect.DeepEqual(c.SlidingWindow, []int{0, 0, 128, 128}) {
					t.Errorf("%+v", c)
				}
			}},
		{"qwen2 window off", `{"architectures":["Qwen2ForCausalLM"],"num_hidden_layers":30,"sliding_window":128}`,
			func(t *testing.T, c *Config) {
				for _, w := range c.SlidingWindow {
					if w != 0 {
						t.Errorf("window %v without use_sliding_window", c.SlidingWindow)
					}
				}
			}},
		{"qwen2 layer_types", `{"architectures":["Qwen2ForCausalLM"],"num_hidden_layers":2,"use_sliding_window":true,"sliding_window":64,"layer_types":["sliding_attention","full_attention"]}`,
			func(t *testing.T, c *Config) {
				if !reflect.DeepEqual(c.SlidingWindow, []int{64, 0}) {
					t.Errorf("%v", c.SlidingWindow)
				}
			}},
		{"qwen3 defaults", `{"architectures":["Qwen3ForCausalLM"],"hidden_size":1024,"num_attention_heads":16,"num_key_value_heads":8}`,
			func(t *testing.T, c *Config) {
				if c.HeadDim != 128 || !c.QKNorm || c.AttentionBias || c.Rope.Dim != 128 {
					t.Errorf("%+v", c)
				}
			}},
		{"yarn without factor", `{"architectures":["LlamaForCausalLM"],"max_position_embeddings":8192,"rope_parameters":{"rope_type":"yarn","rope_theta":10000.0,"original_max_position_embeddings":2048}}`,
			func(t *testing.T, c *Config) {
				if c.Rope.Factor != 4 {
					t.Errorf("factor %v, want 4", c.Rope.Factor)
				}
			}},
		{"eos list", `{"architectures":["LlamaForCausalLM"],"bos_token_id":null,"eos_token_id":[7,8],"quantization_config":{"bits":4}}`,
			func(t *testing.T, c *Config) {
				if c.BOSTokenID != -1 || c.EOSTokenID != 7 || string(c.Quantization) != `{"bits":4}` {
					t.Errorf("%+v", c)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		json string
		err  error
		text string
	}{
		{`{"architectures":["GPT2LMHeadModel"]}`, ErrUnsupported, "unsupported architecture GPT2LMHeadModel (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Phi3ForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM)"},
		{`{"model_type":"gemma"}`, ErrUnsupported, `model_type "gemma"`},
		{`{"architectures":["MixtralForCausalLM"],"num_local_experts":4,"num_experts_per_tok":5}`, ErrBadConfig, "num_experts_per_tok"},
		{`{"architectures":["LlamaForCausalLM"],"hidden_act":"gelu"}`, ErrUnsupported, "hidden_act"},
		{`{"architectures":["LlamaForCausalLM"],"rope_scaling":{"rope_type":"longrope","short_factor":[1]}}`, ErrUnsupported, "longrope"},
		{`{"architectures":["LlamaForCausalLM"],"rope_scaling":{"rope_type":"linear"}}`, ErrBadConfig, "needs a factor"},
		{`{"architectures":["LlamaForCausalLM"],"rope_scaling":{"rope_type":"llama3","factor":8.0}}`, ErrBadConfig, "llama3"},
		{`{"architectures":["LlamaForCausalLM"],"num_attention_heads":6,"num_key_value_heads":4}`, ErrBadConfig, "multiple of num_key_value_heads"},
		{`{"architectures":["LlamaForCausalLM"],"hidden_size":100,"num_attention_heads":8}`, ErrBadConfig, "head_dim"},
		{`{"architectures":["LlamaForCausalLM"],"partial_rotary_factor":0.5}`, ErrUnsupported, "partial_rotary_factor"},
		{`{"architectures":["LlamaForCausalLM"],"rope_theta":"big"}`, ErrBadConfig, ""},
		{`{"architectures":["LlamaForCausalLM"],"num_hidden_layers":0}`, ErrBadConfig, "positive"},
		{`not json`, ErrBadConfig, ""},
	}
	for _, c := range cases {
		_, err := ParseConfig([]byte(c.json))
		if !errors.Is(err, c.err) || !strings.Contains(fmtErr(err), c.text) {
			t.Errorf("%s: error %v, want %v containing %q", c.json, err, c.err, c.text)
		}
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestParseConfigErrorsMatchHFModel(t *testing.T) {
	cases := []struct {
		json string
		err  error
	}{
		{`{"architectures":["GPT2LMHeadModel"]}`, hfmodel.ErrUnsupportedArchitecture},
		{`{"architectures":["LlamaForCausalLM"],"num_hidden_layers":0}`, hfmodel.ErrBadConfig},
		{`{"architectures":["LlamaForCausalLM"],"rope_scaling":{"rope_type":"linear"}}`, hfmodel.ErrBadConfig},
	}
	for _, c := range cases {
		if _, err := ParseConfig([]byte(c.json)); !errors.Is(err, c.err) {
			t.Errorf("%s: error %v, want %v", c.json, err, c.err)
		}
	}
}
