// Package perplexity evaluates a causal language model on fixed token windows of a text
// and builds calibration samples the same way.
//
// The protocol: the text is split on "\n\f\n"; each document is stripped of surrounding
// whitespace (as Python's str.strip) and dropped if empty; each is encoded as [BOS] + ids
// and the encodings are concatenated into one stream. Window i is tokens
// [i·ctx, (i+1)·ctx] (ctx+1 tokens): the model reads the first ctx tokens and is scored on
// predicting the last ctx. Perplexity is exp of the mean negative log-likelihood over all
// ctx·N predictions of windows 0..N-1 (equivalently over the per-window means, as every
// window scores ctx tokens). Asking for more windows than the text holds is an error
// (ErrNotEnoughTokens) naming how many fit; the caller decides whether to ask for fewer.
package perplexity

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"quantfleet.dev/libs/fault"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DocumentSeparator separates documents in a text file.
const DocumentSeparator = "\n\f\n"

// ErrNotEnoughTokens reports a text too short for the windows or samples asked for.
var ErrNotEnoughTokens = fault.New(fault.ErrBadInput, "not enough tokens")

// ErrBadData reports an unreadable document file (bad UTF-8, bad JSONL).
var ErrBadData = fault.New(fault.ErrBadInput, "bad document data")

// isPySpace reports whether Python's str.isspace holds for r: Go's unicode.IsSpace plus
// the information separators U+001C..U+001F.
func isPySpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }

// SplitDocuments splits text on DocumentSeparator, strips each document of leading and
// trailing whitespace (Python's str.strip) and drops empty documents.
func SplitDocuments(text string) []string {
	var docs []string
	for _, d := range strings.Split(text, DocumentSeparator) {
		if d = strings.TrimFunc(d, isPySpace); d != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

// LoadDocuments reads the documents of a file: JSON Lines when the name ends in .jsonl
// or .ndjson (one object per line with a string field "text"; blank lines are skipped),
// otherwise text with documents separated by DocumentSeparator. Either way documents are
// stripped and empty ones dropped. Bytes are used as they are (no newline translation).
func LoadDocuments(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("perplexity: %w", err)
	}
	var docs []string
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson":
		docs, err = parseJSONL(raw)
	default:
		if !utf8.Valid(raw) {
			off := 0
			for off < len(raw) {
				r, n := utf8.DecodeRune(raw[off:])
				if r == utf8.RuneError && n <= 1 {
					break
				}
				off += n
			}
			return nil, fmt.Errorf("perplexity: %s: %w: invalid UTF-8 at byte %d", path, ErrBadData, off)
		}
		docs = SplitDocuments(string(raw))
	}
	if err != nil {
		return nil, fmt.Errorf("perplexity: %s: %w", path, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("perplexity: %s: %w: no non-empty documents", path, ErrBadData)
	}
	return docs, nil
}

func parseJSONL(raw []byte) ([]string, error) {
	var docs []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var rec struct {
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadData, line, err)
		}
		if rec.Text == nil {
			return nil, fmt.Errorf("%w: line %d has no string field \"text\"", ErrBadData, line)
		}
		if d := strings.TrimFunc(*rec.Text, isPySpace); d != "" {
			docs = append(docs, d)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadData, err)
	}
	return docs, nil
}

// Encoder is what the windows need of a tokenizer (tokenizer.Tokenizer satisfies it).
type Encoder interface {
	Encode(text string) []int // without BOS
	BOS() int
}

// Tokens encodes each document as [BOS] + ids and concatenates them.
func Tokens(tok Encoder, docs []string) ([]int, error) {
	bos := tok.BOS()
	if bos < 0 {
		return nil, errors.New("perplexity: the tokenizer has no BOS token")
	}
	var ids []int
	for _, d := range docs {
		ids = append(ids, bos)
		ids = append(ids, tok.Encode(d)...)
	}
	return ids, nil
}

// WindowsOf returns windows 0..n-1 of ctx+1 tokens of a token stream: window i is
// tokens[i·ctx : (i+1)·ctx+1]. The windows share the stream's memory.
func WindowsOf(tokens []int, ctx, n int) ([][]int, error) {
	if ctx < 1 || n < 1 {
		return nil, fmt.Errorf("perplexity: context %d and window count %d must be positive", ctx, n)
	}
	if need := n*ctx + 1; len(tokens) < need {
		return nil, fmt.Errorf("perplexity: %w: %d windows of %d need %d tokens, the text has %d (%d windows fit)",
			ErrNotEnoughTokens, n, ctx, need, len(tokens), MaxWindows(len(tokens), ctx))
	}
	w := make([][]int, n)
	for i := range w {
		w[i] = tokens[i*ctx : (i+1)*ctx+1 : (i+1)*ctx+1]
	}
	return w, nil
}

// MaxWindows is the number of windows of ctx+1 tokens that a stream of n tokens holds.
func MaxWindows(n, ctx int) int {
	if n < 1 || ctx < 1 {
		return 0
	}
	return (n - 1) / ctx
}

// Windows tokenizes docs and returns evaluation windows 0..n-1 of ctx+1 tokens.
func Windows(tok Encoder, docs []string, ctx, n int) ([][]int, error) {
	ids, err := Tokens(tok, docs)
	if err != nil {
		return nil, err
	}
	return WindowsOf(ids, ctx, n)
}

// Samples returns calibration samples first..first+n-1 of seqlen tokens, cut like the
// evaluation windows: sample i is tokens[i·seqlen : (i+1)·seqlen] of the same [BOS]+ids stream
// (the evaluation window of the same index without its last token). It needs
// (first+n)·seqlen tokens. Different first values give disjoint draws of the same text.
func Samples(tok Encoder, docs []string, seqlen, first, n int) ([][]int, error) {
	if seqlen < 1 || n < 1 || first < 0 {
		return nil, fmt.Errorf("perplexity: sequence length %d, first sample %d and sample count %d out of range", seqlen, first, n)
	}
	ids, err := Tokens(tok, docs)
	if err != nil {
		return nil, err
	}
	if need := (first + n) * seqlen; len(ids) < need {
		return nil, fmt.Errorf("perplexity: %w: samples %d..%d of %d tokens need %d tokens, the text has %d (%d samples fit)",
			ErrNotEnoughTokens, first, first+n-1, seqlen, need, len(ids), len(ids)/seqlen)
	}
	s := make([][]int, n)
	for i := range s {
		j := first + i
		s[i] = ids[j*seqlen : (j+1)*seqlen : (j+1)*seqlen]
	}
	return s, nil
}
