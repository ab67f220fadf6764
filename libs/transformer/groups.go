package transformer

import (
	"fmt"

	"quantfleet.dev/libs/hfmodel"
)

// The fused linears of Phi-3 (one input each, quantized as single linears as GPTQModel does).
var (
	FusedQKVInputs    = []string{"self_attn.qkv_proj"}
	FusedGateUpInputs = []string{"mlp.gate_up_proj"}
)

// LinearGroup is a set of linears of a decoder layer that read one input, the unit GPTQ solves
// together (one Hessian).
type LinearGroup struct {
	// Linears are module paths inside the layer; Linears[0] is the name a Hook reports first.
	Linears []string
	// After are the indexes of the earlier groups whose weights the group's input depends on:
	// true-sequential quantization solves those first and feeds the group through them.
	After []int
}

// LinearGroups lists the quantized linears of c's decoder layers as groups, in the order a
// forward pass feeds them (notes §1.8): q/k/v; o; gate/up; down for the Llama and Gemma layouts,
// qkv_proj; o_proj; gate_up_proj; down_proj for Phi-3, and for mixture-of-experts layers the
// attention groups, then Qwen2-MoE's shared expert (gate/up; down), then per expert its gate/up
// and its down on the tokens routed to it. The router and shared_expert_gate stay dense (as in
// GPTQModel). An expert's groups depend on the attention groups and on its own gate/up only,
// so experts can be solved independently.
func (c *Config) LinearGroups() []LinearGroup {
	seq := func(names ...[]string) []LinearGroup {
		out := make([]LinearGroup, len(names))
		for i, n := range names {
			out[i] = LinearGroup{Linears: n}
			for j := range i {
				out[i].After = append(out[i].After, j)
			}
		}
		return out
	}
	switch c.Layout {
	case hfmodel.LayoutPhi3:
		return seq(FusedQKVInputs, OutputInputs, FusedGateUpInputs, DownInputs)
	case hfmodel.LayoutMixtral, hfmodel.LayoutQwenMoE:
		gs := seq(AttentionInputs, OutputInputs)
		mlp := func(names [3]string) {
			gu := len(gs)
			gs = append(gs,
				LinearGroup{Linears: []string{names[0], names[1]}, After: []int{0, 1}},
				LinearGroup{Linears: []string{names[2]}, After: []int{0, 1, gu}})
		}
		if c.Dims().SharedExpertFF > 0 {
			mlp(sharedExpertLinears)
		}
		for x := range c.Experts {
			mlp(c.expertLinears(x))
		}
		return gs
	}
	return seq(AttentionInputs, OutputInputs, MLPInputs, DownInputs)
}

// sharedExpertLinears are Qwen2-MoE's shared expert's gate, up and down projections.
var sharedExpertLinears = [3]string{"mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj", "mlp.shared_expert.down_proj"}

// MoEBlock is the module path of the mixture-of-experts block (Mixtral's block_sparse_moe, Qwen
// MoE's mlp), the name under which a Hook sees the block's whole input, which AWQ scales the
// experts' gate/up against (AutoAWQ's mixtral and qwen3_moe); "" for other layouts.
func (c *Config) MoEBlock() string {
	switch c.Layout {
	case hfmodel.LayoutMixtral:
		return "block_sparse_moe"
	case hfmodel.LayoutQwenMoE:
		return "mlp"
	}
	return ""
}

// moeModule is the module path prefix of the mixture-of-experts block's parts.
func (c *Config) moeModule() string { return c.MoEBlock() + "." }

// expertLinears are expert x's gate, up and down projections (Mixtral: w1, w3, w2).
func (c *Config) expertLinears(x int) [3]string {
	p := fmt.Sprintf("%sexperts.%d.", c.moeModule(), x)
	if c.Layout == hfmodel.LayoutMixtral {
		return [3]string{p + "w1", p + "w3", p + "w2"}
	}
	return [3]string{p + "gate_proj", p + "up_proj", p + "down_proj"}
}
