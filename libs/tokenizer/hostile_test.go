package tokenizer

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/sharedtest"
)

func checkBadInput(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !fault.BadInput(err) || !errors.Is(err, ErrMalformed) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v: want one line of malformed tokenizer mentioning %q", err, want)
	}
}

// TestHostileTokenIDs: an id in tokenizer.json sizes the id → token table; a huge one must be
// refused before that table is made.
func TestHostileTokenIDs(t *testing.T) {
	cases := []struct {
		name  string
		extra map[string]any
		want  string
	}{
		{"added id 2^31", added(1 << 31), `added token "<x>" has id 2147483648, outside [0, 65544)`},
		{"added id 2^63-1", added(math.MaxInt64), "has id 9223372036854775807"},
		{"added id 2^24", added(1 << 24), "has id 16777216"},
		{"vocab id 2^31", map[string]any{"model": map[string]any{"type": "BPE", "vocab": map[string]int{"a": 0, "b": 1 << 31}}}, `token "b" has id 2147483648`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTokenizerJSON(t, dir, nil, c.extra)
			var err error
			if n := sharedtest.Allocated(func() { _, err = LoadHF(filepath.Join(dir, "tokenizer.json")) }); n > 16<<20 {
				t.Errorf("allocated %d MiB", n>>20)
			}
			checkBadInput(t, err, c.want)
		})
	}
}

// TestVocabSizeBound: config.json's vocab_size pads the GGUF vocabulary; it is bounded before
// the padding is allocated.
func TestVocabSizeBound(t *testing.T) {
	dir := t.TempDir()
	writeTokenizerJSON(t, dir, nil, nil)
	var err error
	if n := sharedtest.Allocated(func() { _, err = GGUFMetadata(dir, GGUFOptions{Arch: "qwen2", VocabSize: 1e12, PreOverride: "gpt-2"}) }); n > 16<<20 {
		t.Errorf("allocated %d MiB", n>>20)
	}
	checkBadInput(t, err, "vocab_size 1000000000000 exceeds")
}

// TestTruncatedTokenizerModel: a tokenizer.model cut after some of its pieces must not be padded
// with placeholder tokens up to vocab_size; the whole file, and a vocabulary rounded up a little
// (the synthetic Qwen2 checkpoint: 8192 pieces, vocab_size 8256), still convert.
func TestTruncatedTokenizerModel(t *testing.T) {
	tiny := sharedtest.Path(t, "models", "tiny-llama")
	full, err := os.ReadFile(filepath.Join(tiny, "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		model []byte
		vocab int
		want  string // "" for success
	}{
		{"whole", full, 8192, ""},
		{"rounded up", full, 8256, ""},
		{"half", sharedtest.TruncatePieces(t, full, 4096), 8192, "tokenizer.model has 4096 pieces and 0 added tokens for vocab_size 8192: 4096 ids would be placeholders"},
		{"last 200 pieces cut", sharedtest.TruncatePieces(t, full, 7992), 8192, "200 ids would be placeholders"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "tokenizer.model"), string(c.model))
			copyFile(t, filepath.Join(tiny, "tokenizer_config.json"), filepath.Join(dir, "tokenizer_config.json"))
			_, err := GGUFMetadata(dir, GGUFOptions{Arch: "llama", VocabSize: c.vocab})
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkBadInput(t, err, c.want)
		})
	}
}

// TestSpecialTokenIDBound: special token ids are written as GGUF uint32; a larger one would be
// truncated into some other token.
func TestSpecialTokenIDBound(t *testing.T) {
	dir := t.TempDir()
	writeTokenizerJSON(t, dir, nil, nil)
	writeFile(t, filepath.Join(dir, "config.json"), `{"eos_token_id": 4294967298}`)
	_, err := GGUFMetadata(dir, GGUFOptions{Arch: "qwen2", PreOverride: "gpt-2"})
	checkBadInput(t, err, "special token type eos: 4294967298")
}
