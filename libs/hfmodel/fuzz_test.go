package hfmodel

import (
	"errors"
	"os"
	"testing"

	"quantfleet.dev/libs/sharedtest"
)

// FuzzParseConfig: no config.json panics the parser or the tensor check, none is accepted with a
// size beyond the bounds, and neither allocates more than the input explains, whatever sizes it
// names. Seeds are tiny-llama's config.json and variants of the supported architectures.
func FuzzParseConfig(f *testing.F) {
	if b, err := os.ReadFile(sharedtest.Path(f, "models", "tiny-llama", ConfigFile)); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		`{"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":64,"num_hidden_layers":2,"intermediate_size":128,"tie_word_embeddings":true}`,
		`{"model_type":"qwen3","hidden_size":64,"num_attention_heads":4,"head_dim":null,"attention_bias":true,"text_config":{"vocab_size":99}}`,
		`{"model_type":"mistral","num_key_value_heads":null,"sliding_window":null,"rope_scaling":{"type":"yarn","factor":4}}`,
		`{"architectures":["LlamaForCausalLM"],"vocab_size":1e12,"num_hidden_layers":4294967297,"head_dim":2147483648}`,
	} {
		f.Add([]byte(s))
	}
	// The tensors of a small model: configs must be checked against them without sizing anything
	// by their own numbers.
	small := Dims{Vocab: 32, Hidden: 16, Intermediate: 32, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 4}
	ts := tensorsOf(small)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c *Config
		var err error
		grew := sharedtest.Allocated(func() {
			if c, err = ParseConfig(data); err != nil {
				return
			}
			var d Dims
			if d, err = c.Dims(); err == nil {
				err = d.CheckTensors(ts)
			}
		})
		if limit := 1<<20 + 256*uint64(len(data)); grew > limit {
			t.Fatalf("allocated %d bytes for %d bytes of config.json", grew, len(data))
		}
		if err != nil && !errors.Is(err, ErrBadConfig) && !errors.Is(err, ErrUnsupportedArchitecture) {
			t.Fatalf("unclassified error %v", err)
		}
		if c == nil {
			return
		}
		for _, v := range []int{c.HiddenSize, c.IntermediateSize, c.NumHeads, c.NumKVHeads, c.VocabSize, c.MaxPositionEmbeddings} {
			if v <= 0 || v > MaxSize {
				t.Fatalf("accepted size %d", v)
			}
		}
		if c.NumLayers > MaxLayers || c.HeadDim < 0 || c.HeadDim > MaxSize {
			t.Fatalf("accepted %d layers, head_dim %d", c.NumLayers, c.HeadDim)
		}
	})
}
