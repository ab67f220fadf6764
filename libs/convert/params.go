package convert

import (
	"fmt"

	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
)

// QuantizationVersion is GGML_QNT_VERSION, written as general.quantization_version.
const QuantizationVersion uint32 = 2

// ggufArch maps a Hugging Face architecture to llama.cpp's architecture name.
var ggufArch = map[string]string{
	"LlamaForCausalLM":   "llama",
	"MistralForCausalLM": "llama",
	"Qwen2ForCausalLM":   "qwen2",
	"Qwen3ForCausalLM":   "qwen3",
}

// ArchName returns llama.cpp's architecture name for a Hugging Face architecture.
func ArchName(hfArch string) (string, error) {
	a, ok := ggufArch[hfArch]
	if !ok {
		return "", fmt.Errorf("%w %s", hfmodel.ErrUnsupportedArchitecture, hfArch)
	}
	return a, nil
}

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
	factor, hasFactor := c.RopeFloat("factor")
	switch c.RopeType() {
	case "linear":
		if hasFactor {
			kv = append(kv, gguf.KV{Key: arch + ".rope.scaling.type", Value: "linear"})
			f32("rope.scaling.factor", factor)
		}
	case "yarn":
		if hasFactor {
			kv = append(kv, gguf.KV{Key: arch + ".rope.scaling.type", Value: "yarn"})
			f32("rope.scaling.factor", factor)
			orig, ok := c.RopeFloat("original_max_position_embeddings")
			if !ok {
				return nil, fmt.Errorf("%w: yarn rope scaling needs original_max_position_embeddings", hfmodel.ErrBadConfig)
			}
			if orig < 1 || orig > hfmodel.MaxSize {
				return nil, fmt.Errorf("%w: rope original_max_position_embeddings %v does not fit a GGUF uint32 field", hfmodel.ErrBadConfig, orig)
			}
			u32("rope.scaling.original_context_length", int(orig))
			if v, ok := c.RopeFloat("extrapolation_factor"); ok {
				f32("rope.scaling.yarn_ext_factor", v)
			}
			if v, ok := c.RopeFloat("attention_factor"); ok {
				f32("rope.scaling.yarn_attn_factor", v)
			} else if v, ok := c.RopeFloat("attn_factor"); ok {
				f32("rope.scaling.yarn_attn_factor", v)
			}
			if v, ok := c.RopeFloat("beta_fast"); ok {
				f32("rope.scaling.yarn_beta_fast", v)
			}
			if v, ok := c.RopeFloat("beta_slow"); ok {
				f32("rope.scaling.yarn_beta_slow", v)
			}
		}
	case "su", "longrope":
		kv = append(kv, gguf.KV{Key: arch + ".rope.scaling.type", Value: "longrope"})
	}
	if theta, ok := c.RopeFloat("rope_theta"); ok {
		f32("rope.freq_base", theta)
	}
	f32("attention.layer_norm_rms_epsilon", c.RMSNormEps)
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
