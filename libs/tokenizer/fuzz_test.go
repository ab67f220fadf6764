package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/sharedtest"
)

// realTokenizers reads the tokenizer.json files of ../shared: tiny-llama's and the gzipped
// Llama 3, Qwen 3 and Gemma 3 ones.
func realTokenizers(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	b, err := os.ReadFile(sharedtest.Path(tb, "models", "tiny-llama", "tokenizer.json"))
	if err != nil {
		tb.Fatal(err)
	}
	out["tiny-llama"] = b
	for _, name := range []string{"llama3", "qwen3", "gemma3"} {
		var raw json.RawMessage
		readGzipJSON(tb, sharedtest.Path(tb, "tokenizers", name, "tokenizer.json.gz"), &raw)
		out[name] = raw
	}
	return out
}

// parseHF is LoadHF's parsing without the file.
func parseHF(b []byte) (*hfTokenizer, error) {
	var f hfFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, ErrMalformed
	}
	return newHF(&f)
}

// TestRealTokenizersWithinBounds: the id bounds refuse none of the real vocabularies, nor
// their shrunk versions the fuzzer starts from.
func TestRealTokenizersWithinBounds(t *testing.T) {
	for name, b := range realTokenizers(t) {
		if _, err := parseHF(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := parseHF(shrink(t, b, 600)); err != nil {
			t.Errorf("%s shrunk: %v", name, err)
		}
	}
}

// shrink keeps a real tokenizer.json's pipeline but only the tokens with ids below keep, the
// merges among them and the added tokens (renumbered after them): a seed small enough for the
// fuzzer to mutate quickly.
func shrink(tb testing.TB, b []byte, keep int) []byte {
	tb.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		tb.Fatal(err)
	}
	model := doc["model"].(map[string]any)
	vocab := map[string]any{}
	for s, id := range model["vocab"].(map[string]any) {
		if id.(float64) < float64(keep) {
			vocab[s] = id
		}
	}
	var merges []any
	for _, m := range model["merges"].([]any) {
		var a, c string
		switch m := m.(type) {
		case string:
			a, c, _ = strings.Cut(m, " ")
		case []any:
			a, c = m[0].(string), m[1].(string)
		}
		if vocab[a] != nil && vocab[c] != nil && vocab[a+c] != nil {
			merges = append(merges, m)
		}
	}
	model["vocab"], model["merges"] = vocab, merges
	next := keep
	var added []any
	for _, a := range doc["added_tokens"].([]any) {
		a := a.(map[string]any)
		if a["id"].(float64) >= float64(keep) {
			a["id"] = next
			next++
		}
		added = append(added, a)
		if len(added) == 64 {
			break
		}
	}
	doc["added_tokens"] = added
	out, err := json.Marshal(doc)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// FuzzTokenizerJSON: no tokenizer.json panics the loader or encoding, and loading allocates in
// proportion to the file, whatever ids it names. Seeds: the real tokenizers, shrunk.
func FuzzTokenizerJSON(f *testing.F) {
	for _, b := range realTokenizers(f) {
		f.Add(shrink(f, b, 600))
	}
	dir := f.TempDir()
	writeTokenizerJSON(f, dir, nil, added(1<<31))
	if b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var tok *hfTokenizer
		var err error
		grew := sharedtest.Allocated(func() { tok, err = parseHF(data) })
		if limit := 16<<20 + 512*uint64(len(data)); grew > limit {
			t.Fatalf("allocated %d bytes for %d bytes of tokenizer.json", grew, len(data))
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		ids := tok.Encode("Hello, wörld! 123  <|x|>\n\t")
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("id %d outside the vocabulary of %d", id, tok.VocabSize())
			}
		}
		tok.Decode(append(ids, -1, tok.VocabSize()))
	})
}

// added is an added_tokens list holding one token with the given id.
func added(id uint64) map[string]any {
	return map[string]any{"added_tokens": []any{map[string]any{"id": id, "content": "<x>", "special": true}}}
}
