package convert

import (
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
)

// Qwen2-MoE and Qwen3-MoE (conversion/qwen.py Qwen2MoeModel): the router is ffn_gate_inp, the
// experts' down/gate/up projections are stacked per block in that order; Qwen2-MoE's shared
// expert keeps its own tensors (ffn_*_shexp) and sigmoid gate (ffn_gate_inp_shexp).
var qwenMoENames = map[string]string{
	"mlp.gate":                    "ffn_gate_inp",
	"mlp.shared_expert.gate_proj": "ffn_gate_shexp",
	"mlp.shared_expert.up_proj":   "ffn_up_shexp",
	"mlp.shared_expert.down_proj": "ffn_down_shexp",
	"mlp.shared_expert_gate":      "ffn_gate_inp_shexp",
}

var qwenMoEExperts = []expertProj{{"down_proj", "ffn_down_exps"}, {"gate_proj", "ffn_gate_exps"}, {"up_proj", "ffn_up_exps"}}

var qwen2MoeArch = &archSpec{gguf: "qwen2moe", names: qwenMoENames, hparams: qwenMoEHParams,
	expertPrefix: "mlp.experts.", experts: qwenMoEExperts}

var qwen3MoeArch = &archSpec{gguf: "qwen3moe", names: qwenMoENames, hparams: qwenMoEHParams,
	expertPrefix: "mlp.experts.", experts: qwenMoEExperts}

// qwenMoEHParams is TextModel's keys plus the expert feed-forward lengths.
func qwenMoEHParams(c *hfmodel.Config, arch string, fileType uint32) ([]gguf.KV, []gguf.KV, error) {
	kv, err := hparamKVs(c, arch, fileType)
	if err != nil {
		return nil, nil, err
	}
	d, err := c.Dims()
	if err != nil {
		return nil, nil, err
	}
	if c.Has("moe_intermediate_size") {
		kv = append(kv, gguf.KV{Key: arch + ".expert_feed_forward_length", Value: uint32(d.ExpertFF)})
	}
	if c.Has("shared_expert_intermediate_size") {
		kv = append(kv, gguf.KV{Key: arch + ".expert_shared_feed_forward_length", Value: uint32(d.SharedExpertFF)})
	}
	return nil, kv, nil
}
