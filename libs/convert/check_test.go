package convert

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
)

// planHeader plans a synthetic checkpoint and returns a copy of its header.
func planHeader(t *testing.T, model, level string) *gguf.Header {
	t.Helper()
	dir := synthModel(t, model)
	m, err := hfmodel.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p, err := NewPlan(m, dir, level, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &gguf.Header{KV: slices.Clone(p.Header.KV), Tensors: slices.Clone(p.Header.Tensors)}
}

func setKV(key string, v any) func(h *gguf.Header) {
	return func(h *gguf.Header) { h.Set(key, v) }
}

func editTensor(name string, f func(t *gguf.TensorInfo)) func(h *gguf.Header) {
	return func(h *gguf.Header) {
		for i := range h.Tensors {
			if h.Tensors[i].Name == name {
				h.Tensors[i].Dims = slices.Clone(h.Tensors[i].Dims)
				f(&h.Tensors[i])
			}
		}
	}
}

func dropHeaderTensor(name string) func(h *gguf.Header) {
	return func(h *gguf.Header) {
		h.Tensors = slices.DeleteFunc(h.Tensors, func(t gguf.TensorInfo) bool { return t.Name == name })
	}
}

// TestCheckHeader: a header whose hparams disagree with its tensors is one llama.cpp cannot
// load; every converter fixture's header passes.
func TestCheckHeader(t *testing.T) {
	for _, c := range converterCases {
		if err := CheckHeader(planHeader(t, c.model, c.level)); err != nil {
			t.Errorf("%s %s: %v", c.model, c.level, err)
		}
	}
	cases := []struct {
		name, model string
		edit        func(h *gguf.Header)
		want        string
	}{
		{"block_count too high", "mistral-synth", setKV("llama.block_count", uint32(3)), "no tensor model.layers.2.input_layernorm.weight"},
		{"block_count too low", "mistral-synth", setKV("llama.block_count", uint32(1)), "model.layers.1.input_layernorm.weight is not part"},
		{"block_count huge", "mistral-synth", setKV("llama.block_count", uint32(1<<31-1)), "num_hidden_layers 2147483647, but the weights hold only"},
		{"block_count as int32", "mistral-synth", setKV("llama.block_count", int32(2)), "llama.block_count is missing or not a uint32"},
		{"embedding_length", "mistral-synth", setKV("llama.embedding_length", uint32(512)), "model.embed_tokens.weight has shape [8192 256], config.json implies [8192 512]"},
		{"feed_forward_length", "Qwen2-Synth-Instruct", setKV("qwen2.feed_forward_length", uint32(256)), "mlp.gate_proj.weight has shape [512 256], config.json implies [256 256]"},
		{"head_count", "Qwen3-Synth-v1.5-Chat", setKV("qwen3.attention.head_count", uint32(4)), "self_attn.q_proj.weight has shape [512 256], config.json implies [256 256]"},
		{"head_count_kv", "mistral-synth", setKV("llama.attention.head_count_kv", uint32(4)), "self_attn.k_proj.weight has shape [64 256], config.json implies [128 256]"},
		{"key_length", "Qwen3-Synth-v1.5-Chat", setKV("qwen3.attention.key_length", uint32(32)), "value_length 64 differs from key_length 32"},
		{"zero embedding_length", "mistral-synth", setKV("llama.embedding_length", uint32(0)), "llama.embedding_length = 0"},
		{"vocab_size key", "mistral-synth", setKV("llama.vocab_size", uint32(8000)), "llama.vocab_size 8000, 8192 tokens"},
		{"vocab vs token_embd rows", "Qwen3-Synth-v1.5-Chat", func(h *gguf.Header) {
			h.Set("tokenizer.ggml.tokens", make([]string, 50000))
			h.Set("tokenizer.ggml.token_type", make([]int32, 50000))
		}, "model.embed_tokens.weight has shape [50304 256], config.json implies [50000 256]"},
		{"scores shorter", "mistral-synth", setKV("tokenizer.ggml.scores", make([]float32, 10)), "tokenizer.ggml.scores does not have 8192"},
		{"rope dimension", "llama-synth-3.2-f32", setKV("llama.rope.dimension_count", uint32(32)), "llama.rope.dimension_count 32, head size 64"},
		{"wrong projection", "mistral-synth", editTensor("blk.1.ffn_down.weight", func(t *gguf.TensorInfo) { t.Dims[0], t.Dims[1] = t.Dims[1], t.Dims[0] }), "mlp.down_proj.weight has shape [512 256], config.json implies [256 512]"},
		{"missing block tensor", "mistral-synth", dropHeaderTensor("blk.0.attn_k.weight"), "no tensor model.layers.0.self_attn.k_proj.weight"},
		{"missing qwen3 norm", "Qwen3-Synth-v1.5-Chat", dropHeaderTensor("blk.1.attn_q_norm.weight"), "no tensor model.layers.1.self_attn.q_norm.weight"},
		{"zero-sized tensor", "mistral-synth", editTensor("blk.0.attn_norm.weight", func(t *gguf.TensorInfo) { t.Dims[0] = 0 }), "tensor blk.0.attn_norm.weight has dims [0]"},
		{"unknown tensor", "mistral-synth", editTensor("output_norm.weight", func(t *gguf.TensorInfo) { t.Name = "blk.0.ffn_gate_exps.weight" }), "tensor blk.0.ffn_gate_exps.weight is not one llama.cpp loads"},
		{"rope_freqs size", "llama-synth-3.2-f32", editTensor("rope_freqs.weight", func(t *gguf.TensorInfo) { t.Dims[0] = 64 }), "rope_freqs.weight has dims [64]"},
		{"expert_count", "Mixtral-synth-8x", setKV("llama.expert_count", uint32(4)), "blk.0.ffn_down_exps.weight has dims [256 256 8] for 4 experts"},
		{"expert_used_count", "Qwen3-MoE-synth", setKV("qwen3moe.expert_used_count", uint32(17)), "expert_count 16, expert_used_count 17"},
		{"expert ff", "Qwen1.5-MoE-synth", setKV("qwen2moe.expert_feed_forward_length", uint32(32)), "mlp.experts.0.gate_proj.weight has shape [64 64], config.json implies [32 64]"},
		{"missing stacked experts", "Qwen3-MoE-synth", dropHeaderTensor("blk.1.ffn_up_exps.weight"), "no tensor model.layers.1.mlp.experts.0.up_proj.weight"},
		{"experts on dense arch", "gemma-2-synth-it", func(h *gguf.Header) {
			h.Set("gemma2.expert_count", uint32(2))
			h.Set("gemma2.expert_used_count", uint32(1))
		}, "gemma2.expert_count on a dense architecture"},
		{"missing gemma sandwich norm", "gemma-3-synth-it", dropHeaderTensor("blk.2.post_ffw_norm.weight"), "no tensor model.layers.2.post_feedforward_layernorm.weight"},
		{"phi3 fused qkv rows", "Phi-3-synth-128k-instruct", setKV("phi3.attention.head_count_kv", uint32(4)), "self_attn.qkv_proj.weight has shape [512 256], config.json implies [768 256]"},
		{"phi3 rope factors", "Phi-3-synth-128k-instruct", editTensor("rope_factors_long.weight", func(t *gguf.TensorInfo) { t.Dims[0] = 16 }), "rope_factors_long.weight has dims [16]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := planHeader(t, c.model, "Q8_0")
			c.edit(h)
			err := CheckHeader(h)
			if !errors.Is(err, ErrHeader) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v: want one line mentioning %q", err, c.want)
			}
		})
	}
}
