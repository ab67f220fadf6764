package sentencepiece

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"quantfleet.dev/libs/sharedtest"
)

func TestLoadTinyLlama(t *testing.T) {
	m, err := Load(sharedtest.Path(t, "models", "tiny-llama", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[PieceType]int{}
	for _, p := range m.Pieces {
		counts[p.Type]++
	}
	want := map[PieceType]int{Normal: 7933, Unknown: 1, Control: 2, Byte: 256}
	if len(m.Pieces) != 8192 || !reflect.DeepEqual(counts, want) {
		t.Errorf("%d pieces, types %v; want 8192, %v", len(m.Pieces), counts, want)
	}
	tr := m.Trainer
	if tr.ModelType != BPE || !tr.ByteFallback || tr.UnkID != 0 || tr.BOSID != 1 || tr.EOSID != 2 || tr.PadID != -1 || tr.VocabSize != 8192 {
		t.Errorf("trainer spec %+v", tr)
	}
	n := m.Normalizer
	if n.Name != "identity" || len(n.PrecompiledCharsmap) != 0 || !n.AddDummyPrefix || n.RemoveExtraWhitespaces || !n.EscapeWhitespaces {
		t.Errorf("normalizer spec %+v", n)
	}
	if p := m.Pieces[259]; p.Piece != "▁▁" || p.Score != 0 || !math.Signbit(float64(p.Score)) {
		t.Errorf("piece 259 = %+v, want ▁▁ with score -0", p)
	}
	if p := m.Pieces[3]; p.Piece != "<0x00>" || p.Type != Byte {
		t.Errorf("piece 3 = %+v", p)
	}
}

// TestEncodeTinyLlama compares with Python SentencePiece (testdata/tiny_llama_vectors.json, taken from
// the tokenizer package's reference ids).
func TestEncodeTinyLlama(t *testing.T) {
	m, err := Load(sharedtest.Path(t, "models", "tiny-llama", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProcessor(m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("testdata", "tiny_llama_vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vec struct {
		Cases []struct {
			Text    string `json:"text"`
			IDs     []int  `json:"ids"`
			Decoded string `json:"decoded"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &vec); err != nil {
		t.Fatal(err)
	}
	if len(vec.Cases) < 20 {
		t.Fatalf("%d vectors", len(vec.Cases))
	}
	for _, c := range vec.Cases {
		got := p.Encode(c.Text)
		if !(len(got) == 0 && len(c.IDs) == 0) && !reflect.DeepEqual(got, c.IDs) {
			t.Errorf("Encode(%.40q) = %.80v, want %.80v", c.Text, got, c.IDs)
		}
		if d := p.Decode(c.IDs); d != c.Decoded {
			t.Errorf("Decode(%.40v) = %.40q, want %.40q", c.IDs, d, c.Decoded)
		}
	}
	if p.BOSID() != 1 || p.EOSID() != 2 || p.UnkID() != 0 || p.VocabSize() != 8192 {
		t.Errorf("BOS %d EOS %d UNK %d vocab %d", p.BOSID(), p.EOSID(), p.UnkID(), p.VocabSize())
	}
	if p.PieceToID("▁▁") != 259 || p.PieceToID("no such piece") != 0 || p.IDToPiece(1) != "<s>" || p.IDToPiece(99999) != "" {
		t.Error("PieceToID/IDToPiece")
	}
}

// model is a hand-built ModelProto for the synthetic tests.
type model struct {
	pieces     []Piece
	trainer    []byte
	normalizer []byte
}

func (m model) bytes() []byte {
	var b []byte
	for _, p := range m.pieces {
		var pb []byte
		pb = protowire.AppendTag(pb, 1, protowire.BytesType)
		pb = protowire.AppendString(pb, p.Piece)
		pb = protowire.AppendTag(pb, 2, protowire.Fixed32Type)
		pb = protowire.AppendFixed32(pb, math.Float32bits(p.Score))
		if p.Type != Normal {
			pb = protowire.AppendTag(pb, 3, protowire.VarintType)
			pb = protowire.AppendVarint(pb, uint64(p.Type))
		}
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, pb)
	}
	if m.trainer != nil {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, m.trainer)
	}
	if m.normalizer != nil {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, m.normalizer)
	}
	return b
}

func varintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

var bpeTrainer = varintField(nil, 3, uint64(BPE))

// smallPieces: a, b, c, ▁, ab, ▁ab, abc (scores rank the merges), a user-defined <u> and the reserved ones.
func smallPieces() []Piece {
	return []Piece{
		{"<unk>", 0, Unknown}, {"<s>", 0, Control}, {"</s>", 0, Control},
		{"▁", -1, Normal}, {"a", -2, Normal}, {"b", -3, Normal}, {"c", -4, Normal},
		{"ab", -0.5, Normal}, {"▁ab", -0.6, Normal}, {"abc", -0.7, Normal}, {"<u>", 0, UserDefined},
	}
}

func TestSyntheticEncode(t *testing.T) {
	remove := varintField(nil, 4, 1) // remove_extra_whitespaces = true (also the proto default)
	noPrefix := varintField(varintField(nil, 3, 0), 4, 0)
	suffix := varintField(bpeTrainer, 24, 1) // treat_whitespace_as_suffix
	tests := []struct {
		name       string
		trainer    []byte
		normalizer []byte
		in         string
		want       []int
		norm       string
	}{
		// "▁ab" (-0.6) loses to "ab" (-0.5) first, then ▁+ab merges.
		{"merge by score", bpeTrainer, nil, "ab", []int{8}, "▁ab"},
		{"leftmost on ties", bpeTrainer, nil, "abab", []int{8, 7}, "▁abab"},
		{"higher score first", bpeTrainer, nil, "abc", []int{8, 6}, "▁abc"}, // ▁ab (-0.6) wins over abc (-0.7)
		{"unknown without byte fallback", bpeTrainer, nil, "x", []int{3, 0}, "▁x"},
		{"user-defined symbol kept whole", bpeTrainer, nil, "a<u>b", []int{3, 4, 10, 5}, "▁a<u>b"},
		{"extra whitespace removed", bpeTrainer, remove, "  ab   ab  ", []int{8, 8}, "▁ab▁ab"},
		{"whitespace kept", bpeTrainer, varintField(nil, 4, 0), " ab", []int{3, 8}, "▁▁ab"},
		{"no dummy prefix", bpeTrainer, noPrefix, "ab c", []int{7, 3, 6}, "ab▁c"},
		{"whitespace as suffix", suffix, nil, "ab", []int{7, 3}, "ab▁"},
		{"empty", bpeTrainer, nil, "", nil, ""},
		{"malformed utf-8 becomes U+FFFD", bpeTrainer, nil, "a\xff", []int{3, 4, 0}, "▁a\uFFFD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(model{pieces: smallPieces(), trainer: tt.trainer, normalizer: tt.normalizer}.bytes())
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewProcessor(m)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Normalize(tt.in); got != tt.norm {
				t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.norm)
			}
			if got := p.Encode(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Encode(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestByteFallbackAndDecode(t *testing.T) {
	pieces := smallPieces()
	for b := 0; b < 256; b++ {
		pieces = append(pieces, Piece{Piece: "<0x" + strings.ToUpper(string("0123456789abcdef"[b>>4])+string("0123456789abcdef"[b&15])) + ">", Type: Byte})
	}
	m, err := Parse(model{pieces: pieces, trainer: varintField(bpeTrainer, 35, 1)}.bytes())
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProcessor(m)
	if err != nil {
		t.Fatal(err)
	}
	byteID := func(b byte) int { return 11 + int(b) }
	got := p.Encode("aé")
	want := []int{3, 4, byteID(0xC3), byteID(0xA9)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Encode = %v, want %v", got, want)
	}
	for _, tt := range []struct {
		ids  []int
		want string
	}{
		{want, "aé"},
		{[]int{1, 8, 3, 4, 2}, "ab a"},        // control pieces vanish; only the first ▁ is the dummy prefix
		{[]int{byteID(0xC3), 8}, "\uFFFD ab"}, // a lone lead byte
		{[]int{0, 7}, " \u2047 ab"},           // <unk> has the unk surface
		{[]int{byteID(0xE2), byteID(0x82), byteID(0xAC)}, "€"},
	} {
		if got := p.Decode(tt.ids); got != tt.want {
			t.Errorf("Decode(%v) = %q, want %q", tt.ids, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"truncated tag", []byte{0x0a}},
		{"truncated length", []byte{0x0a, 0x05, 'a'}},
		{"bad piece", []byte{0x0a, 0x02, 0x15, 0x01}},
		{"only trainer", bpeTrainer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.in
			if tt.name == "only trainer" {
				b = model{trainer: bpeTrainer}.bytes()
			}
			if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.model")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestProcessorValidation(t *testing.T) {
	withPieces := func(edit func([]Piece) []Piece) []Piece { return edit(smallPieces()) }
	tests := []struct {
		name    string
		pieces  []Piece
		trainer []byte
		target  error
		msg     string
	}{
		{"unigram", smallPieces(), nil, ErrUnsupportedModel, "unigram"},
		{"no unk", withPieces(func(p []Piece) []Piece { return p[1:] }), bpeTrainer, ErrMalformed, "unk is not defined"},
		{"two unk", withPieces(func(p []Piece) []Piece { return append(p, Piece{"<unk2>", 0, Unknown}) }), bpeTrainer, ErrMalformed, "unk is already defined"},
		{"duplicate", withPieces(func(p []Piece) []Piece { return append(p, Piece{"ab", 0, Normal}) }), bpeTrainer, ErrMalformed, "already defined"},
		{"empty piece", withPieces(func(p []Piece) []Piece { return append(p, Piece{"", 0, Normal}) }), bpeTrainer, ErrMalformed, "empty"},
		{"byte without fallback", withPieces(func(p []Piece) []Piece { return append(p, Piece{"<0x41>", 0, Byte}) }), bpeTrainer, ErrMalformed, "byte_fallback"},
		{"fallback without bytes", smallPieces(), varintField(bpeTrainer, 35, 1), ErrMalformed, "<0x00>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(model{pieces: tt.pieces, trainer: tt.trainer}.bytes())
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewProcessor(m)
			if !errors.Is(err, tt.target) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("NewProcessor = %v, want %v mentioning %q", err, tt.target, tt.msg)
			}
		})
	}
}
