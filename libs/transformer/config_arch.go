package transformer

import (
	"fmt"
	"math"

	"github.com/x448/float16"

	"quantfleet.dev/libs/hfmodel"
)

// ArchConfig holds what the Gemma 2/3, Phi-3 and mixture-of-experts decoders need beyond the
// Llama pattern. The zero value is the Llama pattern.
type ArchConfig struct {
	Layout hfmodel.Layout
	// Gemma: RMSNorm scales by 1+w (the weights are shifted on load), embeddings are scaled by
	// sqrt(hidden_size), the MLP is GeGLU with gelu_pytorch_tanh.
	Gemma bool
	// QueryScale multiplies q·k instead of 1/sqrt(head_dim) (query_pre_attn_scalar^-0.5); 0: default.
	QueryScale float64
	// AttnSoftcap and FinalSoftcap are Gemma 2's tanh soft-capping of attention and output
	// logits; 0: none.
	AttnSoftcap, FinalSoftcap float64
	// LocalRope is the rotary embedding of sliding-window layers (Gemma 3's local base); nil:
	// every layer uses Rope.
	LocalRope *Rope
	// EmbedScale multiplies Gemma's embeddings: sqrt(hidden_size) rounded to the checkpoint's
	// dtype, as transformers' normalizer tensor is.
	EmbedScale float32
	// Mixture of experts: Experts routed experts, ExpertsUsed of them per token; NormTopK
	// renormalises the top-k routing weights (Mixtral always, Qwen MoE with norm_topk_prob).
	Experts, ExpertsUsed int
	NormTopK             bool
}

// parseArch fills ArchConfig for the architectures added after Llama/Mistral/Qwen2/Qwen3.
func (c *Config) parseArch(hc *hfmodel.Config, d hfmodel.Dims) error {
	c.Layout = d.Layout
	c.Experts = d.Experts
	switch hc.Architecture {
	case "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration":
		c.Gemma = true
		c.TieWordEmbeddings = c.TieWordEmbeddings || d.Tied
		c.EmbedScale = roundToDtype(float32(math.Sqrt(float64(c.HiddenSize))), hc.TorchDtype)
		act, err := optString(hc.Params, "hidden_activation")
		if err != nil {
			return err
		}
		if act != "" && act != "gelu_pytorch_tanh" {
			return fmt.Errorf("%w hidden_activation %q (supported: gelu_pytorch_tanh)", ErrUnsupported, act)
		}
		qs, ok, err := hc.Float("query_pre_attn_scalar")
		if err != nil {
			return err
		}
		if ok {
			if qs <= 0 {
				return fmt.Errorf("%w: query_pre_attn_scalar %v must be positive", ErrBadConfig, qs)
			}
			c.QueryScale = 1 / math.Sqrt(qs)
		}
		for _, f := range []struct {
			key string
			dst *float64
		}{{"attn_logit_softcapping", &c.AttnSoftcap}, {"final_logit_softcapping", &c.FinalSoftcap}} {
			v, _, err := hc.Float(f.key)
			if err != nil {
				return err
			}
			if v < 0 {
				return fmt.Errorf("%w: %s %v", ErrBadConfig, f.key, v)
			}
			*f.dst = v
		}
	case "MixtralForCausalLM":
		c.ExpertsUsed, c.NormTopK = hc.ExpertsUsed(), true
	case "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM":
		c.ExpertsUsed = hc.ExpertsUsed()
		norm, err := hc.Bool("norm_topk_prob")
		if err != nil {
			return err
		}
		c.NormTopK = norm
	}
	return nil
}

// defaultLayerTypes are the Gemma classes' layer types when config.json has none: Gemma 2
// alternates sliding and full layers, Gemma 3 has sliding_window_pattern-1 sliding layers per
// full one.
func defaultLayerTypes(hc *hfmodel.Config, layers int) ([]any, error) {
	pattern := 2
	if hc.Architecture != "Gemma2ForCausalLM" {
		pattern = 6
		if p, ok, err := hc.Int("sliding_window_pattern"); err != nil {
			return nil, err
		} else if ok {
			pattern = int(p)
		}
	}
	if pattern < 1 {
		return nil, fmt.Errorf("%w: sliding_window_pattern %d", ErrBadConfig, pattern)
	}
	out := make([]any, layers)
	for i := range out {
		out[i] = "full_attention"
		if (i+1)%pattern != 0 {
			out[i] = "sliding_attention"
		}
	}
	return out, nil
}

// roundToDtype rounds v to bfloat16 or float16 (nearest even) when the checkpoint's dtype is one.
func roundToDtype(v float32, dtype string) float32 {
	switch dtype {
	case "bfloat16":
		u := math.Float32bits(v)
		u += 0x7fff + (u>>16)&1
		return math.Float32frombits(u &^ 0xffff)
	case "float16":
		return float32(float16.Fromfloat32(v).Float32())
	}
	return v
}
