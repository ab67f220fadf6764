// Package synth writes small synthetic Hugging Face checkpoints (random weights from a fixed
// seed, real tokenizers) of the architectures quantfleet converts. llama.cpp's converter was run
// on exactly these checkpoints to produce the reference dumps in libs/convert/testdata/converter,
// so the generator must stay byte-for-byte stable: changing it invalidates those dumps.
package synth

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/x448/float16"

	"quantfleet.dev/libs/safetensors"
)

// Assets are the tokenizer files the checkpoints borrow.
type Assets struct {
	// GPT2TokenizerJSON is GPT-2's tokenizer.json (libs/tokenizer/testdata/gpt2).
	GPT2TokenizerJSON []byte
	// TinyLlama maps tiny-llama's tokenizer.model, tokenizer.json and tokenizer_config.json to
	// their contents (shared/models/tiny-llama).
	TinyLlama map[string][]byte
	// Qwen3 maps the real Qwen 3 tokenizer.json and tokenizer_config.json to their contents
	// (shared/tokenizers/qwen3, tokenizer.json gunzipped); nil when not loaded.
	Qwen3 map[string][]byte
}

// tokenizer kinds.
const (
	tokGPT2     = "gpt2"      // GPT-2 BPE, tokenizer.json only
	tokGPT2Chat = "gpt2-chat" // GPT-2 BPE plus added tokens, padding and a chat template
	tokSP       = "sp"        // tiny-llama's SentencePiece tokenizer.model (+ tokenizer.json)
	tokLlamaHF  = "llama-hf"  // tiny-llama's tokenizer.json without tokenizer.model
	tokQwen3    = "qwen3"     // the real Qwen 3 tokenizer (shared/tokenizers/qwen3)
)

// spec describes one checkpoint.
type spec struct {
	name      string
	arch      string
	modelType string
	dtype     safetensors.DType
	hidden    int
	layers    int
	heads     int
	kvHeads   int
	headDim   int // 0: hidden/heads
	inter     int
	vocab     int
	qkvBias   bool // q/k/v biases (Qwen2)
	attnBias  bool // q/k/v/o biases (Llama attention_bias)
	qkNorm    bool // Qwen3 q_norm/k_norm
	tied      bool
	// layout selects the block layout beyond Llama's: "gemma", "phi3", "mixtral", "qwenmoe".
	layout   string
	experts  int // routed experts per block
	expertFF int // rows of an expert's gate/up projection
	sharedFF int // Qwen2-MoE shared expert rows
	// prefix is the language model's module path in a multimodal checkpoint ("model.language_model."
	// instead of "model."); extra lists tower tensors the text conversion leaves out.
	prefix string
	extra  []extraTensor
	// textConfig, when set, nests the shape keys and these keys under config.json's
	// "text_config" (multimodal checkpoints).
	textConfig map[string]any
	shards     int
	tokenizer  string
	seed       uint64
	// config holds the config.json keys beyond the shape keys.
	config map[string]any
	// files are extra files written verbatim.
	files map[string]string
}

func num(s string) json.Number { return json.Number(s) }

var specs = []spec{
	{
		// SentencePiece, not GPT-2's BPE: transformers 5 rebuilds any tokenizer.json of a qwen2
		// model as Qwen2Tokenizer, whose check-string hash the converter does not know.
		name: "Qwen2-Synth-Instruct", arch: "Qwen2ForCausalLM", modelType: "qwen2", dtype: safetensors.BF16,
		hidden: 256, layers: 2, heads: 4, kvHeads: 2, inter: 512, vocab: 8256,
		qkvBias: true, tied: true, tokenizer: tokSP, seed: 1,
		config: map[string]any{
			"attention_dropout": num("0.0"), "bos_token_id": 1, "eos_token_id": 2,
			"hidden_act": "silu", "initializer_range": num("0.02"), "max_position_embeddings": 32768,
			"max_window_layers": 2, "rms_norm_eps": num("1e-06"), "rope_scaling": nil,
			"rope_theta": num("1000000.0"), "sliding_window": 32768, "torch_dtype": "bfloat16",
			"transformers_version": "4.43.1", "use_cache": true, "use_sliding_window": false,
		},
		files: map[string]string{
			"generation_config.json": `{
  "bos_token_id": 1,
  "do_sample": true,
  "eos_token_id": [
    2
  ],
  "min_p": 0.0,
  "repetition_penalty": 1.05,
  "temperature": 0.7,
  "top_k": 20,
  "top_p": 0.8,
  "transformers_version": "4.43.1"
}
`,
		},
	},
	{
		name: "Qwen3-Synth-v1.5-Chat", arch: "Qwen3ForCausalLM", modelType: "qwen3", dtype: safetensors.BF16,
		hidden: 256, layers: 2, heads: 8, kvHeads: 2, headDim: 64, inter: 512, vocab: 50304,
		qkNorm: true, tokenizer: tokGPT2Chat, seed: 2,
		config: map[string]any{
			"attention_bias": false, "attention_dropout": num("0.0"), "bos_token_id": 50256,
			"eos_token_id": 50258, "hidden_act": "silu", "initializer_range": num("0.02"),
			"max_position_embeddings": 32768, "max_window_layers": 2, "rms_norm_eps": num("1e-06"),
			"rope_scaling": map[string]any{"rope_type": "yarn", "factor": num("4.0"), "original_max_position_embeddings": 8192},
			"rope_theta":   num("1000000.0"), "sliding_window": nil, "torch_dtype": "bfloat16",
			"transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false,
		},
		files: map[string]string{
			"README.md": `---
license: apache-2.0
language:
- en
- "no"
pipeline_tag: text-generation
base_model:
- Qwen/Qwen3-0.6B
tags:
- synthetic
- test
datasets:
- HuggingFaceFW/fineweb
---

# Qwen3 synthetic

Random weights for converter tests.
`,
			"generation_config.json": `{"do_sample": true, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "eos_token_id": [50258, 50256]}
`,
		},
	},
	{
		name: "mistral-synth", arch: "MistralForCausalLM", modelType: "mistral", dtype: safetensors.BF16,
		hidden: 256, layers: 2, heads: 8, kvHeads: 2, inter: 512, vocab: 8192,
		tokenizer: tokSP, seed: 3,
		config: map[string]any{
			"attention_dropout": num("0.0"), "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
			"initializer_range": num("0.02"), "max_position_embeddings": 32768, "rms_norm_eps": num("1e-05"),
			"rope_theta": num("1000000.0"), "sliding_window": 4096, "tie_word_embeddings": false,
			"torch_dtype": "bfloat16", "transformers_version": "4.42.0", "use_cache": true,
		},
	},
	{
		name: "llama-synth-linear-f16", arch: "LlamaForCausalLM", modelType: "llama", dtype: safetensors.F16,
		hidden: 256, layers: 2, heads: 4, inter: 512, vocab: 8192,
		attnBias: true, tokenizer: tokLlamaHF, seed: 4,
		config: map[string]any{
			"attention_bias": true, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
			"max_position_embeddings": 4096, "rms_norm_eps": num("1e-05"),
			"rope_scaling": map[string]any{"type": "linear", "factor": num("2.0")},
			"rope_theta":   num("500000.0"), "tie_word_embeddings": false, "torch_dtype": "float16",
			"transformers_version": "4.40.0",
		},
	},
	{
		name: "llama-synth-3.2-f32", arch: "LlamaForCausalLM", modelType: "llama", dtype: safetensors.F32,
		hidden: 256, layers: 2, heads: 4, kvHeads: 2, headDim: 64, inter: 512, vocab: 50257,
		tied: true, tokenizer: tokGPT2, seed: 5,
		config: map[string]any{
			"attention_bias": false, "bos_token_id": 50256, "eos_token_id": []any{50256}, "hidden_act": "silu",
			"max_position_embeddings": 131072, "mlp_bias": false, "rms_norm_eps": num("1e-05"),
			"rope_parameters": map[string]any{
				"factor": num("32.0"), "high_freq_factor": num("4.0"), "low_freq_factor": num("1.0"),
				"original_max_position_embeddings": 8192, "rope_theta": num("500000.0"), "rope_type": "llama3",
			},
			"dtype": "float32", "transformers_version": "5.17.0",
		},
	},
	{
		name: "llama-synth-sharded", arch: "LlamaForCausalLM", modelType: "llama", dtype: safetensors.BF16,
		hidden: 256, layers: 4, heads: 4, kvHeads: 1, headDim: 64, inter: 512, vocab: 8192,
		shards: 2, tokenizer: tokSP, seed: 6,
		config: map[string]any{
			"attention_bias": false, "attention_dropout": num("0.0"), "bos_token_id": 1, "eos_token_id": 2,
			"hidden_act": "silu", "initializer_range": num("0.02"), "max_position_embeddings": 2048,
			"mlp_bias": false, "pad_token_id": nil, "pretraining_tp": 1, "rms_norm_eps": num("1e-05"),
			"rope_parameters":     map[string]any{"rope_theta": num("10000.0"), "rope_type": "default"},
			"tie_word_embeddings": false, "dtype": "bfloat16", "transformers_version": "5.17.0", "use_cache": true,
		},
	},
}

// longFactors are LongRoPE factors for 32 rotated pairs.
func longFactors(base, step float64) []any {
	out := make([]any, 32)
	for i := range out {
		out[i] = json.Number(fmt.Sprintf("%.4f", base+step*float64(i)))
	}
	return out
}

func init() {
	specs = append(specs, moreSpecs...)
}

// moreSpecs are the architectures added with issue 13 (converter fixtures made by
// scripts/reference/arch_fixtures.py).
var moreSpecs = []spec{
	{
		// query_pre_attn_scalar differs from head_dim (as in Gemma 2 27B) so that the scaling is tested.
		name: "gemma-2-synth-it", arch: "Gemma2ForCausalLM", modelType: "gemma2", dtype: safetensors.BF16,
		hidden: 256, layers: 4, heads: 4, kvHeads: 2, headDim: 64, inter: 512, vocab: 8192,
		tied: true, layout: "gemma", tokenizer: tokSP, seed: 11,
		config: map[string]any{
			"attention_bias": false, "attention_dropout": num("0.0"), "attn_logit_softcapping": num("50.0"),
			"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "final_logit_softcapping": num("30.0"),
			"hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "initializer_range": num("0.02"),
			"max_position_embeddings": 8192, "query_pre_attn_scalar": 48, "rms_norm_eps": num("1e-06"),
			"rope_parameters": map[string]any{"rope_theta": num("10000.0"), "rope_type": "default"},
			"sliding_window":  16, "dtype": "bfloat16", "transformers_version": "5.17.0", "use_cache": true,
		},
	},
	{
		name: "gemma-3-synth-it", arch: "Gemma3ForCausalLM", modelType: "gemma3_text", dtype: safetensors.BF16,
		hidden: 256, layers: 6, heads: 4, kvHeads: 1, headDim: 64, inter: 512, vocab: 8192,
		qkNorm: true, tied: true, layout: "gemma", tokenizer: tokSP, seed: 12,
		config: map[string]any{
			"attention_bias": false, "attention_dropout": num("0.0"), "attn_logit_softcapping": nil,
			"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "final_logit_softcapping": nil,
			"hidden_activation": "gelu_pytorch_tanh", "initializer_range": num("0.02"),
			"layer_types":             []any{"sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"},
			"max_position_embeddings": 32768, "query_pre_attn_scalar": 32, "rms_norm_eps": num("1e-06"),
			"rope_parameters": map[string]any{
				"full_attention":    map[string]any{"rope_theta": num("1000000.0"), "rope_type": "default"},
				"sliding_attention": map[string]any{"rope_theta": num("10000.0"), "rope_type": "default"},
			},
			"sliding_window": 16, "dtype": "bfloat16", "transformers_version": "5.17.0", "use_cache": true,
		},
	},
	{
		// The text part of a multimodal checkpoint: transformers 5 module paths, a vision tower and
		// projector the text GGUF leaves out, text_config nested.
		name: "gemma-3-synth-mm", arch: "Gemma3ForConditionalGeneration", modelType: "gemma3", dtype: safetensors.BF16,
		hidden: 256, layers: 2, heads: 4, kvHeads: 2, headDim: 64, inter: 512, vocab: 8192,
		qkNorm: true, tied: true, layout: "gemma", tokenizer: tokSP, seed: 13, prefix: "model.language_model.",
		extra: []extraTensor{
			{"model.multi_modal_projector.mm_input_projection_weight", 64, 256},
			{"model.multi_modal_projector.mm_soft_emb_norm.weight", 64, 0},
			{"model.vision_tower.vision_model.embeddings.position_embedding.weight", 16, 64},
			{"model.vision_tower.vision_model.post_layernorm.bias", 64, 0},
			{"model.vision_tower.vision_model.post_layernorm.weight", 64, 0},
		},
		textConfig: map[string]any{
			"model_type": "gemma3_text", "attention_bias": false, "final_logit_softcapping": nil,
			"attn_logit_softcapping": nil, "hidden_activation": "gelu_pytorch_tanh",
			"layer_types":             []any{"sliding_attention", "full_attention"},
			"max_position_embeddings": 32768, "query_pre_attn_scalar": 64, "rms_norm_eps": num("1e-06"),
			"rope_parameters": map[string]any{
				"full_attention":    map[string]any{"rope_theta": num("1000000.0"), "rope_type": "default"},
				"sliding_attention": map[string]any{"rope_theta": num("10000.0"), "rope_type": "default"},
			},
			"sliding_window": 16,
		},
		config: map[string]any{
			"boi_token_index": 5, "eoi_token_index": 6, "image_token_index": 7, "mm_tokens_per_image": 4,
			"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "dtype": "bfloat16", "transformers_version": "5.17.0",
			"vision_config": map[string]any{
				"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
				"num_hidden_layers": 0, "num_attention_heads": 2, "image_size": 64, "patch_size": 16,
			},
		},
	},
	{
		name: "Phi-3-synth-128k-instruct", arch: "Phi3ForCausalLM", modelType: "phi3", dtype: safetensors.BF16,
		hidden: 256, layers: 2, heads: 4, kvHeads: 2, inter: 512, vocab: 8192,
		layout: "phi3", tokenizer: tokSP, seed: 14,
		config: map[string]any{
			"attention_bias": false, "attention_dropout": num("0.0"), "bos_token_id": 1, "eos_token_id": 2,
			"hidden_act": "silu", "initializer_range": num("0.02"), "max_position_embeddings": 131072,
			"original_max_position_embeddings": 4096, "rms_norm_eps": num("1e-05"),
			"rope_scaling": map[string]any{"type": "longrope", "long_factor": longFactors(1.0, 0.25), "short_factor": longFactors(1.0, 0.01)},
			"rope_theta":   num("10000.0"), "sliding_window": 262144, "tie_word_embeddings": false,
			"torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": true,
		},
	},
	{
		// Phi-3-mini's shape: as many key/value heads as query heads, so that AWQ scales
		// o_proj against the value rows of the fused qkv_proj; no LongRoPE (the 4k models).
		name: "Phi-3-mini-synth-4k-instruct", arch: "Phi3ForCausalLM", modelType: "phi3", dtype: safetensors.BF16,
		hidden: 256, layers: 2, heads: 4, kvHeads: 4, inter: 512, vocab: 8192,
		layout: "phi3", tokenizer: tokSP, seed: 18,
		config: map[string]any{
			"attention_bias": false, "attention_dropout": num("0.0"), "bos_token_id": 1, "eos_token_id": 2,
			"hidden_act": "silu", "initializer_range": num("0.02"), "max_position_embeddings": 4096,
			"original_max_position_embeddings": 4096, "rms_norm_eps": num("1e-05"), "rope_scaling": nil,
			"rope_theta": num("10000.0"), "sliding_window": 2047, "tie_word_embeddings": false,
			"torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": true,
		},
	},
	{
		// Eight experts: llama-quantize's n_expert == 8 rules apply.
		name: "Mixtral-synth-8x", arch: "MixtralForCausalLM", modelType: "mixtral", dtype: safetensors.BF16,
		hidden: 256, layers: 2, heads: 8, kvHeads: 2, inter: 256, vocab: 8192,
		layout: "mixtral", experts: 8, expertFF: 256, tokenizer: tokSP, seed: 15,
		config: map[string]any{
			"attention_dropout": num("0.0"), "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
			"initializer_range": num("0.02"), "max_position_embeddings": 32768, "num_experts_per_tok": 2,
			"num_local_experts": 8, "output_router_logits": false, "rms_norm_eps": num("1e-05"),
			"rope_theta": num("1000000.0"), "router_aux_loss_coef": num("0.02"), "sliding_window": nil,
			"tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.36.0", "use_cache": true,
		},
	},
	{
		name: "Qwen3-MoE-synth", arch: "Qwen3MoeForCausalLM", modelType: "qwen3_moe", dtype: safetensors.BF16,
		hidden: 256, layers: 2, heads: 8, kvHeads: 2, headDim: 64, inter: 512, vocab: 50304,
		qkNorm: true, layout: "qwenmoe", experts: 16, expertFF: 256, tokenizer: tokGPT2Chat, seed: 16,
		config: map[string]any{
			"attention_bias": false, "attention_dropout": num("0.0"), "bos_token_id": 50256, "eos_token_id": 50258,
			"decoder_sparse_step": 1, "hidden_act": "silu", "initializer_range": num("0.02"),
			"max_position_embeddings": 40960, "max_window_layers": 2, "mlp_only_layers": []any{},
			"moe_intermediate_size": 256, "norm_topk_prob": true, "num_experts": 16, "num_experts_per_tok": 4,
			"output_router_logits": false, "rms_norm_eps": num("1e-06"), "rope_scaling": nil,
			"rope_theta": num("1000000.0"), "router_aux_loss_coef": num("0.001"), "sliding_window": nil,
			"tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
			"use_cache": true, "use_sliding_window": false,
		},
	},
	{
		// The real Qwen 3 tokenizer (known to the converter as "qwen2"): also the GGUF tokenizer
		// regression for it. Small hidden size keeps the 151936-row embeddings small.
		name: "Qwen1.5-MoE-synth", arch: "Qwen2MoeForCausalLM", modelType: "qwen2_moe", dtype: safetensors.BF16,
		hidden: 64, layers: 2, heads: 4, kvHeads: 4, inter: 128, vocab: 151936,
		qkvBias: true, layout: "qwenmoe", experts: 4, expertFF: 64, sharedFF: 128, tokenizer: tokQwen3, seed: 17,
		config: map[string]any{
			"attention_dropout": num("0.0"), "bos_token_id": 151643, "eos_token_id": 151645,
			"decoder_sparse_step": 1, "hidden_act": "silu", "initializer_range": num("0.02"),
			"max_position_embeddings": 8192, "max_window_layers": 2, "mlp_only_layers": []any{},
			"moe_intermediate_size": 64, "norm_topk_prob": false, "num_experts": 4, "num_experts_per_tok": 2,
			"output_router_logits": false, "qkv_bias": true, "rms_norm_eps": num("1e-06"), "rope_theta": num("1000000.0"),
			"router_aux_loss_coef": num("0.001"), "shared_expert_intermediate_size": 128, "sliding_window": nil,
			"tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.40.0",
			"use_cache": true, "use_sliding_window": false,
		},
	},
}

// Names lists the checkpoints, in a fixed order.
func Names() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.name
	}
	return out
}

// Write writes the checkpoint called name into parent/name and returns that directory.
func Write(parent, name string, a Assets) (string, error) {
	var s *spec
	for i := range specs {
		if specs[i].name == name {
			s = &specs[i]
		}
	}
	if s == nil {
		return "", fmt.Errorf("synth: no checkpoint %q", name)
	}
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	files, err := s.tokenizerFiles(a)
	if err != nil {
		return "", err
	}
	cfg, err := s.configJSON()
	if err != nil {
		return "", err
	}
	files["config.json"] = cfg
	for k, v := range s.files {
		files[k] = []byte(v)
	}
	for fn, b := range files {
		if err := os.WriteFile(filepath.Join(dir, fn), b, 0o644); err != nil {
			return "", err
		}
	}
	if err := s.writeWeights(dir); err != nil {
		return "", err
	}
	return dir, nil
}

func (s *spec) headDimOrDefault() int {
	if s.headDim > 0 {
		return s.headDim
	}
	return s.hidden / s.heads
}

func (s *spec) configJSON() ([]byte, error) {
	c := map[string]any{
		"architectures": []string{s.arch}, "model_type": s.modelType,
		"hidden_size": s.hidden, "intermediate_size": s.inter, "num_hidden_layers": s.layers,
		"num_attention_heads": s.heads, "vocab_size": s.vocab, "tie_word_embeddings": s.tied,
	}
	if s.kvHeads > 0 {
		c["num_key_value_heads"] = s.kvHeads
	}
	if s.headDim > 0 {
		c["head_dim"] = s.headDim
	}
	if s.textConfig != nil {
		text := map[string]any{}
		for k, v := range c {
			if k != "architectures" && k != "model_type" {
				text[k] = v
				delete(c, k)
			}
		}
		for k, v := range s.textConfig {
			text[k] = v
		}
		c["text_config"] = text
	}
	for k, v := range s.config {
		c[k] = v
	}
	return marshal(c, true) // sorted keys, as save_pretrained writes them
}

// marshal is json.Marshal without HTML escaping ("<|im_end|>" stays as it is), with a final
// newline when indented.
func marshal(v any, indent bool) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if indent {
		return buf.Bytes(), nil
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (s *spec) tokenizerFiles(a Assets) (map[string][]byte, error) {
	files := map[string][]byte{}
	switch s.tokenizer {
	case tokGPT2, tokGPT2Chat:
		if len(a.GPT2TokenizerJSON) == 0 {
			return nil, fmt.Errorf("synth: %s needs GPT-2's tokenizer.json", s.name)
		}
		tj := a.GPT2TokenizerJSON
		// PreTrainedTokenizerFast: transformers 5 then uses tokenizer.json as it is for llama and
		// qwen3 models instead of rebuilding the model type's tokenizer (it always rebuilds for qwen2).
		tc := map[string]any{
			"add_prefix_space": false, "bos_token": "<|endoftext|>", "clean_up_tokenization_spaces": false,
			"eos_token": "<|endoftext|>", "model_max_length": 1024, "tokenizer_class": "PreTrainedTokenizerFast",
			"unk_token": "<|endoftext|>",
		}
		if s.tokenizer == tokGPT2Chat {
			var err error
			if tj, err = addTokens(tj, chatTokens); err != nil {
				return nil, err
			}
			dec := map[string]any{}
			dec["50256"] = addedDecoder("<|endoftext|>", true, true)
			for _, t := range chatTokens {
				dec[fmt.Sprint(t.ID)] = addedDecoder(t.Content, t.Normalized, t.Special)
			}
			tc["added_tokens_decoder"] = dec
			tc["eos_token"] = "<|im_end|>"
			tc["pad_token"] = "<|endoftext|>"
			tc["add_bos_token"] = false
			tc["chat_template"] = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
			delete(tc, "add_prefix_space")
		}
		b, err := marshal(tc, true)
		if err != nil {
			return nil, err
		}
		files["tokenizer.json"] = tj
		files["tokenizer_config.json"] = b
	case tokSP, tokLlamaHF:
		names := []string{"tokenizer.model", "tokenizer.json", "tokenizer_config.json"}
		if s.tokenizer == tokLlamaHF {
			names = names[1:]
		}
		for _, n := range names {
			b, ok := a.TinyLlama[n]
			if !ok {
				return nil, fmt.Errorf("synth: %s needs tiny-llama's %s", s.name, n)
			}
			files[n] = b
		}
	case tokQwen3:
		for _, n := range []string{"tokenizer.json", "tokenizer_config.json"} {
			b, ok := a.Qwen3[n]
			if !ok {
				return nil, fmt.Errorf("synth: %s needs the Qwen 3 %s (shared/tokenizers/qwen3)", s.name, n)
			}
			files[n] = b
		}
	default:
		return nil, fmt.Errorf("synth: unknown tokenizer kind %q", s.tokenizer)
	}
	return files, nil
}

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	Lstrip     bool   `json:"lstrip"`
	Rstrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// chatTokens are added after GPT-2's 50257 tokens: Qwen-style control tokens, a non-special
// token and one whose "▁" the converter turns into a space.
var chatTokens = []addedToken{
	{ID: 50257, Content: "<|im_start|>", Special: true},
	{ID: 50258, Content: "<|im_end|>", Special: true},
	{ID: 50259, Content: "<think>"},
	{ID: 50260, Content: "tool▁call", Normalized: true},
}

func addedDecoder(content string, normalized, special bool) map[string]any {
	return map[string]any{"content": content, "lstrip": false, "normalized": normalized, "rstrip": false,
		"single_word": false, "special": special}
}

// addTokens appends to the "added_tokens" list of a tokenizer.json.
func addTokens(tj []byte, add []addedToken) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(tj, &doc); err != nil {
		return nil, fmt.Errorf("synth: tokenizer.json: %w", err)
	}
	var added []json.RawMessage
	if err := json.Unmarshal(doc["added_tokens"], &added); err != nil {
		return nil, fmt.Errorf("synth: tokenizer.json added_tokens: %w", err)
	}
	for _, t := range add {
		b, err := marshal(t, false)
		if err != nil {
			return nil, err
		}
		added = append(added, b)
	}
	b, err := marshal(added, false)
	if err != nil {
		return nil, err
	}
	doc["added_tokens"] = b
	return marshal(doc, false)
}

// tensor is one checkpoint tensor before encoding.
type tensor struct {
	name  string
	shape []int64
	data  []float32
}

// tensors generates the weights, in the order of the Hugging Face module tree.
func (s *spec) tensors() []tensor {
	rng := rand.New(rand.NewPCG(s.seed, 0x5eed))
	hd := s.headDimOrDefault()
	var out []tensor
	matrix := func(name string, rows, cols int) {
		v := make([]float32, rows*cols)
		scale := 1 / math.Sqrt(float64(cols))
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		sprinkle(v, s.dtype)
		out = append(out, tensor{name, []int64{int64(rows), int64(cols)}, v})
	}
	vector := func(name string, n int, center float64) {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(center + 0.1*rng.NormFloat64())
		}
		out = append(out, tensor{name, []int64{int64(n)}, v})
	}
	kv := s.kvHeads
	if kv == 0 {
		kv = s.heads
	}
	if s.layout != "" {
		s.moreTensors(matrix, vector, kv, hd)
		return out
	}
	matrix("model.embed_tokens.weight", s.vocab, s.hidden)
	for l := 0; l < s.layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		vector(p+"input_layernorm.weight", s.hidden, 1)
		matrix(p+"self_attn.q_proj.weight", s.heads*hd, s.hidden)
		matrix(p+"self_attn.k_proj.weight", kv*hd, s.hidden)
		matrix(p+"self_attn.v_proj.weight", kv*hd, s.hidden)
		if s.qkvBias || s.attnBias {
			vector(p+"self_attn.q_proj.bias", s.heads*hd, 0)
			vector(p+"self_attn.k_proj.bias", kv*hd, 0)
			vector(p+"self_attn.v_proj.bias", kv*hd, 0)
		}
		matrix(p+"self_attn.o_proj.weight", s.hidden, s.heads*hd)
		if s.attnBias {
			vector(p+"self_attn.o_proj.bias", s.hidden, 0)
		}
		if s.qkNorm {
			vector(p+"self_attn.q_norm.weight", hd, 1)
			vector(p+"self_attn.k_norm.weight", hd, 1)
		}
		vector(p+"post_attention_layernorm.weight", s.hidden, 1)
		matrix(p+"mlp.gate_proj.weight", s.inter, s.hidden)
		matrix(p+"mlp.up_proj.weight", s.inter, s.hidden)
		matrix(p+"mlp.down_proj.weight", s.hidden, s.inter)
	}
	vector("model.norm.weight", s.hidden, 1)
	if !s.tied {
		matrix("lm_head.weight", s.vocab, s.hidden)
	}
	return out
}

// sprinkle places values that probe float16 rounding: ties, subnormals, underflow, and for
// float32 sources the largest finite values. (Values that overflow float16 are left out: the
// converter writes infinities, quantfleet refuses them.)
func sprinkle(v []float32, dt safetensors.DType) {
	special := []float32{
		float32(math.Ldexp(1, -25)), float32(math.Ldexp(3, -26)), float32(math.Ldexp(1, -24)), // f16 subnormal ties
		float32(math.Ldexp(1, -14)) * 0.999, 1e-10, // just below the smallest normal, underflow
		1 + float32(math.Ldexp(1, -11)), 1 + float32(math.Ldexp(3, -11)), // ties to even
		1 + float32(math.Ldexp(3, -8)), // a bfloat16 tie
		float32(math.Copysign(0, -1)),
	}
	if dt == safetensors.F32 {
		special = append(special, 65504, -65519) // f16 max; rounds down to it
	}
	for i, x := range special {
		if j := (i + 1) * 4099; j < len(v) {
			v[j] = x
		}
	}
}

// encode writes float32 values in the given dtype (round to nearest even).
func encode(dt safetensors.DType, v []float32) []byte {
	switch dt {
	case safetensors.F32:
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	case safetensors.F16:
		b := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], float16.Fromfloat32(x).Bits())
		}
		return b
	case safetensors.BF16:
		b := make([]byte, 2*len(v))
		for i, x := range v {
			u := math.Float32bits(x)
			u += 0x7fff + (u>>16)&1
			binary.LittleEndian.PutUint16(b[2*i:], uint16(u>>16))
		}
		return b
	}
	panic("synth: dtype " + string(dt))
}

func (s *spec) writeWeights(dir string) error {
	ts := s.tensors()
	meta := map[string]string{"format": "pt"}
	if s.shards <= 1 {
		return safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), s.writeList(ts), meta)
	}
	// Blocks split evenly over the shards; embeddings in the first, the head in the last.
	weightMap := map[string]string{}
	var total int64
	for k := 0; k < s.shards; k++ {
		file := fmt.Sprintf("model-%05d-of-%05d.safetensors", k+1, s.shards)
		var part []tensor
		for _, t := range ts {
			if shardOf(t.name, s.layers, s.shards) == k {
				part = append(part, t)
				weightMap[t.name] = file
			}
		}
		wl := s.writeList(part)
		for _, w := range wl {
			total += int64(len(w.Data))
		}
		if err := safetensors.WriteFile(filepath.Join(dir, file), wl, meta); err != nil {
			return err
		}
	}
	index := map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}
	b, err := marshal(index, true)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b, 0o644)
}

func (s *spec) writeList(ts []tensor) []safetensors.WriteTensor {
	out := make([]safetensors.WriteTensor, len(ts))
	for i, t := range ts {
		out[i] = safetensors.WriteTensor{Name: t.name, DType: s.dtype, Shape: t.shape, Data: encode(s.dtype, t.data)}
	}
	return out
}

func shardOf(name string, layers, shards int) int {
	var l int
	if _, err := fmt.Sscanf(name, "model.layers.%d.", &l); err == nil {
		return l * shards / layers
	}
	if name == "model.embed_tokens.weight" {
		return 0
	}
	return shards - 1
}

// LoadQwen3 reads the real Qwen 3 tokenizer files of shared/tokenizers/qwen3 into a.Qwen3.
func (a *Assets) LoadQwen3(dir string) error {
	tj, err := readGzip(filepath.Join(dir, "tokenizer.json.gz"))
	if err != nil {
		return err
	}
	tc, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return err
	}
	a.Qwen3 = map[string][]byte{"tokenizer.json": tj, "tokenizer_config.json": tc}
	return nil
}

func readGzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("synth: %s: %w", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("synth: %s: %w", path, err)
	}
	return b, nil
}

// LoadAssets reads GPT-2's gzipped tokenizer.json and tiny-llama's tokenizer files.
func LoadAssets(gpt2TokenizerGz, tinyLlamaDir string) (Assets, error) {
	a := Assets{TinyLlama: map[string][]byte{}}
	var err error
	if a.GPT2TokenizerJSON, err = readGzip(gpt2TokenizerGz); err != nil {
		return a, err
	}
	for _, n := range []string{"tokenizer.model", "tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tinyLlamaDir, n))
		if err != nil {
			return a, err
		}
		a.TinyLlama[n] = b
	}
	return a, nil
}

// extraTensor is a tower tensor of a multimodal checkpoint: rows × cols, or a vector when cols is 0.
type extraTensor struct {
	name       string
	rows, cols int
}

// moreTensors generates the checkpoints of the layouts added after the first converter
// fixtures (Gemma 2/3, Phi-3, Mixtral, Qwen MoE), in module-tree order.
func (s *spec) moreTensors(matrix func(string, int, int), vector func(string, int, float64), kv, hd int) {
	pre := "model."
	if s.prefix != "" {
		pre = s.prefix
	}
	// Gemma's norms scale by 1+w, so their weights sit around 0.
	normCenter := 1.0
	if s.layout == "gemma" {
		normCenter = 0
	}
	matrix(pre+"embed_tokens.weight", s.vocab, s.hidden)
	for l := 0; l < s.layers; l++ {
		p := fmt.Sprintf("%slayers.%d.", pre, l)
		vector(p+"input_layernorm.weight", s.hidden, normCenter)
		if s.layout == "phi3" {
			matrix(p+"self_attn.qkv_proj.weight", (s.heads+2*kv)*hd, s.hidden)
		} else {
			matrix(p+"self_attn.q_proj.weight", s.heads*hd, s.hidden)
			matrix(p+"self_attn.k_proj.weight", kv*hd, s.hidden)
			matrix(p+"self_attn.v_proj.weight", kv*hd, s.hidden)
			if s.qkvBias {
				vector(p+"self_attn.q_proj.bias", s.heads*hd, 0)
				vector(p+"self_attn.k_proj.bias", kv*hd, 0)
				vector(p+"self_attn.v_proj.bias", kv*hd, 0)
			}
		}
		matrix(p+"self_attn.o_proj.weight", s.hidden, s.heads*hd)
		if s.qkNorm {
			vector(p+"self_attn.q_norm.weight", hd, normCenter)
			vector(p+"self_attn.k_norm.weight", hd, normCenter)
		}
		vector(p+"post_attention_layernorm.weight", s.hidden, normCenter)
		switch s.layout {
		case "gemma":
			vector(p+"pre_feedforward_layernorm.weight", s.hidden, normCenter)
			vector(p+"post_feedforward_layernorm.weight", s.hidden, normCenter)
			matrix(p+"mlp.gate_proj.weight", s.inter, s.hidden)
			matrix(p+"mlp.up_proj.weight", s.inter, s.hidden)
			matrix(p+"mlp.down_proj.weight", s.hidden, s.inter)
		case "phi3":
			matrix(p+"mlp.gate_up_proj.weight", 2*s.inter, s.hidden)
			matrix(p+"mlp.down_proj.weight", s.hidden, s.inter)
		case "mixtral":
			matrix(p+"block_sparse_moe.gate.weight", s.experts, s.hidden)
			for x := 0; x < s.experts; x++ {
				ep := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", p, x)
				matrix(ep+"w1.weight", s.expertFF, s.hidden)
				matrix(ep+"w2.weight", s.hidden, s.expertFF)
				matrix(ep+"w3.weight", s.expertFF, s.hidden)
			}
		case "qwenmoe":
			matrix(p+"mlp.gate.weight", s.experts, s.hidden)
			for x := 0; x < s.experts; x++ {
				ep := fmt.Sprintf("%smlp.experts.%d.", p, x)
				matrix(ep+"gate_proj.weight", s.expertFF, s.hidden)
				matrix(ep+"up_proj.weight", s.expertFF, s.hidden)
				matrix(ep+"down_proj.weight", s.hidden, s.expertFF)
			}
			if s.sharedFF > 0 {
				matrix(p+"mlp.shared_expert.gate_proj.weight", s.sharedFF, s.hidden)
				matrix(p+"mlp.shared_expert.up_proj.weight", s.sharedFF, s.hidden)
				matrix(p+"mlp.shared_expert.down_proj.weight", s.hidden, s.sharedFF)
				matrix(p+"mlp.shared_expert_gate.weight", 1, s.hidden)
			}
		}
	}
	vector(pre+"norm.weight", s.hidden, normCenter)
	if !s.tied {
		matrix("lm_head.weight", s.vocab, s.hidden)
	}
	for _, e := range s.extra {
		if e.cols == 0 {
			vector(e.name, e.rows, 0)
		} else {
			matrix(e.name, e.rows, e.cols)
		}
	}
}

// LoadRepoAssets loads the assets from their places in this repository and the shared
// directory beside it: GPT-2's tokenizer from libsDir/tokenizer/testdata/gpt2, tiny-llama's from
// sharedDir/models/tiny-llama, and the Qwen 3 tokenizer from sharedDir/tokenizers/qwen3 when it is
// there (only Qwen1.5-MoE-synth needs it).
func LoadRepoAssets(libsDir, sharedDir string) (Assets, error) {
	a, err := LoadAssets(filepath.Join(libsDir, "tokenizer", "testdata", "gpt2", "tokenizer.json.gz"),
		filepath.Join(sharedDir, "models", "tiny-llama"))
	if err != nil {
		return a, err
	}
	qwen := filepath.Join(sharedDir, "tokenizers", "qwen3")
	if _, err := os.Stat(qwen); err == nil {
		err = a.LoadQwen3(qwen)
		return a, err
	}
	return a, nil
}
