package hfmodel

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"quantfleet.dev/libs/safetensors"
)

// Dims are the sizes and options of config.json that fix a checkpoint's tensors. They drive the
// one table of expected tensors (Tensors) that the GGUF conversion, the GPTQ/AWQ runtime and the
// read-back of a GGUF file all check against.
type Dims struct {
	Vocab, Hidden, Intermediate, Layers int
	Heads, KVHeads, HeadDim             int
	AttentionBias                       bool // q/k/v biases
	OutputBias                          bool // o_proj bias
	MLPBias                             bool // gate/up/down biases
	QKNorm                              bool // Qwen3's and Gemma 3's per-head q_norm/k_norm
	Tied                                bool // lm_head may be absent (tie_word_embeddings)

	// Layout says how a block's tensors are named and shaped beyond the Llama pattern.
	Layout Layout
	// Mixture of experts: Experts routed experts per block of ExpertFF rows each (gate/up);
	// SharedExpertFF > 0 adds Qwen2-MoE's always-on shared expert and its sigmoid gate.
	Experts, ExpertFF, SharedExpertFF int
}

// Layout is a family of block layouts.
type Layout int

const (
	LayoutLlama   Layout = iota // Llama, Mistral, Qwen2, Qwen3
	LayoutGemma                 // + post-attention, pre- and post-feed-forward norms
	LayoutPhi3                  // fused qkv_proj and gate_up_proj
	LayoutMixtral               // block_sparse_moe.gate and experts.N.w1/w2/w3
	LayoutQwenMoE               // mlp.gate and mlp.experts.N.{gate,up,down}_proj
)

// TensorSpec is one expected tensor: its Hugging Face name and PyTorch shape.
type TensorSpec struct {
	Name     string
	Shape    []int64
	Optional bool
}

// Dims derives the tensor-shaping options from the configuration the way transformers' model
// classes do: Qwen2 always has q/k/v biases, Llama and Qwen3 follow attention_bias, Llama
// mlp_bias, Qwen3 adds q/k norms. head_dim defaults to hidden_size/num_attention_heads.
func (c *Config) Dims() (Dims, error) {
	d := Dims{Vocab: c.VocabSize, Hidden: c.HiddenSize, Intermediate: c.IntermediateSize, Layers: c.NumLayers,
		Heads: c.NumHeads, KVHeads: c.NumKVHeads, HeadDim: c.HeadDim, Tied: c.TieWordEmbeddings}
	if d.HeadDim == 0 {
		if c.HiddenSize%c.NumHeads != 0 {
			return Dims{}, fmt.Errorf("%w: hidden_size %d is not a multiple of num_attention_heads %d", ErrBadConfig, c.HiddenSize, c.NumHeads)
		}
		d.HeadDim = c.HiddenSize / c.NumHeads
	}
	attnBias, err := c.Bool("attention_bias")
	if err != nil {
		return Dims{}, err
	}
	switch c.Architecture {
	case "LlamaForCausalLM":
		d.AttentionBias, d.OutputBias = attnBias, attnBias
		if d.MLPBias, err = c.Bool("mlp_bias"); err != nil {
			return Dims{}, err
		}
	case "Qwen2ForCausalLM":
		d.AttentionBias = true
	case "Qwen3ForCausalLM":
		d.AttentionBias, d.OutputBias, d.QKNorm = attnBias, attnBias, true
	case "Gemma2ForCausalLM":
		d.Layout, d.AttentionBias, d.OutputBias = LayoutGemma, attnBias, attnBias
		d.Tied = true // the converter drops lm_head.weight, the model always ties it
	case "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration":
		d.Layout, d.AttentionBias, d.OutputBias, d.QKNorm = LayoutGemma, attnBias, attnBias, true
	case "Phi3ForCausalLM":
		d.Layout = LayoutPhi3
	case "MixtralForCausalLM":
		d.Layout = LayoutMixtral
		d.ExpertFF = d.Intermediate
		if err := c.moe("num_local_experts"); err != nil {
			return Dims{}, err
		}
		d.Experts = c.experts
	case "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM":
		d.Layout = LayoutQwenMoE
		if c.Architecture == "Qwen2MoeForCausalLM" {
			if d.AttentionBias, err = c.Bool("qkv_bias"); err != nil {
				return Dims{}, err
			}
		} else {
			d.AttentionBias, d.OutputBias, d.QKNorm = attnBias, attnBias, true
		}
		if err := c.moe("num_experts"); err != nil {
			return Dims{}, err
		}
		d.Experts, d.ExpertFF, d.SharedExpertFF = c.experts, c.expertFF, c.sharedFF
	}
	return d, nil
}

// moe reads and checks the mixture-of-experts sizes: every block must be sparse (llama.cpp's
// qwen2moe/qwen3moe graphs have no dense blocks) and top-k must not exceed the expert count.
func (c *Config) moe(countKey string) error {
	n, ok, err := c.Int(countKey)
	if err == nil && (!ok || n < 1 || n > MaxExperts) {
		err = fmt.Errorf("%w: %q must be between 1 and %d", ErrBadConfig, countKey, MaxExperts)
	}
	if err != nil {
		return err
	}
	k, ok, err := c.Int("num_experts_per_tok")
	if err == nil && (!ok || k < 1 || k > n) {
		err = fmt.Errorf("%w: num_experts_per_tok must be between 1 and %s (%d)", ErrBadConfig, countKey, n)
	}
	if err != nil {
		return err
	}
	c.experts, c.expertsUsed = int(n), int(k)
	if c.Architecture == "MixtralForCausalLM" {
		return nil
	}
	if step, ok, _ := c.Int("decoder_sparse_step"); ok && step != 1 {
		return fmt.Errorf("%w: decoder_sparse_step %d (only every block sparse is supported)", ErrUnsupportedArchitecture, step)
	}
	if l, _ := c.Params["mlp_only_layers"].([]any); len(l) > 0 {
		return fmt.Errorf("%w: mlp_only_layers (dense blocks in a mixture of experts)", ErrUnsupportedArchitecture)
	}
	ff, ok, err := c.Int("moe_intermediate_size")
	if err == nil && (!ok || ff < 1 || ff > MaxSize) {
		err = fmt.Errorf("%w: moe_intermediate_size must be positive", ErrBadConfig)
	}
	if err != nil {
		return err
	}
	c.expertFF = int(ff)
	if c.Architecture == "Qwen2MoeForCausalLM" {
		sf, ok, err := c.Int("shared_expert_intermediate_size")
		if err == nil && ok && (sf < 0 || sf > MaxSize) {
			err = fmt.Errorf("%w: shared_expert_intermediate_size %d", ErrBadConfig, sf)
		}
		if err != nil {
			return err
		}
		c.sharedFF = int(sf)
	}
	return nil
}

// MaxExperts bounds the expert count before per-expert tables are built.
const MaxExperts = 1 << 12

// ExpertsUsed is num_experts_per_tok of a mixture of experts (0 for dense models).
func (c *Config) ExpertsUsed() int {
	if c.experts == 0 {
		if _, err := c.Dims(); err != nil {
			return 0
		}
	}
	return c.expertsUsed
}

// Bool returns a boolean parameter, false when absent or null.
func (c *Config) Bool(key string) (bool, error) {
	switch v := c.Params[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	default:
		return false, fmt.Errorf("%w: %q must be true or false, got %v", ErrBadConfig, key, v)
	}
}

// Global lists the tensors outside the blocks: embeddings, final norm, lm_head.
func (d Dims) Global() []TensorSpec {
	return []TensorSpec{
		{Name: "model.embed_tokens.weight", Shape: []int64{int64(d.Vocab), int64(d.Hidden)}},
		{Name: "model.norm.weight", Shape: []int64{int64(d.Hidden)}},
		{Name: "lm_head.weight", Shape: []int64{int64(d.Vocab), int64(d.Hidden)}, Optional: d.Tied},
	}
}

// Block lists the tensors of decoder layer i in checkpoint order.
func (d Dims) Block(i int) []TensorSpec {
	p := "model.layers." + strconv.Itoa(i) + "."
	h, q, kv, ff := int64(d.Hidden), int64(d.Heads*d.HeadDim), int64(d.KVHeads*d.HeadDim), int64(d.Intermediate)
	var out []TensorSpec
	add := func(name string, shape ...int64) {
		out = append(out, TensorSpec{Name: p + name, Shape: shape})
	}
	linear := func(name string, rows, cols int64, bias bool) {
		add(name+".weight", rows, cols)
		if bias {
			add(name+".bias", rows)
		}
	}
	add("input_layernorm.weight", h)
	if d.Layout == LayoutPhi3 {
		add("self_attn.qkv_proj.weight", q+2*kv, h)
	} else {
		linear("self_attn.q_proj", q, h, d.AttentionBias)
		linear("self_attn.k_proj", kv, h, d.AttentionBias)
		linear("self_attn.v_proj", kv, h, d.AttentionBias)
	}
	linear("self_attn.o_proj", h, q, d.OutputBias)
	if d.QKNorm {
		add("self_attn.q_norm.weight", int64(d.HeadDim))
		add("self_attn.k_norm.weight", int64(d.HeadDim))
	}
	add("post_attention_layernorm.weight", h)
	e, eff := int64(d.Experts), int64(d.ExpertFF)
	switch d.Layout {
	case LayoutGemma:
		add("pre_feedforward_layernorm.weight", h)
		add("post_feedforward_layernorm.weight", h)
		fallthrough
	case LayoutLlama:
		linear("mlp.gate_proj", ff, h, d.MLPBias)
		linear("mlp.up_proj", ff, h, d.MLPBias)
		linear("mlp.down_proj", h, ff, d.MLPBias)
	case LayoutPhi3:
		add("mlp.gate_up_proj.weight", 2*ff, h)
		add("mlp.down_proj.weight", h, ff)
	case LayoutMixtral, LayoutQwenMoE:
		// Router, then per expert gate, down and up projections (w1, w2, w3 in Mixtral).
		module, names := "mlp.", [3]string{"gate_proj", "down_proj", "up_proj"}
		if d.Layout == LayoutMixtral {
			module, names = "block_sparse_moe.", [3]string{"w1", "w2", "w3"}
		}
		add(module+"gate.weight", e, h)
		for x := 0; x < d.Experts; x++ {
			ep := module + "experts." + strconv.Itoa(x) + "."
			add(ep+names[0]+".weight", eff, h)
			add(ep+names[1]+".weight", h, eff)
			add(ep+names[2]+".weight", eff, h)
		}
		if sf := int64(d.SharedExpertFF); sf > 0 {
			add("mlp.shared_expert.gate_proj.weight", sf, h)
			add("mlp.shared_expert.up_proj.weight", sf, h)
			add("mlp.shared_expert.down_proj.weight", h, sf)
			add("mlp.shared_expert_gate.weight", 1, h)
		}
	}
	return out
}

// IgnoredTensor reports buffers some checkpoints carry that no model uses (the converter drops
// them too).
func IgnoredTensor(name string) bool {
	return strings.HasSuffix(name, ".attention.masked_bias") || strings.HasSuffix(name, ".attention.bias") ||
		strings.HasSuffix(name, ".rotary_emb.inv_freq") || multimodalTensor(name)
}

// multimodalTensor reports the vision/audio towers and projectors of a multimodal checkpoint
// (Gemma3ForConditionalGeneration): TextModel.filter_tensors leaves them out of the text GGUF.
func multimodalTensor(name string) bool {
	for _, p := range []string{"mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.", "sound_encoder.", "sound_projection.", "speech_embeddings."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	for _, s := range []string{"visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "token2wav.", "code2wav.",
		"projector.", "pre_mm_projector_norm", "image_newline", "view_seperator", "patch_embed", "patch_embedding",
		"patch_merger.", "patch_merge_mlp.", "model.connector."} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// TrimPrefix removes the "language_model." part of multimodal exports ("language_model.model.…"
// in transformers 4, "model.language_model.…" in transformers 5), as the converter does.
func TrimPrefix(name string) string { return strings.ReplaceAll(name, "language_model.", "") }

// LanguageModelNames are the names a multimodal export may give the language-model tensor that
// a text model calls name ("model.layers.0.…"): transformers 5's "model.language_model.layers.0.…"
// and transformers 4's "language_model.model.layers.0.…" (TrimPrefix maps both back).
func LanguageModelNames(name string) []string {
	if rest, ok := strings.CutPrefix(name, "model."); ok {
		return []string{"model.language_model." + rest, "language_model." + name}
	}
	return []string{"language_model." + name}
}

// CheckTensors checks a checkpoint's tensors against config.json: every tensor the table expects
// is there with its shape, and there is no other (beyond ignored buffers). It looks only at the
// headers, so a config.json with absurd sizes fails here before anything is allocated for it.
func (d Dims) CheckTensors(ts []safetensors.Tensor) error {
	return d.checkTensors(ts, slices.Equal[[]int64])
}

// CheckGGUFTensors is CheckTensors for a GGUF file's tensors in PyTorch order, where leading
// 1s may be missing (gguf.cpp writes ggml_n_dims dimensions, dropping trailing ones).
func (d Dims) CheckGGUFTensors(ts []safetensors.Tensor) error {
	trim := func(s []int64) []int64 {
		for len(s) > 1 && s[0] == 1 {
			s = s[1:]
		}
		return s
	}
	return d.checkTensors(ts, func(a, b []int64) bool { return slices.Equal(trim(a), trim(b)) })
}

func (d Dims) checkTensors(ts []safetensors.Tensor, sameShape func(a, b []int64) bool) error {
	// A block has at least 6 tensors and an expert 3: more than that cannot match, and the
	// table below must not be built for them.
	if d.Layers > len(ts) || d.Layers*d.Experts*3 > len(ts) {
		return fmt.Errorf("%w: num_hidden_layers %d, but the weights hold only %d tensors", ErrBadConfig, d.Layers, len(ts))
	}
	have := make(map[string]safetensors.Tensor, len(ts))
	for _, t := range ts {
		if !IgnoredTensor(t.Name) {
			have[TrimPrefix(t.Name)] = t
		}
	}
	check := func(s TensorSpec) error {
		t, ok := have[s.Name]
		if !ok {
			if s.Optional {
				return nil
			}
			return fmt.Errorf("%w: the weights have no tensor %s, which config.json implies", ErrBadConfig, s.Name)
		}
		delete(have, s.Name)
		if !sameShape(t.Shape, s.Shape) {
			return fmt.Errorf("%w: tensor %s has shape %v, config.json implies %v", ErrBadConfig, t.Name, t.Shape, s.Shape)
		}
		return nil
	}
	for _, s := range d.Global() {
		if err := check(s); err != nil {
			return err
		}
	}
	for i := 0; i < d.Layers; i++ {
		for _, s := range d.Block(i) {
			if err := check(s); err != nil {
				return err
			}
		}
	}
	if len(have) > 0 {
		return fmt.Errorf("%w: tensor %s is not part of the model config.json describes (%d layers)", ErrBadConfig, firstName(have), d.Layers)
	}
	return nil
}

// firstName returns the smallest name, so that errors are reproducible.
func firstName(m map[string]safetensors.Tensor) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	return slices.Min(names)
}
