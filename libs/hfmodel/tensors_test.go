package hfmodel

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/safetensors"
)

// TestParseConfigBounds: sizes that do not fit GGUF's uint32 fields, or would make parsing
// allocate per layer without bound, are bad input with the key and value named.
func TestParseConfigBounds(t *testing.T) {
	base := `{"architectures":["LlamaForCausalLM"],"hidden_size":256,"num_attention_heads":8,`
	cases := []struct{ json, want string }{
		{base + `"vocab_size":1000000000000}`, `"vocab_size" = 1000000000000 does not fit a GGUF uint32 field`},
		{base + `"vocab_size":4294967297}`, `"vocab_size" = 4294967297 does not fit`},
		{base + `"intermediate_size":4294967296}`, `"intermediate_size" = 4294967296 does not fit`},
		{base + `"head_dim":2147483648}`, `"head_dim" = 2147483648 does not fit`},
		{base + `"num_key_value_heads":8589934600}`, `"num_key_value_heads" = 8589934600 does not fit`},
		{base + `"num_hidden_layers":100000}`, `"num_hidden_layers" = 100000 exceeds 65536`},
		{base + `"vocab_size":1e12}`, `"vocab_size" must be an integer`},
		{base + `"vocab_size":99999999999999999999999}`, `"vocab_size" must be an integer`},
		{`{"architectures":["LlamaForCausalLM"],"hidden_size":100,"num_attention_heads":8}`, "hidden_size 100 is not a multiple of num_attention_heads 8"},
	}
	for _, c := range cases {
		_, err := ParseConfig([]byte(c.json))
		if !errors.Is(err, ErrBadConfig) || !fault.BadInput(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want bad config mentioning %q", c.json, err, c.want)
		}
	}
}

// tensorsOf lists the tensors d implies, as a checkpoint header would.
func tensorsOf(d Dims) []safetensors.Tensor {
	var ts []safetensors.Tensor
	add := func(specs []TensorSpec) {
		for _, s := range specs {
			ts = append(ts, safetensors.Tensor{Name: s.Name, DType: safetensors.BF16, Shape: s.Shape})
		}
	}
	add(d.Global())
	for i := range d.Layers {
		add(d.Block(i))
	}
	return ts
}

func TestCheckTensors(t *testing.T) {
	d := Dims{Vocab: 64, Hidden: 16, Intermediate: 32, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 4}
	tied := d
	tied.Tied = true
	edit := func(f func(ts []safetensors.Tensor) []safetensors.Tensor) []safetensors.Tensor {
		return f(tensorsOf(d))
	}
	cases := []struct {
		name string
		dims Dims
		ts   []safetensors.Tensor
		want string // "" for no error
	}{
		{"matching", d, tensorsOf(d), ""},
		{"ignored buffer", d, edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.Tensor{Name: "model.layers.0.self_attn.rotary_emb.inv_freq", Shape: []int64{2}})
		}), ""},
		{"language_model prefix", d, edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts[0].Name = "language_model." + ts[0].Name
			return ts
		}), ""},
		{"tied without lm_head", tied, edit(func(ts []safetensors.Tensor) []safetensors.Tensor { return slices.Delete(ts, 2, 3) }), ""},
		{"untied without lm_head", d, edit(func(ts []safetensors.Tensor) []safetensors.Tensor { return slices.Delete(ts, 2, 3) }),
			"no tensor lm_head.weight"},
		{"layers beyond the tensors", Dims{Vocab: 64, Hidden: 16, Intermediate: 32, Layers: 1 << 30, Heads: 4, KVHeads: 2, HeadDim: 4},
			tensorsOf(d), "num_hidden_layers 1073741824, but the weights hold only 21 tensors"},
		{"zero rows", d, edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts[3].Shape = []int64{0, 16}
			return ts
		}), "tensor model.layers.0.input_layernorm.weight has shape [0 16], config.json implies [16]"},
		{"missing", d, edit(func(ts []safetensors.Tensor) []safetensors.Tensor { return ts[:len(ts)-1] }),
			"no tensor model.layers.1.mlp.down_proj.weight"},
		{"unexpected", d, edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.Tensor{Name: "model.layers.1.mlp.down_proj.bias", Shape: []int64{16}})
		}), "tensor model.layers.1.mlp.down_proj.bias is not part of the model config.json describes (2 layers)"},
	}
	for _, c := range cases {
		err := c.dims.CheckTensors(c.ts)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrBadConfig) || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
}
