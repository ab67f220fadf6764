package convert

import (
	"fmt"
	"math"

	"quantfleet.dev/libs/ggml"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
)

// phi3Arch is Phi3MiniModel (conversion/phi.py): qkv_proj stays fused as attn_qkv and
// gate_up_proj as ffn_up (llama.cpp splits them at load time); LongRoPE checkpoints get
// rope_factors_long/short tensors and rope.scaling.attn_factor.
var phi3Arch = &archSpec{
	gguf: "phi3",
	names: map[string]string{
		"self_attn.qkv_proj": "attn_qkv",
		"mlp.gate_up_proj":   "ffn_up",
	},
	hparams:   phi3HParams,
	generated: phi3RopeFactors,
}

// phi3Rope returns the rotated dimensions and the original context length.
func phi3Rope(c *hfmodel.Config) (ropeDims, orig int, err error) {
	o, ok := c.RopeFloat("original_max_position_embeddings")
	if !ok || o < 1 || o > hfmodel.MaxSize {
		return 0, 0, fmt.Errorf("%w: Phi-3 needs original_max_position_embeddings", hfmodel.ErrBadConfig)
	}
	pct := 1.0
	if v, ok := c.RopeFloat("partial_rotary_factor"); ok {
		pct = v
	}
	// int(rot_pct * n_embd) // n_head, in Python floats.
	return int(pct*float64(c.HiddenSize)) / c.NumHeads, int(o), nil
}

func phi3HParams(c *hfmodel.Config, arch string, fileType uint32) ([]gguf.KV, []gguf.KV, error) {
	ropeDims, orig, err := phi3Rope(c)
	if err != nil {
		return nil, nil, err
	}
	l := &kvList{}
	u32 := func(key string, v int) { l.set(arch+"."+key, uint32(v)) }
	u32("context_length", c.MaxPositionEmbeddings)
	u32("rope.scaling.original_context_length", orig)
	u32("embedding_length", c.HiddenSize)
	u32("feed_forward_length", c.IntermediateSize)
	u32("block_count", c.NumLayers)
	u32("attention.head_count", c.NumHeads)
	u32("attention.head_count_kv", c.NumKVHeads)
	l.set(arch+".attention.layer_norm_rms_epsilon", float32(c.RMSNormEps))
	u32("rope.dimension_count", ropeDims)
	theta, ok := c.RopeFloat("rope_theta")
	if !ok {
		return nil, nil, fmt.Errorf("%w: rope_theta", hfmodel.ErrBadConfig)
	}
	l.set(arch+".rope.freq_base", float32(theta))
	l.set("general.file_type", fileType)
	// A null sliding_window is written as 0 (how llama.cpp tells Phi-4 from Phi-3).
	sw, err := slidingWindow(c, false)
	if err != nil {
		return nil, nil, err
	}
	u32("attention.sliding_window", sw)

	var early []gguf.KV
	if long := ropeList(c, "long_factor"); len(long) > 0 {
		scale := float64(c.MaxPositionEmbeddings) / float64(orig)
		attn := 1.0
		switch t := c.RopeType(); t {
		case "su", "longrope":
			if scale > 1 {
				attn = math.Sqrt(1 + math.Log(scale)/math.Log(float64(orig)))
			}
		case "yarn":
			if scale > 1 {
				attn = 0.1*math.Log(scale) + 1
			}
		default:
			return nil, nil, fmt.Errorf("%w: Phi-3 rope scaling type %q", hfmodel.ErrUnsupportedArchitecture, t)
		}
		early = append(early, gguf.KV{Key: arch + ".rope.scaling.attn_factor", Value: float32(attn)})
	}
	return early, l.kv, nil
}

// ropeList reads a list of numbers from the rope parameters.
func ropeList(c *hfmodel.Config, key string) []float64 {
	l, _ := c.Rope[key].([]any)
	out := make([]float64, 0, len(l))
	for _, v := range l {
		f, err := numberOf(v)
		if err != nil {
			return nil
		}
		out = append(out, f)
	}
	return out
}

// phi3RopeFactors is Phi3MiniModel.generate_extra_tensors: the LongRoPE factors as F32 tensors.
func phi3RopeFactors(c *hfmodel.Config) ([]TensorPlan, RopeFreqs, error) {
	long, short := ropeList(c, "long_factor"), ropeList(c, "short_factor")
	if _, ok := c.Rope["long_factor"]; !ok || len(long) == 0 {
		return nil, RopeFreqs{}, nil
	}
	ropeDims, _, err := phi3Rope(c)
	if err != nil {
		return nil, RopeFreqs{}, err
	}
	if len(long) != len(short) || 2*len(long) != ropeDims {
		return nil, RopeFreqs{}, fmt.Errorf("%w: rope long_factor and short_factor must have %d entries each, got %d and %d", hfmodel.ErrBadConfig, ropeDims/2, len(long), len(short))
	}
	ne := []uint64{uint64(len(long))}
	return []TensorPlan{
			{Name: "rope_factors_long.weight", Block: -1, Ne: ne, Intermediate: ggml.F32, Generated: "rope_factors_long"},
			{Name: "rope_factors_short.weight", Block: -1, Ne: ne, Intermediate: ggml.F32, Generated: "rope_factors_short"},
		},
		RopeFreqs{LongFactors: long, ShortFactors: short}, nil
}
