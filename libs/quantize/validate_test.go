package quantize

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"quantfleet.dev/libs/convert"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/sharedtest"
)

// writeZeroGGUF writes h with all-zero tensor data (valid blocks of every type).
func writeZeroGGUF(t *testing.T, h *gguf.Header) string {
	t.Helper()
	if err := h.Layout(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "x.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := gguf.NewWriter(f, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range h.Tensors {
		if err := w.WriteTensor(ti.Name, make([]byte, ti.Size())); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestValidateGGUFHparams: the read-back refuses a file whose hparams disagree with its tensors,
// however sound each tensor is on its own.
func TestValidateGGUFHparams(t *testing.T) {
	dir := sharedtest.Path(t, "models", "tiny-llama")
	m, err := hfmodel.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	plan, err := convert.NewPlan(m, dir, "Q4_0", convert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(h *gguf.Header)
		want string // "" for a valid file
	}{
		{"as planned", func(*gguf.Header) {}, ""},
		{"block_count", func(h *gguf.Header) { h.Set("llama.block_count", uint32(5)) }, "model.layers.5.input_layernorm.weight is not part"},
		{"feed_forward_length", func(h *gguf.Header) { h.Set("llama.feed_forward_length", uint32(2048)) }, "mlp.gate_proj.weight has shape [1536 512]"},
		{"vocabulary vs token_embd", func(h *gguf.Header) {
			for _, k := range []string{"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "llama.vocab_size"} {
				v, _ := h.Get(k)
				switch v := v.(type) {
				case []string:
					h.Set(k, v[:8000])
				case []float32:
					h.Set(k, v[:8000])
				case []int32:
					h.Set(k, v[:8000])
				case uint32:
					h.Set(k, uint32(8000))
				}
			}
		}, "model.embed_tokens.weight has shape [8192 512], config.json implies [8000 512]"},
		{"missing block tensor", func(h *gguf.Header) {
			h.Tensors = slices.DeleteFunc(h.Tensors, func(t gguf.TensorInfo) bool { return t.Name == "blk.3.ffn_up.weight" })
		}, "no tensor model.layers.3.mlp.up_proj.weight"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &gguf.Header{KV: slices.Clone(plan.Header.KV), Tensors: slices.Clone(plan.Header.Tensors)}
			c.edit(h)
			err := ValidateGGUF(writeZeroGGUF(t, h), nil, nil)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidOutput) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v: want invalid output mentioning %q", err, c.want)
			}
		})
	}
}
