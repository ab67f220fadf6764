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
	QKNorm                              bool // Qwen3's per-head q_norm/k_norm
	Tied                                bool // lm_head may be absent (tie_word_embeddings)
}

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
	}
	return d, nil
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
	linear("self_attn.q_proj", q, h, d.AttentionBias)
	linear("self_attn.k_proj", kv, h, d.AttentionBias)
	linear("self_attn.v_proj", kv, h, d.AttentionBias)
	linear("self_attn.o_proj", h, q, d.OutputBias)
	if d.QKNorm {
		add("self_attn.q_norm.weight", int64(d.HeadDim))
		add("self_attn.k_norm.weight", int64(d.HeadDim))
	}
	add("post_attention_layernorm.weight", h)
	linear("mlp.gate_proj", ff, h, d.MLPBias)
	linear("mlp.up_proj", ff, h, d.MLPBias)
	linear("mlp.down_proj", h, ff, d.MLPBias)
	return out
}

// IgnoredTensor reports buffers some checkpoints carry that no model uses (the converter drops
// them too).
func IgnoredTensor(name string) bool {
	return strings.HasSuffix(name, ".attention.masked_bias") || strings.HasSuffix(name, ".attention.bias") ||
		strings.HasSuffix(name, ".rotary_emb.inv_freq")
}

// TrimPrefix removes the "language_model." prefix of multimodal exports, as the converter does.
func TrimPrefix(name string) string { return strings.TrimPrefix(name, "language_model.") }

// CheckTensors checks a checkpoint's tensors against config.json: every tensor the table expects
// is there with its shape, and there is no other (beyond ignored buffers). It looks only at the
// headers, so a config.json with absurd sizes fails here before anything is allocated for it.
func (d Dims) CheckTensors(ts []safetensors.Tensor) error {
	// A block has at least 9 tensors: more layers than tensors cannot match, and the table
	// below must not be built for them.
	if d.Layers > len(ts) {
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
		if !slices.Equal(t.Shape, s.Shape) {
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
