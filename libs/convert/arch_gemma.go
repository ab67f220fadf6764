package convert

import (
	"fmt"

	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
)

// Gemma 2 and 3 (conversion/gemma.py): sandwich norms around attention and feed-forward, every
// *norm.weight shifted by +1 (Gemma's RMSNorm multiplies by 1+w), no q/k permutation.
var gemmaNames = map[string]string{
	"post_attention_layernorm":   "post_attention_norm",
	"pre_feedforward_layernorm":  "ffn_norm",
	"post_feedforward_layernorm": "post_ffw_norm",
}

// gemma2Arch: Gemma2Model writes its own keys (no TextModel ones, so no rope keys), and drops
// lm_head.weight, which llama.cpp never loads for gemma2.
var gemma2Arch = &archSpec{
	gguf: "gemma2", names: gemmaNames, normShift: true,
	global:  map[string]string{"lm_head": ""},
	hparams: gemma2HParams,
}

// gemma3Arch covers Gemma3ForCausalLM and the text part of Gemma3ForConditionalGeneration (its
// vision tower and projector are left out by hfmodel.IgnoredTensor).
var gemma3Arch = &archSpec{
	gguf: "gemma3", names: gemmaNames, normShift: true,
	hparams: gemma3HParams,
}

func gemma2HParams(c *hfmodel.Config, arch string, fileType uint32) ([]gguf.KV, []gguf.KV, error) {
	l := &kvList{}
	u32 := func(key string, v int) { l.set(arch+"."+key, uint32(v)) }
	u32("context_length", c.MaxPositionEmbeddings)
	u32("embedding_length", c.HiddenSize)
	u32("block_count", c.NumLayers)
	u32("feed_forward_length", c.IntermediateSize)
	u32("attention.head_count", c.NumHeads)
	u32("attention.head_count_kv", c.NumKVHeads)
	l.set(arch+".attention.layer_norm_rms_epsilon", float32(c.RMSNormEps))
	u32("attention.key_length", c.HeadDim)
	u32("attention.value_length", c.HeadDim)
	l.set("general.file_type", fileType)
	for _, k := range []string{"attn_logit_softcapping", "final_logit_softcapping"} {
		v, ok, err := c.Float(k)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return nil, nil, fmt.Errorf("%w: %q is required for %s", hfmodel.ErrBadConfig, k, c.Architecture)
		}
		l.set(arch+"."+k, float32(v))
	}
	sw, err := slidingWindow(c, true)
	if err != nil {
		return nil, nil, err
	}
	u32("attention.sliding_window", sw)
	return nil, l.kv, nil
}

// gemma3HParams is TextModel's keys, then Gemma3Model's, which overwrite some in place.
func gemma3HParams(c *hfmodel.Config, arch string, fileType uint32) ([]gguf.KV, []gguf.KV, error) {
	base, err := hparamKVs(c, arch, fileType)
	if err != nil {
		return nil, nil, err
	}
	l := &kvList{kv: base}
	u32 := func(key string, v int) { l.set(arch+"."+key, uint32(v)) }
	u32("context_length", c.MaxPositionEmbeddings)
	u32("attention.head_count", c.NumHeads)
	l.set(arch+".attention.layer_norm_rms_epsilon", float32(c.RMSNormEps))
	u32("attention.key_length", c.HeadDim)
	u32("attention.value_length", c.HeadDim)
	theta := 1_000_000.0
	if v, ok := globalRope(c)["rope_theta"]; ok && v != nil {
		if theta, err = numberOf(v); err != nil {
			return nil, nil, fmt.Errorf("%w: rope_theta: %v", hfmodel.ErrBadConfig, err)
		}
	}
	l.set(arch+".rope.freq_base", float32(theta))
	if c.Has("attn_logit_softcapping") {
		return nil, nil, fmt.Errorf("%w: attn_logit_softcapping is not part of Gemma 3", hfmodel.ErrBadConfig)
	}
	if v, ok, err := c.Float("final_logit_softcapping"); err != nil {
		return nil, nil, err
	} else if ok && v != 0 {
		l.set(arch+".final_logit_softcapping", float32(v))
	}
	if p, ok, _ := c.Int("sliding_window_pattern"); !ok || p != 1 {
		sw, err := slidingWindow(c, true)
		if err != nil {
			return nil, nil, err
		}
		u32("attention.sliding_window", sw)
	}
	u32("attention.head_count_kv", c.NumKVHeads)
	return nil, l.kv, nil
}

// slidingWindow reads sliding_window as a uint32 field; a missing or null one is 0 unless
// required.
func slidingWindow(c *hfmodel.Config, required bool) (int, error) {
	v, ok, err := c.Int("sliding_window")
	switch {
	case err != nil:
		return 0, err
	case !ok && required:
		return 0, fmt.Errorf("%w: sliding_window is required for %s", hfmodel.ErrBadConfig, c.Architecture)
	case v < 0 || v > hfmodel.MaxSize:
		return 0, fmt.Errorf("%w: sliding_window %d does not fit a GGUF uint32 field", hfmodel.ErrBadConfig, v)
	}
	return int(v), nil
}
