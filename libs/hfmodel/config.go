// Package hfmodel reads a Hugging Face checkpoint directory: config.json (transformers-4 and
// transformers-5 styles), generation_config.json, the tokenizer files and the safetensors weights
// (single file or sharded). It presents the configuration the way llama.cpp's converter sees it,
// that is transformers' AutoConfig.to_dict() with the config class defaults filled in.
package hfmodel

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"quantfleet.dev/libs/fault"
)

// ErrUnsupportedArchitecture reports a checkpoint whose architecture quantfleet cannot convert.
var ErrUnsupportedArchitecture = fault.New(fault.ErrBadInput, "unsupported architecture")

// ErrBadConfig reports a config.json that is missing required fields or is malformed.
var ErrBadConfig = fault.New(fault.ErrBadInput, "bad config.json")

// MaxSize bounds every size of config.json: GGUF stores them as uint32 and llama.cpp computes
// with them as int32, so a larger value would be truncated there; products of two stay far
// from int64 overflow.
const MaxSize = math.MaxInt32

// MaxLayers bounds num_hidden_layers before the weights are looked at, because parsing
// allocates per layer; no model comes near it.
const MaxLayers = 1 << 16

// Architectures lists the supported `architectures[0]` values of config.json.
var Architectures = []string{"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
	"Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Phi3ForCausalLM",
	"MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"}

// modelTypes resolves config.json's model_type when it has no "architectures" entry.
var modelTypes = map[string]string{
	"llama":       "LlamaForCausalLM",
	"mistral":     "MistralForCausalLM",
	"qwen2":       "Qwen2ForCausalLM",
	"qwen3":       "Qwen3ForCausalLM",
	"gemma2":      "Gemma2ForCausalLM",
	"gemma3_text": "Gemma3ForCausalLM",
	"gemma3":      "Gemma3ForConditionalGeneration",
	"phi3":        "Phi3ForCausalLM",
	"mixtral":     "MixtralForCausalLM",
	"qwen2_moe":   "Qwen2MoeForCausalLM",
	"qwen3_moe":   "Qwen3MoeForCausalLM",
}

// archDefaults are the transformers 5 config-class defaults that AutoConfig fills in for keys a
// config.json leaves out. Keys whose default is derived from other keys are handled in ParseConfig.
var archDefaults = map[string]map[string]any{
	"LlamaForCausalLM": {
		"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
		"num_attention_heads": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
		"tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false,
	},
	"MistralForCausalLM": {
		"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
		"num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 4096 * 32,
		"rms_norm_eps": 1e-6, "tie_word_embeddings": false, "sliding_window": 4096,
	},
	"Qwen2ForCausalLM": {
		"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
		"num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 32768,
		"rms_norm_eps": 1e-6, "tie_word_embeddings": false,
	},
	"Qwen3ForCausalLM": {
		"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
		"num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "max_position_embeddings": 32768,
		"rms_norm_eps": 1e-6, "tie_word_embeddings": false, "attention_bias": false,
	},
	"Gemma2ForCausalLM": {
		"vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
		"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 8192,
		"rms_norm_eps": 1e-6, "tie_word_embeddings": true, "attention_bias": false, "query_pre_attn_scalar": 256,
		"sliding_window": 4096, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
		"hidden_activation": "gelu_pytorch_tanh",
	},
	"Gemma3ForCausalLM": gemma3Defaults,
	// The multimodal class: its text_config is merged into the top level before defaults apply.
	"Gemma3ForConditionalGeneration": gemma3Defaults,
	"Phi3ForCausalLM": {
		"vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
		"num_attention_heads": 32, "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
		"rms_norm_eps": 1e-5, "tie_word_embeddings": false, "partial_rotary_factor": 1.0,
	},
	"MixtralForCausalLM": {
		"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
		"num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 4096 * 32,
		"rms_norm_eps": 1e-5, "tie_word_embeddings": false, "num_experts_per_tok": 2, "num_local_experts": 8,
		"rope_theta": 1e6, // MixtralConfig.default_theta
	},
	"Qwen2MoeForCausalLM": {
		"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
		"num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 32768,
		"rms_norm_eps": 1e-6, "tie_word_embeddings": false, "decoder_sparse_step": 1,
		"moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4,
		"num_experts": 60, "norm_topk_prob": false, "qkv_bias": true,
	},
	"Qwen3MoeForCausalLM": {
		"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 24,
		"num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 32768,
		"rms_norm_eps": 1e-6, "tie_word_embeddings": false, "attention_bias": false, "decoder_sparse_step": 1,
		"moe_intermediate_size": 768, "num_experts_per_tok": 8, "num_experts": 128, "norm_topk_prob": false,
	},
}

// gemma3Defaults are Gemma3TextConfig's.
var gemma3Defaults = map[string]any{
	"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
	"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072,
	"rms_norm_eps": 1e-6, "tie_word_embeddings": true, "attention_bias": false, "query_pre_attn_scalar": 256,
	"sliding_window": 4096, "hidden_activation": "gelu_pytorch_tanh",
}

// headDimDerived marks the config classes that set head_dim = hidden_size / num_attention_heads when
// it is None: absent or null for Llama and Mistral, only an explicit null for Qwen3 (whose class
// default is 128). Qwen2Config has no head_dim at all.
// MixtralConfig keeps a null head_dim and Qwen3MoeConfig has none (both then use
// hidden_size/num_attention_heads, without a head_dim key for the converter).
var headDimDerived = map[string]bool{"LlamaForCausalLM": true, "MistralForCausalLM": true, "Qwen3ForCausalLM": true}

// Config is a parsed config.json with class defaults applied.
type Config struct {
	// Params is the whole configuration as a JSON object, defaults included, the way the converter's
	// hparams dict holds it. Numbers are json.Number so integers and floats keep their spelling.
	Params map[string]any

	Architecture          string
	ModelType             string
	HiddenSize            int
	IntermediateSize      int
	NumLayers             int
	NumHeads              int
	NumKVHeads            int
	HeadDim               int // 0 when the configuration has none (Qwen2)
	VocabSize             int
	MaxPositionEmbeddings int
	RMSNormEps            float64
	TieWordEmbeddings     bool
	TorchDtype            string // "bfloat16", "float16", "float32" or ""

	// Rope holds rope_parameters (transformers 5) or rope_scaling plus rope_theta (transformers 4),
	// merged the way the converter merges them: rope_theta, rope_type, factor, ...
	Rope map[string]any

	experts, expertsUsed, expertFF, sharedFF int // set by Dims for mixtures of experts
}

// ParseConfig parses config.json bytes.
func ParseConfig(data []byte) (*Config, error) {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	var params map[string]any
	if err := dec.Decode(&params); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if params == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadConfig)
	}
	if tc, ok := params["text_config"].(map[string]any); ok {
		for k, v := range tc {
			params[k] = v
		}
	}
	modelType, _ := params["model_type"].(string)
	var arch string
	if archs, _ := params["architectures"].([]any); len(archs) > 0 {
		arch, _ = archs[0].(string)
	} else if a, ok := modelTypes[modelType]; ok {
		// Hand-written configs may name only the model_type; resolve it to its causal-LM class.
		arch = a
	}
	defaults, ok := archDefaults[arch]
	if !ok {
		name := arch
		if arch == "" {
			name = fmt.Sprintf("with model_type %q", modelType)
		}
		return nil, fmt.Errorf("%w %s (supported: %s)", ErrUnsupportedArchitecture, name, strings.Join(Architectures, ", "))
	}
	// A class default fills an absent key only: an explicit null means what the class makes of
	// None (num_key_value_heads → num_attention_heads, head_dim → hidden_size/num_attention_heads).
	for k, v := range defaults {
		if _, present := params[k]; !present {
			params[k] = v
		}
	}
	c := &Config{Params: params, Architecture: arch}
	c.ModelType = modelType
	var err error
	intField := func(key string, dst *int) {
		if err != nil {
			return
		}
		var v int64
		v, ok, e := c.Int(key)
		switch {
		case e != nil:
			err = e
		case !ok:
			err = fmt.Errorf("%w: %q is missing", ErrBadConfig, key)
		case v <= 0:
			err = fmt.Errorf("%w: %q must be positive, got %d", ErrBadConfig, key, v)
		case v > MaxSize:
			err = fmt.Errorf("%w: %q = %d does not fit a GGUF uint32 field (at most %d)", ErrBadConfig, key, v, MaxSize)
		default:
			*dst = int(v)
		}
	}
	intField("hidden_size", &c.HiddenSize)
	intField("intermediate_size", &c.IntermediateSize)
	intField("num_hidden_layers", &c.NumLayers)
	intField("num_attention_heads", &c.NumHeads)
	intField("vocab_size", &c.VocabSize)
	intField("max_position_embeddings", &c.MaxPositionEmbeddings)
	if err != nil {
		return nil, err
	}
	if c.NumLayers > MaxLayers {
		return nil, fmt.Errorf("%w: \"num_hidden_layers\" = %d exceeds %d", ErrBadConfig, c.NumLayers, MaxLayers)
	}
	if params["num_key_value_heads"] == nil {
		params["num_key_value_heads"] = json.Number(fmt.Sprint(c.NumHeads))
	}
	intField("num_key_value_heads", &c.NumKVHeads)
	if err != nil {
		return nil, err
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return nil, fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", ErrBadConfig, c.NumHeads, c.NumKVHeads)
	}
	if params["head_dim"] == nil && headDimDerived[arch] {
		if c.HiddenSize%c.NumHeads != 0 {
			return nil, fmt.Errorf("%w: hidden_size %d is not a multiple of num_attention_heads %d and head_dim is not set", ErrBadConfig, c.HiddenSize, c.NumHeads)
		}
		params["head_dim"] = json.Number(fmt.Sprint(c.HiddenSize / c.NumHeads))
	}
	if params["head_dim"] != nil {
		intField("head_dim", &c.HeadDim)
	}
	if err != nil {
		return nil, err
	}
	if c.RMSNormEps, _, err = c.Float("rms_norm_eps"); err != nil {
		return nil, err
	}
	c.TieWordEmbeddings, _ = params["tie_word_embeddings"].(bool)
	if s, ok := params["dtype"].(string); ok {
		c.TorchDtype = s
	} else if s, ok := params["torch_dtype"].(string); ok {
		c.TorchDtype = s
	}
	c.Rope = ropeParameters(params)
	return c, nil
}

// ropeParameters merges rope_parameters / rope_scaling / rope_theta like TextModel.__init__ of
// llama.cpp's converter, with transformers' default theta of 10000.
func ropeParameters(params map[string]any) map[string]any {
	rope := map[string]any{}
	src, _ := params["rope_parameters"].(map[string]any)
	if src == nil {
		src, _ = params["rope_scaling"].(map[string]any)
	}
	for k, v := range src {
		rope[k] = v
	}
	_, full := rope["full_attention"]
	_, sliding := rope["sliding_attention"]
	if full || sliding {
		return rope
	}
	// Per-layer-type bases (Gemma 3's local layers) and the partial/original sizes are mirrored
	// into the rope parameters as the converter does.
	if v, ok := params["rope_local_base_freq"]; ok && v != nil {
		rope["sliding_attention"] = map[string]any{"rope_theta": v}
	}
	for _, k := range []string{"partial_rotary_factor", "original_max_position_embeddings"} {
		if _, ok := rope[k]; !ok {
			if v, ok := params[k]; ok && v != nil {
				rope[k] = v
			}
		}
	}
	if _, ok := rope["rope_theta"]; !ok {
		if v, ok := params["rope_theta"]; ok && v != nil {
			rope["rope_theta"] = v
		} else {
			rope["rope_theta"] = json.Number("10000.0")
		}
	}
	if _, ok := rope["rope_type"]; !ok {
		if t, ok := rope["type"]; ok {
			rope["rope_type"] = t
		} else {
			rope["rope_type"] = "default"
		}
	}
	return rope
}

// Int returns an integer parameter; ok is false when the key is absent or null.
func (c *Config) Int(key string) (v int64, ok bool, err error) {
	return asInt(c.Params, key)
}

// Float returns a float parameter; ok is false when the key is absent or null.
func (c *Config) Float(key string) (v float64, ok bool, err error) {
	return asFloat(c.Params, key)
}

// Has reports whether key is present with a non-null value.
func (c *Config) Has(key string) bool { return c.Params[key] != nil }

func asInt(m map[string]any, key string) (int64, bool, error) {
	switch v := m[key].(type) {
	case nil:
		return 0, false, nil
	case json.Number:
		i, err := v.Int64()
		if err != nil {
			return 0, false, fmt.Errorf("%w: %q must be an integer, got %s", ErrBadConfig, key, v)
		}
		return i, true, nil
	case int:
		return int64(v), true, nil
	default:
		return 0, false, fmt.Errorf("%w: %q must be an integer, got %v", ErrBadConfig, key, v)
	}
}

func asFloat(m map[string]any, key string) (float64, bool, error) {
	switch v := m[key].(type) {
	case nil:
		return 0, false, nil
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return 0, false, fmt.Errorf("%w: %q must be a number, got %s", ErrBadConfig, key, v)
		}
		return f, true, nil
	case float64:
		return v, true, nil
	case int:
		return float64(v), true, nil
	default:
		return 0, false, fmt.Errorf("%w: %q must be a number, got %v", ErrBadConfig, key, v)
	}
}

// RopeFloat returns a float field of the merged rope parameters.
func (c *Config) RopeFloat(key string) (float64, bool) {
	f, ok, err := asFloat(c.Rope, key)
	return f, ok && err == nil
}

// RopeType returns the rope type ("default", "linear", "yarn", "llama3", ...).
func (c *Config) RopeType() string {
	s, _ := c.Rope["rope_type"].(string)
	return s
}

// RopeDim is the number of rotated dimensions per head: head_dim, or hidden_size/num_heads.
func (c *Config) RopeDim() int {
	if c.HeadDim > 0 {
		return c.HeadDim
	}
	return c.HiddenSize / c.NumHeads
}
