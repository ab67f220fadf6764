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

// ggufName maps a Hugging Face tensor name of architecture a to its GGUF name (gguf-py's
// tensor_mapping). It returns the block number, or -1 for non-block tensors; an empty name
// means the converter drops the tensor.
func (a *archSpec) ggufName(hf string) (name string, block int, err error) {
	base, suffix, ok := cutSuffix(hf)
	if !ok {
		return "", 0, fmt.Errorf("%w %q", ErrUnmappedTensor, hf)
	}
	base = hfmodel.TrimPrefix(base)
	if g, ok := a.global[base]; ok {
		if g == "" {
			return "", -1, nil
		}
		return g + suffix, -1, nil
	}
	if g, ok := globalNames[base]; ok {
		return g + suffix, -1, nil
	}
	if rest, ok := strings.CutPrefix(base, "model.layers."); ok {
		num, sub, found := strings.Cut(rest, ".")
		n, convErr := strconv.Atoi(num)
		if found && convErr == nil && n >= 0 && strconv.Itoa(n) == num {
			if g, ok := a.blockName(sub); ok {
				return fmt.Sprintf("blk.%d.%s%s", n, g, suffix), n, nil
			}
		}
	}
	return "", 0, fmt.Errorf("%w %q", ErrUnmappedTensor, hf)
}

// blockName maps a block-relative module name.
func (a *archSpec) blockName(sub string) (string, bool) {
	if g, ok := a.names[sub]; ok {
		return g, true
	}
	g, ok := blockNames[sub]
	return g, ok
}

// expertOf splits a per-expert tensor name ("model.layers.B.<expertPrefix>X.<proj>.weight")
// into block, expert and projection; ok is false for other tensors.
func (a *archSpec) expertOf(hf string) (block, expert int, proj string, ok bool) {
	if a.experts == nil {
		return 0, 0, "", false
	}
	rest, found := strings.CutPrefix(hfmodel.TrimPrefix(hf), "model.layers.")
	if !found {
		return 0, 0, "", false
	}
	num, sub, _ := strings.Cut(rest, ".")
	sub, found = strings.CutPrefix(sub, a.expertPrefix)
	if !found {
		return 0, 0, "", false
	}
	x, proj, _ := strings.Cut(sub, ".")
	proj, found = strings.CutSuffix(proj, ".weight")
	b, err1 := strconv.Atoi(num)
	e, err2 := strconv.Atoi(x)
	if !found || err1 != nil || err2 != nil || b < 0 || e < 0 {
		return 0, 0, "", false
	}
	return b, e, proj, true
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
