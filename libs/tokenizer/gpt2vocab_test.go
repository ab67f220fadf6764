package tokenizer

import (
	"compress/gzip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// gpt2Dir writes testdata/gpt2/tokenizer.json.gz (GPT-2's tokenizer.json rebuilt from llama.cpp's
// models/ggml-vocab-gpt-2.gguf, see testdata/gpt2/README.md) to a temporary directory.
func gpt2Dir(t testing.TB) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "gpt2", "tokenizer.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// llamaVocabTests reads llama.cpp's tokenizer test vectors: texts separated by
// "\n__ggml_vocab_test__\n" and, per text, one line of " id id ..." (Hugging Face's
// encode(text, add_special_tokens=False)).
func llamaVocabTests(t *testing.T, inp, out string) (texts []string, ids [][]int) {
	t.Helper()
	bi, err := os.ReadFile(inp)
	if err != nil {
		t.Fatal(err)
	}
	bo, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	texts = strings.Split(string(bi), "\n__ggml_vocab_test__\n")
	lines := strings.Split(string(bo), "\n")
	if texts[len(texts)-1] != "" || lines[len(lines)-1] != "" || len(texts) != len(lines) {
		t.Fatalf("%s and %s do not pair up: %d texts, %d lines", inp, out, len(texts), len(lines))
	}
	texts, lines = texts[:len(texts)-1], lines[:len(lines)-1]
	for _, l := range lines {
		var row []int
		for _, f := range strings.Fields(l) {
			id, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s: %q", out, l)
			}
			row = append(row, id)
		}
		ids = append(ids, row)
	}
	return texts, ids
}

func TestGPT2VocabVectors(t *testing.T) {
	dir := gpt2Dir(t)
	tok, err := loadHF(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	texts, want := llamaVocabTests(t, filepath.Join("testdata", "gpt2", "ggml-vocab-gpt-2.gguf.inp"),
		filepath.Join("testdata", "gpt2", "ggml-vocab-gpt-2.gguf.out"))
	if len(texts) < 40 {
		t.Fatalf("only %d test texts", len(texts))
	}
	for i, text := range texts {
		got := tok.Encode(text)
		if !sameIDs(got, want[i]) {
			t.Errorf("text %d %q:\n got  %v\n want %v", i, text, got, want[i])
			continue
		}
		// Byte-level BPE is lossless.
		if dec := tok.Decode(got); dec != text && strings.ToValidUTF8(text, "\uFFFD") == text {
			t.Errorf("text %d: decode %q, want %q", i, dec, text)
		}
	}
	// The converter's check string must hash to openai-community/gpt2's chkhsh, by the hash itself,
	// not by the pre-tokenizer signature fallback.
	if h := preHash(tok); h != "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454" {
		t.Errorf("chkhsh %s is not GPT-2's", h)
	}
	if pre, err := detectPre(tok, filepath.Join(dir, "tokenizer.json")); err != nil || pre != "gpt-2" {
		t.Errorf("detectPre = %q, %v; want gpt-2", pre, err)
	}
	if !reflect.DeepEqual(tok.Encode("<|endoftext|>"), []int{50256}) {
		t.Errorf("<|endoftext|> encodes to %v, want [50256]", tok.Encode("<|endoftext|>"))
	}
}
