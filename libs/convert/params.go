package convert

import (
	"encoding/json"
	"fmt"

	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
)

// QuantizationVersion is GGML_QNT_VERSION, written as general.quantization_version.
const QuantizationVersion uint32 = 2

// hparamKVs returns the keys TextModel.set_gguf_parameters (and LlamaModel's additions) write,
// in the converter's order. general.file_type is written among them, as the converter does.
func hparamKVs(c *hfmodel.Config, arch string, fileType uint32) ([]gguf.KV, error) {
	var kv []gguf.KV
	u32 := func(key string, v int) { kv = append(kv, gguf.KV{Key: arch + "." + key, Value: uint32(v)}) }
	f32 := func(key string, v float64) { kv = append(kv, gguf.KV{Key: arch + "." + key, Value: float32(v)}) }

	u32("block_count", c.NumLayers)
	u32("context_length", c.MaxPositionEmbeddings)
	u32("embedding_length", c.HiddenSize)
	u32("feed_forward_length", c.IntermediateSize)
	u32("attention.head_count", c.NumHeads)
	u32("attention.head_count_kv", c.NumKVHeads)
	if causal, ok := c.Params["is_causal"].(bool); ok && !causal {
		kv = append(kv, gguf.KV{Key: arch + ".attention.causal", Value: false})
	}
	rope := globalRope(c)
	ropeFloat := func(key string) (float64, bool) {
		v, ok := rope[key]
		if !ok {
			return 0, false
		}
		f, err := numberOf(v)
		return f, err == nil
	}
	factor, hasFactor := ropeFloat("factor")
	ropeType, _ := rope["rope_type"].(string)
	switch ropeType {
	case "linear":
		if hasFactor {
			kv = append(kv, gguf.KV{Key: arch + ".rope.scaling.type", Value: "linear"})
			f32("rope.scaling.factor", factor)
		}
	case "yarn":
		if hasFactor {
			kv = append(kv, gguf.KV{Key: arch + ".rope.scaling.type", Value: "yarn"})
			f32("rope.scaling.factor", factor)
			orig, ok := ropeFloat("original_max_position_embeddings")
			if !ok {
				return nil, fmt.Errorf("%w: yarn rope scaling needs original_max_position_embeddings", hfmodel.ErrBadConfig)
			}
			if orig < 1 || orig > hfmodel.MaxSize {
				return nil, fmt.Errorf("%w: rope original_max_position_embeddings %v does not fit a GGUF uint32 field", hfmodel.ErrBadConfig, orig)
			}
			u32("rope.scaling.original_context_length", int(orig))
			if v, ok := ropeFloat("extrapolation_factor"); ok {
				f32("rope.scaling.yarn_ext_factor", v)
			}
			if v, ok := ropeFloat("attention_factor"); ok {
				f32("rope.scaling.yarn_attn_factor", v)
			} else if v, ok := ropeFloat("attn_factor"); ok {
				f32("rope.scaling.yarn_attn_factor", v)
			}
			if v, ok := ropeFloat("beta_fast"); ok {
				f32("rope.scaling.yarn_beta_fast", v)
			}
			if v, ok := ropeFloat("beta_slow"); ok {
				f32("rope.scaling.yarn_beta_slow", v)
			}
		}
	case "su", "longrope":
		kv = append(kv, gguf.KV{Key: arch + ".rope.scaling.type", Value: "longrope"})
	}
	if theta, ok := ropeFloat("rope_theta"); ok {
		f32("rope.freq_base", theta)
	}
	if swa, ok := c.Rope["sliding_attention"].(map[string]any); ok {
		if v, ok := swa["rope_theta"]; ok && v != nil {
			theta, err := numberOf(v)
			if err != nil {
				return nil, fmt.Errorf("%w: sliding_attention rope_theta: %v", hfmodel.ErrBadConfig, err)
			}
			f32("rope.freq_base_swa", theta)
		}
	}
	f32("attention.layer_norm_rms_epsilon", c.RMSNormEps)
	for _, keys := range [][]string{{"num_local_experts", "num_experts", "n_routed_experts"}, {"num_experts_per_tok", "num_experts_per_token", "top_k_experts"}} {
		for _, k := range keys {
			if v, ok, err := c.Int(k); err != nil {
				return nil, err
			} else if ok {
				if v < 0 || v > hfmodel.MaxSize {
					return nil, fmt.Errorf("%w: %s = %d", hfmodel.ErrBadConfig, k, v)
				}
				if keys[0] == "num_local_experts" {
					u32("expert_count", int(v))
				} else {
					u32("expert_used_count", int(v))
				}
				break
			}
		}
	}
	if c.HeadDim > 0 {
		u32("attention.key_length", c.HeadDim)
		u32("attention.value_length", c.HeadDim)
	}
	kv = append(kv, gguf.KV{Key: "general.file_type", Value: fileType})
	if arch == "llama" {
		u32("vocab_size", c.VocabSize)
		u32("rope.dimension_count", c.RopeDim())
	}
	return kv, nil
}

// globalRope is the rope parameters of the global-attention layers: rope_parameters'
// "full_attention" entry where there are per-layer-type parameters (Gemma 3), else all of them.
func globalRope(c *hfmodel.Config) map[string]any {
	if full, ok := c.Rope["full_attention"].(map[string]any); ok {
		return full
	}
	return c.Rope
}

// numberOf reads a JSON number (json.Number, float64 or int) as float64.
func numberOf(v any) (float64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Float64()
	case float64:
		return n, nil
	case int:
		return float64(n), nil
	}
	return 0, fmt.Errorf("not a number: %v", v)
}
