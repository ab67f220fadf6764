package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/gguf/ggufdump"
	"quantfleet.dev/libs/sharedtest"
)

// The real tokenizers of shared/tokenizers against references made on the GPU machine by
// scripts/reference/arch_fixtures.py (testdata/real; the tests skip while a file is missing).

// realTokenizerDir unpacks shared/tokenizers/FAM into a directory a loader or the converter
// reads.
func realTokenizerDir(t *testing.T, fam string) string {
	t.Helper()
	src := filepath.Join(sharedtest.Dir(t), "tokenizers", fam)
	dir := t.TempDir()
	tj := readGzip(t, filepath.Join(src, "tokenizer.json.gz"))
	tc, err := os.ReadFile(filepath.Join(src, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tokenizer.json": tj, "tokenizer_config.json": tc} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func skipWithoutReference(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		t.Skipf("no reference %s yet: run scripts/reference/arch_fixtures.py on the GPU machine", path)
	}
}

// TestRealTokenizersMatchHF: Llama 3, Qwen 3 and Gemma 3 token ids on every document of
// eval.txt equal transformers' AutoTokenizer (and the tokenizers library) without special tokens.
func TestRealTokenizersMatchHF(t *testing.T) {
	docs := evalDocs(t)
	for _, fam := range []string{"llama3", "qwen3", "gemma3"} {
		t.Run(fam, func(t *testing.T) {
			dir := realTokenizerDir(t, fam)
			tok, err := LoadHF(filepath.Join(dir, "tokenizer.json"))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "real", fam+".eval_ids.json.gz")
			skipWithoutReference(t, path)
			var ref struct {
				Documents int     `json:"documents"`
				RawIDs    [][]int `json:"raw_ids"`
				HFIDs     [][]int `json:"hf_ids"`
			}
			readGzipJSON(t, path, &ref)
			if ref.Documents != len(docs) || len(ref.HFIDs) != len(docs) || len(ref.RawIDs) != len(docs) {
				t.Fatalf("reference has %d documents (%d id lists), eval.txt %d", ref.Documents, len(ref.HFIDs), len(docs))
			}
			bad := 0
			for i, d := range docs {
				got := tok.Encode(d)
				if !sameIDs(got, ref.HFIDs[i]) || !sameIDs(got, ref.RawIDs[i]) {
					if bad++; bad <= 3 {
						t.Errorf("document %d: %d ids, transformers %d, tokenizers %d", i, len(got), len(ref.HFIDs[i]), len(ref.RawIDs[i]))
					}
				}
			}
		})
	}
}

// TestLlama3GGUFMetadataMatchesConverter: every tokenizer.* key convert_hf_to_gguf.py
// --vocab-only writes for the real Llama 3 tokenizer (same config.json as the script's), in
// order and value. Qwen 3's are compared through the Qwen1.5-MoE-synth converter fixture.
func TestLlama3GGUFMetadataMatchesConverter(t *testing.T) {
	dir := realTokenizerDir(t, "llama3")
	path := filepath.Join("testdata", "real", "llama3.vocab.json")
	var tj struct {
		Model struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	n := len(tj.Model.Vocab) + 256
	cfg := fmt.Sprintf(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": %d, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2, "bos_token_id": 128000, "eos_token_id": 128009, "rms_norm_eps": 1e-5}`, n)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bos, eos := 128000, 128009
	kv, err := GGUFMetadata(dir, GGUFOptions{Arch: "llama", VocabSize: n, BOSTokenID: &bos, EOSTokenID: &eos})
	if err != nil {
		t.Fatal(err)
	}
	h := &gguf.Header{KV: kv}
	if err := h.Layout(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "vocab.gguf")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	w, err := gguf.NewWriter(f, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := ggufdump.DumpFile(out)
	if err != nil {
		t.Fatal(err)
	}
	skipWithoutReference(t, path) // the metadata has been built and written: that much runs here
	want, err := ggufdump.LoadDump(path)
	if err != nil {
		t.Fatal(err)
	}
	var ignore, wantKeys, gotKeys []string
	for _, e := range want.KV {
		if strings.HasPrefix(e.Key, "tokenizer.") {
			wantKeys = append(wantKeys, e.Key)
		} else {
			ignore = append(ignore, e.Key)
		}
	}
	for _, e := range got.KV {
		gotKeys = append(gotKeys, e.Key)
	}
	if diffs := ggufdump.CompareDump(want, got, ignore); len(diffs) > 0 {
		t.Errorf("%d differences:\n%s", len(diffs), strings.Join(diffs, "\n"))
	}
	if !slices.Equal(gotKeys, wantKeys) {
		t.Errorf("tokenizer keys in order\n got  %q\n want %q", gotKeys, wantKeys)
	}
}

// TestGGUFMetadataArchPaths: the architecture picks the converter's vocabulary path.
func TestGGUFMetadataArchPaths(t *testing.T) {
	tiny := filepath.Join(sharedtest.Dir(t), "models", "tiny-llama")
	spDir := t.TempDir()
	for _, n := range []string{"tokenizer.model", "tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(tiny, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(spDir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bpeDir := realTokenizerDir(t, "gemma3") // tokenizer.json only
	cases := []struct {
		arch, dir string
		err       error
		model     string
		spacePre  bool // tokenizer.ggml.add_space_prefix = false written last
	}{
		{"gemma2", spDir, nil, "llama", true},
		{"gemma3", spDir, nil, "llama", true},
		{"gemma3", bpeDir, ErrUnsupported, "", false},
		{"phi3", spDir, nil, "llama", false},
		{"mistral3", spDir, ErrUnsupported, "", false},
	}
	for _, c := range cases {
		kv, err := GGUFMetadata(c.dir, GGUFOptions{Arch: c.arch, VocabSize: 8192})
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s %s: error %v, want %v", c.arch, c.dir, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.arch, err)
		}
		if kv[0].Key != "tokenizer.ggml.model" || kv[0].Value != c.model {
			t.Errorf("%s: first key %s = %v", c.arch, kv[0].Key, kv[0].Value)
		}
		last := kv[len(kv)-1]
		if got := last.Key == "tokenizer.ggml.add_space_prefix" && last.Value == false; got != c.spacePre {
			t.Errorf("%s: last key %s = %v", c.arch, last.Key, last.Value)
		}
	}
}
