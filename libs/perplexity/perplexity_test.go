package perplexity

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"quantfleet.dev/libs/sharedtest"
	"quantfleet.dev/libs/tokenizer"
	"quantfleet.dev/libs/transformer"
)

func TestSplitDocuments(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"one", []string{"one"}},
		{"a\n\f\nb", []string{"a", "b"}},
		{"\n\f\na\n\f\n\n\f\n", []string{"a"}},
		{" a b \n\f\n\t\n", []string{"a b"}},
		{"a\f\nb", []string{"a\f\nb"}},             // only the exact separator splits
		{"\x1c\x1dx\u00a0\u3000", []string{"x"}},   // Python's str.strip set
		{"a\n\n\f\n\nb", []string{"a", "b"}},       // separator inside blank lines
		{"\ufeffa", []string{"\ufeffa"}},           // BOM is not whitespace
		{"x\r\n\f\r\ny", []string{"x\r\n\f\r\ny"}}, // no newline translation
		{"p\n\f\n\f\n\f\nq", []string{"p", "q"}},   // "p", "\f", "q"; "\f" strips away
	}
	for _, c := range cases {
		got := SplitDocuments(c.in)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("SplitDocuments(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestLoadDocuments(t *testing.T) {
	cases := []struct {
		file    string
		want    []string
		wantErr error
		errText string
	}{
		{"docs.txt", []string{"first doc", "second\tdoc", "third"}, nil, ""},
		{"docs.jsonl", []string{"alpha", "beta", "gamma\n\fdelta"}, nil, ""},
		{"notext.jsonl", nil, ErrBadData, "line 2"},
		{"badutf8.txt", nil, ErrBadData, "byte 2"},
		{"missing.txt", nil, os.ErrNotExist, ""},
	}
	for _, c := range cases {
		got, err := LoadDocuments(filepath.Join("testdata", c.file))
		if c.wantErr != nil {
			if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.errText) {
				t.Errorf("%s: error %v, want %v containing %q", c.file, err, c.wantErr, c.errText)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %q, %v; want %q", c.file, got, err, c.want)
		}
	}
}

// runeEncoder encodes each rune as its code point.
type runeEncoder struct{ bos int }

func (e runeEncoder) Encode(s string) []int {
	var ids []int
	for _, r := range s {
		ids = append(ids, int(r))
	}
	return ids
}
func (e runeEncoder) BOS() int { return e.bos }

func TestWindowsAndSamples(t *testing.T) {
	enc := runeEncoder{bos: 1}
	docs := []string{"abc", "de"} // stream: 1 a b c 1 d e (7 tokens)
	stream := []int{1, 'a', 'b', 'c', 1, 'd', 'e'}
	ids, err := Tokens(enc, docs)
	if err != nil || !slices.Equal(ids, stream) {
		t.Fatalf("Tokens = %v, %v", ids, err)
	}
	w, err := Windows(enc, docs, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]int{stream[0:4], stream[3:7]}; !reflect.DeepEqual(w, want) {
		t.Fatalf("Windows = %v, want %v", w, want)
	}
	if _, err := Windows(enc, docs, 3, 3); !errors.Is(err, ErrNotEnoughTokens) || !strings.Contains(err.Error(), "2 windows fit") {
		t.Fatalf("3 windows of 3: error %v", err)
	}
	s, err := Samples(enc, docs, 3, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]int{stream[0:3], stream[3:6]}; !reflect.DeepEqual(s, want) {
		t.Fatalf("Samples = %v, want %v", s, want)
	}
	if s, err = Samples(enc, docs, 3, 1, 1); err != nil || !reflect.DeepEqual(s, [][]int{stream[3:6]}) {
		t.Fatalf("Samples from 1 = %v, %v, want %v", s, err, [][]int{stream[3:6]})
	}
	if _, err := Samples(enc, docs, 4, 0, 2); !errors.Is(err, ErrNotEnoughTokens) {
		t.Fatalf("2 samples of 4: error %v", err)
	}
	if _, err := Samples(enc, docs, 3, 1, 2); !errors.Is(err, ErrNotEnoughTokens) {
		t.Fatalf("samples 1..2 of 3: error %v", err)
	}
	if _, err := Tokens(runeEncoder{bos: -1}, docs); err == nil {
		t.Fatal("no error without BOS")
	}
	if MaxWindows(7, 3) != 2 || MaxWindows(0, 3) != 0 || MaxWindows(604228, 512) != 1180 {
		t.Fatal("MaxWindows")
	}
}

// reference is ../transformer/testdata/tinyllama_ref.json (transformers 5.17, see the
// README there).
type reference struct {
	Ctx          int       `json:"ctx"`
	Windows      int       `json:"windows"`
	Documents    int       `json:"documents"`
	TotalTokens  int       `json:"total_tokens"`
	SHA256       string    `json:"sha256_int32le_first_needed"`
	WindowIDs    [][]int   `json:"window_ids_0_3"`
	WindowNLLSum []float64 `json:"window_nll_sum"`
	PPL          float64   `json:"ppl"`
	PPL03        float64   `json:"ppl_windows_0_3"`
}

func setup(t *testing.T) (*transformer.Model, [][]int, *reference) {
	shared := sharedtest.Dir(t)
	var ref reference
	raw, err := os.ReadFile("../transformer/testdata/tinyllama_ref.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(shared, "models", "tiny-llama")
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := LoadDocuments(filepath.Join(shared, "data", "eval.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != ref.Documents {
		t.Fatalf("%d documents, reference has %d", len(docs), ref.Documents)
	}
	ids, err := Tokens(tok, docs)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != ref.TotalTokens {
		t.Fatalf("%d tokens, reference has %d", len(ids), ref.TotalTokens)
	}
	windows, err := WindowsOf(ids, ref.Ctx, ref.Windows)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, id := range ids[:ref.Windows*ref.Ctx+1] {
		h.Write(binary.LittleEndian.AppendUint32(nil, uint32(int32(id))))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != ref.SHA256 {
		t.Fatalf("token stream sha256 %s, reference %s", got, ref.SHA256)
	}
	if !reflect.DeepEqual(windows[:4], ref.WindowIDs) {
		t.Fatal("windows 0..3 differ from the reference")
	}
	m, err := transformer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, windows, &ref
}

// TestEvaluateFirstWindows runs windows 0..3 of eval.txt (ctx 512) and compares with
// PyTorch.
func TestEvaluateFirstWindows(t *testing.T) {
	m, windows, ref := setup(t)
	var calls []int
	r, err := EvaluateWith(context.Background(), m, windows[:4], Options{BatchWindows: 3, Progress: func(done, total int) {
		if total != 4 {
			t.Errorf("progress total %d", total)
		}
		calls = append(calls, done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(calls, []int{3, 4}) {
		t.Errorf("progress calls %v, want [3 4]", calls)
	}
	for i, v := range r.WindowNLL {
		want := ref.WindowNLLSum[i] / float64(ref.Ctx)
		if math.Abs(v-want) > 2e-5 {
			t.Errorf("window %d: mean NLL %.7f, reference %.7f", i, v, want)
		}
	}
	if math.Abs(r.Perplexity-ref.PPL03) > 1e-3 || r.Tokens != 4*ref.Ctx {
		t.Errorf("perplexity %.6f over %d tokens, reference %.6f", r.Perplexity, r.Tokens, ref.PPL03)
	}
	t.Logf("windows 0..3: perplexity %.6f (PyTorch %.6f)", r.Perplexity, ref.PPL03)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Evaluate(ctx, m, windows[:1], nil); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: error %v", err)
	}
}

// TestEvaluateFull is the whole protocol (400 windows of 512): a few minutes on 2 cores,
// so it runs only with QF_LONG=1.
func TestEvaluateFull(t *testing.T) {
	if os.Getenv("QF_LONG") == "" {
		t.Skip("set QF_LONG=1 to run the 400-window evaluation")
	}
	m, windows, ref := setup(t)
	r, err := EvaluateWith(context.Background(), m, windows, Options{})
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i, v := range r.WindowNLL {
		worst = max(worst, math.Abs(v-ref.WindowNLLSum[i]/float64(ref.Ctx)))
	}
	t.Logf("perplexity %.5f (PyTorch %.5f), worst window mean-NLL difference %.2g", r.Perplexity, ref.PPL, worst)
	if math.Abs(r.Perplexity-17.628) > 0.02 || math.Abs(r.Perplexity-ref.PPL) > 1e-3 || worst > 5e-5 {
		t.Fatalf("perplexity %.5f, want 17.628 ± 0.02 (PyTorch %.5f)", r.Perplexity, ref.PPL)
	}
}
