package convert

import (
	"fmt"
	"strconv"
	"strings"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/hfmodel"
)

// ErrUnmappedTensor reports a checkpoint tensor with no GGUF name for the architecture.
var ErrUnmappedTensor = fault.New(fault.ErrBadInput, "cannot map tensor")

var globalNames = map[string]string{
	"model.embed_tokens": "token_embd",
	"model.norm":         "output_norm",
	"lm_head":            "output",
}

var blockNames = map[string]string{
	"input_layernorm":          "attn_norm",
	"self_attn.q_proj":         "attn_q",
	"self_attn.k_proj":         "attn_k",
	"self_attn.v_proj":         "attn_v",
	"self_attn.o_proj":         "attn_output",
	"self_attn.q_norm":         "attn_q_norm",
	"self_attn.k_norm":         "attn_k_norm",
	"post_attention_layernorm": "ffn_norm",
	"mlp.gate_proj":            "ffn_gate",
	"mlp.up_proj":              "ffn_up",
	"mlp.down_proj":            "ffn_down",
}

// ggufName maps a Hugging Face tensor name of the supported architectures to its GGUF name
// (gguf-py's tensor_mapping). It returns the block number, or -1 for non-block tensors.
func ggufName(hf string) (name string, block int, err error) {
	base, suffix, ok := cutSuffix(hf)
	if !ok {
		return "", 0, fmt.Errorf("%w %q", ErrUnmappedTensor, hf)
	}
	base = hfmodel.TrimPrefix(base)
	if g, ok := globalNames[base]; ok {
		return g + suffix, -1, nil
	}
	if rest, ok := strings.CutPrefix(base, "model.layers."); ok {
		num, sub, found := strings.Cut(rest, ".")
		n, convErr := strconv.Atoi(num)
		if found && convErr == nil && n >= 0 {
			if g, ok := blockNames[sub]; ok {
				return fmt.Sprintf("blk.%d.%s%s", n, g, suffix), n, nil
			}
		}
	}
	return "", 0, fmt.Errorf("%w %q", ErrUnmappedTensor, hf)
}

// permuteRows undoes Hugging Face's rotate-half layout of q_proj/k_proj rows for llama.cpp's
// NORM rope (LlamaModel.permute): rows reshaped to (heads, 2, hd/2, cols), axes 1 and 2 swapped.
func permuteRows(data []float32, rows, cols, heads int) []float32 {
	out := make([]float32, len(data))
	hd := rows / heads
	half := hd / 2
	for h := 0; h < heads; h++ {
		for a := 0; a < 2; a++ {
			for b := 0; b < half; b++ {
				src := h*hd + a*half + b
				dst := h*hd + 2*b + a
				copy(out[dst*cols:(dst+1)*cols], data[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}
