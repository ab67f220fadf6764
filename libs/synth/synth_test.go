package synth

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/hfmodel"
)

// assets finds GPT-2's tokenizer in libs/tokenizer/testdata and tiny-llama in ../shared (or in
// $QUANTFLEET_SYNTH_TINY, for a machine without ../shared).
func assets(t *testing.T) Assets {
	t.Helper()
	tiny := os.Getenv("QUANTFLEET_SYNTH_TINY")
	if tiny == "" {
		dir, err := filepath.Abs(".")
		if err != nil {
			t.Fatal(err)
		}
		for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
				tiny = filepath.Join(filepath.Dir(d), "shared", "models", "tiny-llama")
				break
			}
		}
	}
	if _, err := os.Stat(filepath.Join(tiny, "tokenizer.model")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tiny-llama tokenizer missing: %v", err)
		}
		t.Skipf("tiny-llama tokenizer missing: %v", err)
	}
	a, err := LoadAssets(filepath.Join("..", "tokenizer", "testdata", "gpt2", "tokenizer.json.gz"), tiny)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.LoadQwen3(filepath.Join(tiny, "..", "..", "tokenizers", "qwen3")); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestWrite writes every checkpoint and opens it. With $QUANTFLEET_SYNTH_OUT set it writes
// there and keeps them (that is how the reference conversions were fed).
func TestWrite(t *testing.T) {
	a := assets(t)
	if len(weightDigests) != len(Names()) {
		t.Fatalf("%d digests for %d checkpoints", len(weightDigests), len(Names()))
	}
	out := os.Getenv("QUANTFLEET_SYNTH_OUT")
	if out == "" {
		out = t.TempDir()
	}
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			dir, err := Write(out, name, a)
			if err != nil {
				t.Fatal(err)
			}
			checkDigest(t, dir, name)
			m, err := hfmodel.OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			var s spec
			for _, x := range specs {
				if x.name == name {
					s = x
				}
			}
			want := s.tensors()
			if len(m.Tensors) != len(want) {
				t.Fatalf("%d tensors, want %d", len(m.Tensors), len(want))
			}
			c := m.Config
			if c.HiddenSize != s.hidden || c.NumLayers != s.layers || c.VocabSize != s.vocab || c.RopeDim() != s.headDimOrDefault() {
				t.Errorf("config %+v does not describe %+v", c, s)
			}
			for _, w := range want {
				got, ok := m.Lookup(w.name)
				if !ok {
					t.Fatalf("tensor %s missing", w.name)
				}
				if got.DType != s.dtype || len(got.Shape) != len(w.shape) || got.Shape[0] != w.shape[0] {
					t.Errorf("tensor %s: %s %v, want %s %v", w.name, got.DType, got.Shape, s.dtype, w.shape)
				}
			}
			if s.shards > 1 {
				if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err != nil {
					t.Error(err)
				}
				files := map[string]bool{}
				for _, t := range m.Tensors {
					files[t.File] = true
				}
				if len(files) != s.shards {
					t.Errorf("tensors in %d files, want %d", len(files), s.shards)
				}
			}
		})
	}
}

func TestEncodeRounding(t *testing.T) {
	cases := []struct {
		in   float32
		bf16 uint16
		f16  uint16
	}{
		{1, 0x3f80, 0x3c00},
		{65520, 0x4780, 0x7c00},        // f16: tie rounds to even, which is infinity
		{65519, 0x4780, 0x7bff},        // f16 max
		{1 + 1.0/2048, 0x3f80, 0x3c00}, // f16 tie to even (down)
		{1 + 3.0/2048, 0x3f80, 0x3c02}, // f16 tie to even (up)
		{1 + 1.0/256, 0x3f80, 0x3c04},  // bf16 tie to even (down)
		{1 + 3.0/256, 0x3f82, 0x3c0c},  // bf16 tie to even (up)
	}
	for _, c := range cases {
		b := encode("BF16", []float32{c.in})
		h := encode("F16", []float32{c.in})
		if got := uint16(b[0]) | uint16(b[1])<<8; got != c.bf16 {
			t.Errorf("bf16(%v) = %#04x, want %#04x", c.in, got, c.bf16)
		}
		if got := uint16(h[0]) | uint16(h[1])<<8; got != c.f16 {
			t.Errorf("f16(%v) = %#04x, want %#04x", c.in, got, c.f16)
		}
	}
}

// weightDigests pin the generated weights: the reference dumps in libs/convert/testdata/converter
// were made from checkpoints with exactly these bytes (the device machine reported the same
// digests), so a generator change must come with new reference dumps. The Gemma, Phi-3 and MoE
// digests were computed here; the fixture script prints the device machine's for comparison.
var weightDigests = map[string]string{
	"Qwen2-Synth-Instruct":         "296dac521bee705e564cbd97f57bae80c0c72e539b48afefe33fd012e9cb2d4b",
	"Qwen3-Synth-v1.5-Chat":        "c3d37c8516a477f48a1754d58da4316246261f8c7f6a8fb1f405d0d0cc67673c",
	"mistral-synth":                "a7f376c39a128dea287ca62d4ce7f7af411234249d28891536b9244abed949ba",
	"llama-synth-linear-f16":       "577f02bf552c9eb8c79fd6c59c27ce4a17cfe2cbe8db3926c024a2fd59d3def1",
	"llama-synth-3.2-f32":          "ead256f763dc67c9a8705d92724401a5583701b250f9164b48b467fd7f216bdb",
	"llama-synth-sharded":          "9b894143abfa5ec9ce87d92bf0c5702faa3cdb4a5bb31195e80f2cc711b976be",
	"gemma-2-synth-it":             "6cb449d0ea02b723c196523a0958bc20e18f8761140402ce01d83de552615483",
	"gemma-3-synth-it":             "2d40880093e087f6b023fb20d95582eb74925141ce763da7c79e6b54c940b287",
	"gemma-3-synth-mm":             "8dbe72886f3ba499583d5d117bd35fc3f8c0d44286f7727b17edb6961e82469d",
	"Phi-3-synth-128k-instruct":    "3693a250f38f789aa3497d8766c9fe8218e43eb4d0a9105efc6ced58dcca739d",
	"Phi-3-mini-synth-4k-instruct": "9a5c80b1346e04ca04c641b7be13ffb9d09b9d9dcd10044c11edce1ea304a491", // no reference dumps (AWQ tests)
	"Mixtral-synth-8x":             "956630f52a5fc3bef910d9b6f204bbd25cfbb7212b193d1f5a38f00ae94ec38f",
	"Qwen3-MoE-synth":              "7d834ea92b4c9029ffa82624d60bf49c0541e78a85fb8418a750d9ad9d5e1398",
	"Qwen1.5-MoE-synth":            "558697f86f39bf2e8a60fbb9baee86196744b9a5f5de4be1f066fa0419359584",
}

func checkDigest(t *testing.T, dir, name string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, f := range files { // Glob sorts
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != weightDigests[name] {
		t.Errorf("weights sha256 %s, want %s: the reference dumps no longer describe this checkpoint", got, weightDigests[name])
	}
}
