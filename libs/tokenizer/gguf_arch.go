package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
)

// gemma is Gemma2Model/Gemma3Model.set_vocab: the SentencePiece vocabulary, then
// add_space_prefix false. (Gemma 3 falls back to GPT-2 BPE without tokenizer.model, whose
// pre-tokenizer llama.cpp does not know; quantfleet refuses that case.)
func (c *converter) gemma() error {
	if !isFile(c.path("tokenizer.model")) {
		return fmt.Errorf("%w: Gemma checkpoint without tokenizer.model", ErrUnsupported)
	}
	if err := c.sentencePieceOr(nil); err != nil {
		return err
	}
	c.kv.set("tokenizer.ggml.add_space_prefix", false)
	return nil
}

// phi3 is Phi3MiniModel.set_vocab: GPT-2 BPE for tokenizer_class GPT2Tokenizer (Phi-4), else
// its own SentencePiece vocabulary, where added tokens (added_tokens_decoder, then tokenizer.json's
// added_tokens) are USER_DEFINED, or CONTROL when marked special, without the generic
// "looks special" rule.
func (c *converter) phi3() error {
	tc, _, err := readJSONObject(c.path("tokenizer_config.json"))
	if err != nil {
		return err
	}
	if tc["tokenizer_class"] == "GPT2Tokenizer" {
		return c.gpt2()
	}
	if !isFile(c.path("tokenizer.model")) {
		return fmt.Errorf("tokenizer: %w: Phi-3 needs tokenizer.model", ErrMalformed)
	}
	c.phi3Vocab = true
	return c.sentencePieceOr(nil)
}

// phi3AddedTokens applies tokenizer.json's added_tokens the way Phi3MiniModel does.
func (c *converter) phi3AddedTokens(tokens []string, scores []float32, types []int32) error {
	b, err := os.ReadFile(c.path("tokenizer.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	var tj struct {
		AddedTokens []struct {
			ID      json.Number `json:"id"`
			Content string      `json:"content"`
			Special bool        `json:"special"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		return fmt.Errorf("tokenizer: tokenizer.json: %w: %v", ErrMalformed, err)
	}
	for _, a := range tj.AddedTokens {
		id, err := strconv.Atoi(string(a.ID))
		if err != nil || id < 0 || id >= len(tokens) {
			return fmt.Errorf("tokenizer: tokenizer.json: %w: added token id %s out of range", ErrMalformed, a.ID)
		}
		tokens[id], scores[id], types[id] = a.Content, -1000, typeUserDefined
		if a.Special {
			types[id] = typeControl
		}
	}
	return nil
}
