// Package tokenizer encodes text with the tokenizers of Hugging Face checkpoints (tokenizer.json BPE,
// SentencePiece tokenizer.model) and derives the tokenizer.* metadata that llama.cpp's
// convert_hf_to_gguf.py writes into GGUF files.
package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/sentencepiece"
)

// Tokenizer turns text into token ids and back.
type Tokenizer interface {
	// Encode returns the ids of text. It adds no BOS/EOS: callers add them.
	Encode(text string) []int
	// Decode returns the text of ids.
	Decode(ids []int) string
	// BOS and EOS are the begin/end-of-sequence ids, or -1 when unknown.
	BOS() int
	EOS() int
	// VocabSize is the number of ids, added tokens included.
	VocabSize() int
}

// The model's tokenizer files are the user's input: these errors are bad input.
var (
	// ErrNoTokenizer is returned when a directory holds neither tokenizer.json nor tokenizer.model.
	ErrNoTokenizer = fault.New(fault.ErrBadInput, "tokenizer: no tokenizer.json or tokenizer.model")
	// ErrUnsupported is returned (wrapped) for tokenizer features that are not implemented.
	ErrUnsupported = fault.New(fault.ErrBadInput, "tokenizer: unsupported")
	// ErrMalformed is returned (wrapped) for tokenizer files that cannot be interpreted.
	ErrMalformed = fault.New(fault.ErrBadInput, "tokenizer: malformed")
)

// MaxVocab bounds a vocabulary (and config.json's vocab_size, which pads it): llama.cpp's token
// ids are int32, and no tokenizer comes near 2^24 entries.
const MaxVocab = 1 << 24

// Load loads the tokenizer of a checkpoint directory, preferring tokenizer.json to tokenizer.model.
func Load(dir string) (Tokenizer, error) {
	js := filepath.Join(dir, "tokenizer.json")
	if _, err := os.Stat(js); err == nil {
		return LoadHF(js)
	}
	sp := filepath.Join(dir, "tokenizer.model")
	if _, err := os.Stat(sp); err == nil {
		return LoadSentencePiece(sp)
	}
	return nil, fmt.Errorf("%w in %s", ErrNoTokenizer, dir)
}

// LoadSentencePiece loads a SentencePiece tokenizer.model.
func LoadSentencePiece(path string) (Tokenizer, error) {
	m, err := sentencepiece.Load(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	p, err := sentencepiece.NewProcessor(m)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return spTokenizer{p}, nil
}

type spTokenizer struct{ p *sentencepiece.Processor }

func (t spTokenizer) Encode(text string) []int { return t.p.Encode(text) }
func (t spTokenizer) Decode(ids []int) string  { return t.p.Decode(ids) }
func (t spTokenizer) BOS() int                 { return t.p.BOSID() }
func (t spTokenizer) EOS() int                 { return t.p.EOSID() }
func (t spTokenizer) VocabSize() int           { return t.p.VocabSize() }

// setSpecialIDs takes BOS/EOS the way the GGUF converter does (tokenizer_config.json token strings,
// then config.json ids) from the directory of tokenizer.json, falling back to the post-processor's
// template.
func (t *hfTokenizer) setSpecialIDs(dir string) error {
	if len(t.prefixIDs) > 0 {
		t.bos = t.prefixIDs[0]
	}
	if len(t.suffixIDs) > 0 {
		t.eos = t.suffixIDs[len(t.suffixIDs)-1]
	}
	sv, err := loadSpecialVocab(dir, defaultSpecialTypes, len(t.idToTok), false, nil)
	if err != nil {
		return err
	}
	if id, ok := sv.ids.vals["bos"]; ok {
		t.bos = id
	}
	if id, ok := sv.ids.vals["eos"]; ok {
		t.eos = id
	}
	return nil
}
