package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// The subset of Hugging Face tokenizer.json (tokenizers' serialization) that is read here.

type hfFile struct {
	AddedTokens   []hfAddedToken  `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         hfModel         `json:"model"`
}

type hfAddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfModel struct {
	Type                    string          `json:"type"`
	Vocab                   json.RawMessage `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Dropout                 *float64        `json:"dropout"`
}

// hfComponent is any normalizer, pre-tokenizer, processor or decoder object; fields not used by a
// type stay zero.
type hfComponent struct {
	Type string `json:"type"`

	// Sequence members
	Normalizers   []json.RawMessage `json:"normalizers"`
	PreTokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`

	// Split, Replace
	Pattern  *hfPattern `json:"pattern"`
	Behavior string     `json:"behavior"`
	Invert   bool       `json:"invert"`
	Content  *string    `json:"content"` // Replace, Strip (decoder)

	// Prepend
	Prepend string `json:"prepend"`

	// Metaspace
	Replacement    string `json:"replacement"`
	PrependScheme  string `json:"prepend_scheme"`
	AddPrefixSpace *bool  `json:"add_prefix_space"` // Metaspace (old), ByteLevel
	Split          *bool  `json:"split"`

	// ByteLevel
	UseRegex *bool `json:"use_regex"`

	// Digits
	IndividualDigits bool `json:"individual_digits"`

	// Strip (normalizer: left/right; decoder: start/stop)
	Left  bool `json:"left"`
	Right bool `json:"right"`
	Start int  `json:"start"`
	Stop  int  `json:"stop"`

	// TemplateProcessing
	Single        []hfTemplatePiece            `json:"single"`
	SpecialTokens map[string]hfTemplateSpecial `json:"special_tokens"`

	// RobertaProcessing, BertProcessing: [token, id]
	Cls []json.RawMessage `json:"cls"`
	Sep []json.RawMessage `json:"sep"`
}

type hfPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

type hfTemplatePiece struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

type hfTemplateSpecial struct {
	ID     string   `json:"id"`
	IDs    []int    `json:"ids"`
	Tokens []string `json:"tokens"`
}

func readHFFile(path string) (*hfFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var f hfFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w: %v", path, ErrMalformed, err)
	}
	return &f, nil
}

// component decodes raw, reporting false for an absent or null value.
func component(raw json.RawMessage) (*hfComponent, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, nil
	}
	var c hfComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &c, true, nil
}

// eachComponent decodes each present component of raws and passes it to add, in order.
func eachComponent(raws []json.RawMessage, add func(*hfComponent) error) error {
	for _, raw := range raws {
		c, ok, err := component(raw)
		if err != nil {
			return err
		}
		if ok {
			if err := add(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// vocabMap decodes a BPE vocab object.
func (m *hfModel) vocabMap() (map[string]int, error) {
	var v map[string]int
	if err := json.Unmarshal(m.Vocab, &v); err != nil {
		return nil, fmt.Errorf("%w: model.vocab: %v", ErrMalformed, err)
	}
	return v, nil
}

// mergePairs decodes model.merges in either format: "a b" strings or [a, b] pairs (tokenizers ≥ 0.20).
func (m *hfModel) mergePairs() ([][2]string, error) {
	if len(m.Merges) == 0 || string(m.Merges) == "null" {
		return nil, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(m.Merges, &raw); err != nil {
		return nil, fmt.Errorf("%w: model.merges: %v", ErrMalformed, err)
	}
	out := make([][2]string, len(raw))
	for i, r := range raw {
		var s string
		if err := json.Unmarshal(r, &s); err == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("%w: merge %d %q has no space", ErrMalformed, i, s)
			}
			out[i] = [2]string{a, b}
			continue
		}
		var p []string
		if err := json.Unmarshal(r, &p); err != nil || len(p) != 2 {
			return nil, fmt.Errorf("%w: merge %d is neither \"a b\" nor [a, b]", ErrMalformed, i)
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}
