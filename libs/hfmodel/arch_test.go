package hfmodel

import (
	"errors"
	"strings"
	"testing"

	"quantfleet.dev/libs/fault"
)

// TestArchDims: the table's layout, expert sizes and per-block tensors of the architectures
// added for issue 13, from config.json as transformers' classes read it.
func TestArchDims(t *testing.T) {
	cases := []struct {
		name, json string
		layout     Layout
		experts    int
		expertFF   int
		sharedFF   int
		blockLen   int // tensors per block
		has        []string
		headDim    int
	}{
		{"gemma2", `{"architectures":["Gemma2ForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":64,"num_hidden_layers":2}`,
			LayoutGemma, 0, 0, 0, 11, []string{"pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"}, 64},
		{"gemma3 multimodal", `{"architectures":["Gemma3ForConditionalGeneration"],"text_config":{"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":64,"num_hidden_layers":2}}`,
			LayoutGemma, 0, 0, 0, 13, []string{"self_attn.q_norm.weight"}, 64},
		{"phi3", `{"architectures":["Phi3ForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":512,"num_hidden_layers":2}`,
			LayoutPhi3, 0, 0, 0, 6, []string{"self_attn.qkv_proj.weight", "mlp.gate_up_proj.weight"}, 64},
		{"mixtral", `{"architectures":["MixtralForCausalLM"],"hidden_size":256,"num_attention_heads":8,"intermediate_size":128,"num_local_experts":4,"num_experts_per_tok":2,"num_hidden_layers":2}`,
			LayoutMixtral, 4, 128, 0, 7 + 12, []string{"block_sparse_moe.gate.weight", "block_sparse_moe.experts.3.w2.weight"}, 32},
		{"qwen3moe", `{"architectures":["Qwen3MoeForCausalLM"],"hidden_size":256,"num_attention_heads":8,"num_key_value_heads":2,"head_dim":64,"num_experts":8,"num_experts_per_tok":2,"moe_intermediate_size":64,"num_hidden_layers":2}`,
			LayoutQwenMoE, 8, 64, 0, 9 + 24, []string{"mlp.gate.weight", "mlp.experts.7.down_proj.weight", "self_attn.k_norm.weight"}, 64},
		{"qwen2moe shared expert", `{"architectures":["Qwen2MoeForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_key_value_heads":4,"num_experts":4,"num_experts_per_tok":2,"moe_intermediate_size":32,"shared_expert_intermediate_size":128,"num_hidden_layers":2}`,
			LayoutQwenMoE, 4, 32, 128, 10 + 12 + 4, []string{"mlp.shared_expert_gate.weight", "self_attn.q_proj.bias"}, 16},
	}
	for _, c := range cases {
		cfg, err := ParseConfig([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		d, err := cfg.Dims()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if d.Layout != c.layout || d.Experts != c.experts || d.ExpertFF != c.expertFF || d.SharedExpertFF != c.sharedFF || d.HeadDim != c.headDim {
			t.Errorf("%s: dims %+v", c.name, d)
		}
		b := d.Block(1)
		if len(b) != c.blockLen {
			t.Errorf("%s: %d tensors per block, want %d", c.name, len(b), c.blockLen)
		}
		for _, h := range c.has {
			found := false
			for _, s := range b {
				found = found || s.Name == "model.layers.1."+h
			}
			if !found {
				t.Errorf("%s: block has no %s", c.name, h)
			}
		}
		if err := d.CheckTensors(tensorsOf(d)); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestArchConfigErrors(t *testing.T) {
	moe := `{"architectures":["Qwen3MoeForCausalLM"],"hidden_size":256,"num_attention_heads":8,"num_hidden_layers":2,"moe_intermediate_size":64,`
	cases := []struct {
		json string
		err  error
		want string
	}{
		{moe + `"num_experts":4,"num_experts_per_tok":5}`, ErrBadConfig, "num_experts_per_tok must be between 1 and num_experts (4)"},
		{moe + `"num_experts":0,"num_experts_per_tok":1}`, ErrBadConfig, `"num_experts" must be between 1`},
		{moe + `"num_experts":4,"num_experts_per_tok":2,"decoder_sparse_step":2}`, ErrUnsupportedArchitecture, "decoder_sparse_step 2"},
		{moe + `"num_experts":4,"num_experts_per_tok":2,"mlp_only_layers":[1]}`, ErrUnsupportedArchitecture, "mlp_only_layers"},
		{`{"architectures":["MixtralForCausalLM"],"num_local_experts":100000}`, ErrBadConfig, `"num_local_experts" must be between 1 and 4096`},
	}
	for _, c := range cases {
		cfg, err := ParseConfig([]byte(c.json))
		if err == nil {
			_, err = cfg.Dims()
		}
		if !errors.Is(err, c.err) || !fault.BadInput(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %v mentioning %q", c.json, err, c.err, c.want)
		}
	}
}

// TestMultimodalTensorsIgnored: a Gemma 3 multimodal checkpoint's vision tower and projector
// are not part of the text model; its language model's names lose "language_model.".
func TestMultimodalTensorsIgnored(t *testing.T) {
	for name, want := range map[string]bool{
		"model.vision_tower.vision_model.post_layernorm.weight": true,
		"model.multi_modal_projector.mm_soft_emb_norm.weight":   true,
		"multi_modal_projector.mm_input_projection_weight":      true,
		"model.language_model.layers.0.mlp.up_proj.weight":      false,
		"language_model.model.layers.0.self_attn.q_proj.weight": false,
		"model.layers.0.self_attn.rotary_emb.inv_freq":          true,
		"model.layers.3.block_sparse_moe.experts.0.w1.weight":   false,
	} {
		if got := IgnoredTensor(name); got != want {
			t.Errorf("IgnoredTensor(%s) = %v, want %v", name, got, want)
		}
	}
	for in, want := range map[string]string{
		"model.language_model.layers.0.mlp.up_proj.weight": "model.layers.0.mlp.up_proj.weight",
		"language_model.model.norm.weight":                 "model.norm.weight",
		"language_model.lm_head.weight":                    "lm_head.weight",
	} {
		if got := TrimPrefix(in); got != want {
			t.Errorf("TrimPrefix(%s) = %s, want %s", in, got, want)
		}
	}
}
