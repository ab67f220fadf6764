package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"quantfleet.dev/libs/fault"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/sentencepiece"
)

// GGUFOptions parameterizes GGUFMetadata.
type GGUFOptions struct {
	Arch        string // llama.cpp's architecture name: "llama", "qwen2", "gemma3", ...
	VocabSize   int    // config.json vocab_size, 0 if absent
	PreOverride string // user flag overriding tokenizer.ggml.pre detection
	// From config.json <typ>_token_id when ints; nil means "read config.json".
	BOSTokenID, EOSTokenID, PadTokenID *int
}

// ErrUnknownPreTokenizer is returned when the BPE pre-tokenizer of a GPT-2 style vocabulary cannot be
// identified; GGUFOptions.PreOverride (the --tokenizer-pre flag) bypasses detection.
var ErrUnknownPreTokenizer = fault.New(fault.ErrBadInput, "tokenizer: BPE pre-tokenizer not recognized")

// llama.cpp token types (gguf.TokenType / SentencePiece piece types).
const (
	typeNormal      int32 = 1
	typeUnknown     int32 = 2
	typeControl     int32 = 3
	typeUserDefined int32 = 4
	typeUnused      int32 = 5
	typeByte        int32 = 6
)

// GGUFMetadata returns the tokenizer.* keys (and tokenizer.ggml.add_space_prefix when
// tokenizer_config.json sets add_prefix_space) that llama.cpp's convert_hf_to_gguf.py writes for the
// checkpoint in dir, in the converter's order and with its GGUF value types.
func GGUFMetadata(dir string, opt GGUFOptions) ([]gguf.KV, error) {
	kv := &kvList{idx: map[string]int{}}
	override := map[string]*int{}
	if opt.BOSTokenID != nil {
		override["bos"] = opt.BOSTokenID
	}
	if opt.EOSTokenID != nil {
		override["eos"] = opt.EOSTokenID
	}
	if opt.PadTokenID != nil {
		override["pad"] = opt.PadTokenID
	}
	if opt.VocabSize > MaxVocab {
		return nil, fmt.Errorf("%w: vocab_size %d exceeds %d", ErrMalformed, opt.VocabSize, MaxVocab)
	}
	c := &converter{dir: dir, opt: opt, kv: kv, override: override}
	var err error
	switch opt.Arch {
	case "llama":
		err = c.llama()
	case "qwen2", "qwen3":
		err = c.sentencePieceOr(c.gpt2)
	case "qwen2moe", "qwen3moe": // TextModel.set_vocab: GPT-2 BPE only
		err = c.gpt2()
	case "gemma2", "gemma3":
		err = c.gemma()
	case "phi3":
		err = c.phi3()
	default:
		err = fmt.Errorf("%w: architecture %q", ErrUnsupported, opt.Arch)
	}
	if err != nil {
		return nil, err
	}
	return kv.kvs, nil
}

type converter struct {
	dir      string
	opt      GGUFOptions
	kv       *kvList
	override map[string]*int
	// phi3Vocab selects Phi3MiniModel's variant of the SentencePiece vocabulary.
	phi3Vocab bool
}

func (c *converter) path(name string) string { return filepath.Join(c.dir, name) }

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// errNotThisVocab plays the role of the converter's FileNotFoundError/TypeError: try the next vocab type.
var errNotThisVocab = errors.New("not this vocabulary type")

// llama is LlamaModel.set_vocab.
func (c *converter) llama() error {
	if isFile(c.path("tekken.json")) && !isFile(c.path("tokenizer.json")) {
		return fmt.Errorf("%w: Mistral tekken.json vocabularies", ErrUnsupported)
	}
	tc, _, err := readJSONObject(c.path("tokenizer_config.json"))
	if err != nil {
		return err
	}
	if v, ok := tc["add_prefix_space"]; ok && v != nil {
		b, isBool := v.(bool)
		if !isBool {
			return fmt.Errorf("tokenizer: %w: tokenizer_config.json add_prefix_space is %v, not a bool", ErrMalformed, v)
		}
		c.kv.set("tokenizer.ggml.add_space_prefix", b)
	}
	if tc["tokenizer_class"] == "HybridDNATokenizer" {
		return fmt.Errorf("%w: HybridDNATokenizer", ErrUnsupported)
	}
	err = c.sentencePieceOr(func() error {
		if err := c.llamaHF(); !errors.Is(err, errNotThisVocab) {
			return err
		}
		return c.gpt2()
	})
	if err != nil {
		return err
	}
	// CodeLlama: prefix/suffix/middle have no GGUF writer; eot does.
	if c.opt.VocabSize == 32016 {
		sv, err := loadSpecialVocab(c.dir, []string{"prefix", "suffix", "middle", "eot"}, -1, false, nil)
		if err != nil {
			return err
		}
		for typ, id := range map[string]int{"prefix": 32007, "suffix": 32008, "middle": 32009, "eot": 32010} {
			if err := sv.setSpecial(typ, json.Number(strconv.Itoa(id))); err != nil {
				return err
			}
		}
		sv.addTo(c.kv)
	}
	if c.opt.VocabSize == 49152 { // granite small models
		c.kv.set("tokenizer.ggml.add_bos_token", false)
	}
	return nil
}

// sentencePieceOr writes the SentencePiece vocabulary when tokenizer.model exists, else runs next.
func (c *converter) sentencePieceOr(next func() error) error {
	if !isFile(c.path("tokenizer.model")) {
		return next()
	}
	tokens, scores, types, err := c.sentencePieceVocab()
	if err != nil {
		return err
	}
	c.kv.addString("tokenizer.ggml.model", "llama")
	c.kv.addString("tokenizer.ggml.pre", "default")
	c.kv.addStrings("tokenizer.ggml.tokens", tokens)
	c.kv.set("tokenizer.ggml.scores", scores)
	c.kv.set("tokenizer.ggml.token_type", types)
	sv, err := loadSpecialVocab(c.dir, defaultSpecialTypes, len(tokens), false, c.override)
	if err != nil {
		return err
	}
	sv.addTo(c.kv)
	return nil
}

// sentencePieceVocab is TextModel._create_vocab_sentencepiece.
func (c *converter) sentencePieceVocab() ([]string, []float32, []int32, error) {
	m, err := sentencepiece.Load(c.path("tokenizer.model"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	n := c.opt.VocabSize
	if n <= 0 {
		n = len(m.Pieces)
	}
	tokens := make([]string, n)
	scores := make([]float32, n)
	types := make([]int32, n)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("[PAD%d]", i)
		scores[i] = -10000
		types[i] = typeUnused
	}
	for id, p := range m.Pieces {
		if id >= n {
			break
		}
		t := typeNormal
		switch p.Type {
		case sentencepiece.Unknown:
			t = typeUnknown
		case sentencepiece.Control:
			t = typeControl
		case sentencepiece.Unused:
			t = typeUnused
		case sentencepiece.Byte:
			t = typeByte
		}
		tokens[id], scores[id], types[id] = p.Piece, p.Score, t
	}
	added := map[int]bool{} // ids beyond the pieces that added tokens fill
	if b, err := os.ReadFile(c.path("added_tokens.json")); err == nil {
		entries, err := orderedObject(b)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tokenizer: added_tokens.json: %w", err)
		}
		for _, e := range entries {
			id, ok := pyInt(e.value)
			if !ok {
				return nil, nil, nil, fmt.Errorf("tokenizer: added_tokens.json: %w: id of %q is not an integer", ErrMalformed, e.key)
			}
			if id < 0 || id >= n {
				continue
			}
			tokens[id], scores[id], types[id] = e.key, -1000, typeUserDefined
			added[id] = true
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	if b, err := os.ReadFile(c.path("tokenizer_config.json")); err == nil {
		var tc struct {
			AddedTokensDecoder json.RawMessage `json:"added_tokens_decoder"`
		}
		if err := json.Unmarshal(b, &tc); err != nil {
			return nil, nil, nil, fmt.Errorf("tokenizer: tokenizer_config.json: %w: %v", ErrMalformed, err)
		}
		if len(tc.AddedTokensDecoder) > 0 && string(tc.AddedTokensDecoder) != "null" {
			entries, err := orderedObject(tc.AddedTokensDecoder)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("tokenizer: tokenizer_config.json added_tokens_decoder: %w", err)
			}
			for _, e := range entries {
				id, err := strconv.Atoi(e.key)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("tokenizer: tokenizer_config.json: %w: added_tokens_decoder key %q", ErrMalformed, e.key)
				}
				d := getMap(e.value)
				content, ok := d["content"].(string)
				if !ok {
					return nil, nil, nil, fmt.Errorf("tokenizer: tokenizer_config.json: %w: added token %d has no content", ErrMalformed, id)
				}
				if id < 0 || id >= n {
					continue
				}
				if c.phi3Vocab {
					types[id] = typeUserDefined
					if truthy(d["special"]) {
						types[id] = typeControl
					}
				} else if truthy(d["special"]) || looksSpecial(content) {
					types[id] = typeControl
				} else {
					content = strings.ReplaceAll(content, "\u2581", " ")
					types[id] = typeUserDefined
				}
				scores[id] = -1000
				tokens[id] = content
				added[id] = true
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	if c.phi3Vocab {
		if err := c.phi3AddedTokens(tokens, scores, types); err != nil {
			return nil, nil, nil, err
		}
	}
	if err := checkPadding(len(m.Pieces), added, n); err != nil {
		return nil, nil, nil, err
	}
	return tokens, scores, types, nil
}

// checkPadding refuses a vocabulary that is mostly placeholders: the converter pads
// tokenizer.model up to vocab_size with [PADn] tokens, which covers vocabularies rounded up
// for tensor parallelism (a fraction of a percent), but would silently turn a truncated
// tokenizer.model that still parses into a model that cannot write most of its tokens.
func checkPadding(pieces int, added map[int]bool, n int) error {
	filled := min(pieces, n)
	for id := range added {
		if id >= pieces {
			filled++
		}
	}
	if pad := n - filled; pad > n/64 {
		return fmt.Errorf("tokenizer: %w: tokenizer.model has %d pieces and %d added tokens for vocab_size %d: %d ids would be placeholders (truncated tokenizer.model?)",
			ErrMalformed, pieces, len(added), n, pad)
	}
	return nil
}

// looksSpecial is TextModel.does_token_look_special.
func looksSpecial(t string) bool {
	switch t {
	case "<pad>", "<mask>", "<2mass>", "[@BOS@]":
		return true
	}
	return strings.HasPrefix(t, "<|") && strings.HasSuffix(t, "|>") ||
		strings.HasPrefix(t, "<｜") && strings.HasSuffix(t, "｜>") ||
		strings.HasPrefix(t, "<unused") && strings.HasSuffix(t, ">")
}

var byteTokenRE = regexp.MustCompile(`^<0x[0-9A-Fa-f]{2}>$`)

// llamaHF is TextModel._set_vocab_llama_hf (gguf-py LlamaHfVocab): a tokenizer.json BPE with byte
// fallback (Llama 2 / Mistral exported by transformers). It returns errNotThisVocab where the
// converter falls through to the GPT-2 vocabulary.
func (c *converter) llamaHF() error {
	f, err := readHFFile(c.path("tokenizer.json"))
	if errors.Is(err, os.ErrNotExist) {
		return errNotThisVocab
	}
	if err != nil {
		return err
	}
	m := f.Model
	if m.Type == "BPE" && m.IgnoreMerges && !m.ByteFallback {
		return errNotThisVocab // Llama 3
	}
	if m.Type != "BPE" || !m.ByteFallback {
		return errNotThisVocab
	}
	dec, ok, err := component(f.Decoder)
	if err != nil {
		return err
	}
	if !ok || dec.Type != "Sequence" {
		return errNotThisVocab
	}
	tok, err := newHF(f)
	if err != nil {
		return fmt.Errorf("tokenizer: tokenizer.json: %w", err)
	}
	vocab, err := m.vocabMap()
	if err != nil {
		return err
	}
	base := len(vocab) // transformers' vocab_size: the model vocabulary without added tokens
	specials, err := hfSpecialTokens(c.dir, tok)
	if err != nil {
		return err
	}
	specialIDs := map[int]bool{}
	for _, s := range specials {
		if id, ok := tok.tokenID(s); ok {
			specialIDs[id] = true
		}
	}
	var tokens []string
	var scores []float32
	var types []int32
	for id := 0; id < base; id++ {
		if id >= len(tok.idToTok) || (tok.idToTok[id] == "" && tok.addedByID[id] == nil) {
			return fmt.Errorf("tokenizer: tokenizer.json: %w: no token with id %d", ErrMalformed, id)
		}
		text := tok.idToTok[id]
		t := typeNormal
		switch {
		case byteTokenRE.MatchString(text):
			t = typeByte
		case specialIDs[id]:
			t = typeControl
		}
		tokens, scores, types = append(tokens, text), append(scores, -1000), append(types, t)
	}
	added := append([]addedToken(nil), tok.added...)
	sort.SliceStable(added, func(i, j int) bool { return added[i].ID < added[j].ID })
	for _, a := range added {
		if a.ID < base {
			continue
		}
		t := typeUserDefined
		for _, s := range specials {
			if s == a.Content {
				t = typeNormal
				if specialIDs[a.ID] {
					t = typeControl
				}
				break
			}
		}
		tokens, scores, types = append(tokens, a.Content), append(scores, -1000), append(types, t)
	}
	c.kv.addString("tokenizer.ggml.model", "llama")
	c.kv.addString("tokenizer.ggml.pre", "default")
	c.kv.addStrings("tokenizer.ggml.tokens", tokens)
	c.kv.set("tokenizer.ggml.scores", scores)
	c.kv.set("tokenizer.ggml.token_type", types)
	sv, err := loadSpecialVocab(c.dir, defaultSpecialTypes, len(tokens), false, c.override)
	if err != nil {
		return err
	}
	sv.addTo(c.kv)
	return nil
}

// tokenID looks a token up in the added tokens, then the model vocabulary.
func (t *hfTokenizer) tokenID(s string) (int, bool) {
	for _, a := range t.added {
		if a.Content == s {
			return a.ID, true
		}
	}
	id, ok := t.vocab[s]
	return id, ok
}

// hfSpecialTokens approximates transformers' all_special_tokens: the named special tokens of
// tokenizer_config.json / special_tokens_map.json (with LlamaTokenizer's defaults) and the
// additional/extra special tokens.
func hfSpecialTokens(dir string, t *hfTokenizer) ([]string, error) {
	tc, _, err := readJSONObject(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return nil, err
	}
	stm, _, err := readJSONObject(filepath.Join(dir, "special_tokens_map.json"))
	if err != nil {
		return nil, err
	}
	content := func(v any) (string, bool) {
		switch x := v.(type) {
		case string:
			return x, true
		case map[string]any:
			s, ok := x["content"].(string)
			return s, ok
		}
		return "", false
	}
	var out []string
	seen := map[string]bool{}
	addTok := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	defaults := map[string]string{}
	if cls, _ := tc["tokenizer_class"].(string); strings.HasPrefix(cls, "LlamaTokenizer") || strings.HasPrefix(cls, "CodeLlamaTokenizer") {
		defaults = map[string]string{"bos": "<s>", "eos": "</s>", "unk": "<unk>"}
	}
	for _, typ := range defaultSpecialTypes {
		v, ok := tc[typ+"_token"]
		if !ok {
			v, ok = stm[typ+"_token"]
		}
		if !ok {
			if d, has := defaults[typ]; has {
				addTok(d)
			}
			continue
		}
		if s, ok := content(v); ok {
			addTok(s)
		}
	}
	for _, key := range []string{"additional_special_tokens", "extra_special_tokens"} {
		for _, src := range []map[string]any{tc, stm} {
			list, _ := src[key].([]any)
			for _, v := range list {
				if s, ok := content(v); ok {
					addTok(s)
				}
			}
		}
	}
	return out, nil
}

// gpt2 is TextModel._set_vocab_gpt2 with get_vocab_base.
func (c *converter) gpt2() error {
	js := c.path("tokenizer.json")
	if !isFile(js) {
		return fmt.Errorf("%w in %s (a GPT-2 BPE vocabulary needs tokenizer.json)", ErrNoTokenizer, c.dir)
	}
	tok, err := loadHF(js)
	if err != nil {
		return err
	}
	tc, _, err := readJSONObject(c.path("tokenizer_config.json"))
	if err != nil {
		return err
	}
	tok.applyConfigTemplate(tc)
	maxID := len(tok.idToTok) - 1
	n := c.opt.VocabSize
	if n <= 0 {
		n = len(tok.vocabWithAdded())
	}
	if maxID >= n {
		return fmt.Errorf("tokenizer: %w: token id %d is outside vocab_size %d", ErrMalformed, maxID, n)
	}
	pre := c.opt.PreOverride
	if pre == "" {
		pre, err = detectPre(tok, c.path("tokenizer.json"))
		if err != nil {
			return err
		}
	}
	cleanup, _ := tc["clean_up_tokenization_spaces"].(bool)
	reverse := map[int]string{}
	for s, id := range tok.vocabWithAdded() {
		reverse[id] = s
	}
	addedByContent := map[string]*addedToken{}
	for i := range tok.added {
		addedByContent[tok.added[i].Content] = &tok.added[i]
	}
	tokens := make([]string, n)
	types := make([]int32, n)
	for i := 0; i < n; i++ {
		s, ok := reverse[i]
		if !ok {
			tokens[i], types[i] = fmt.Sprintf("[PAD%d]", i), typeUnused
			continue
		}
		if _, isAdded := addedByContent[s]; isAdded {
			dec := tok.addedByID[i]
			if dec == nil {
				return fmt.Errorf("tokenizer: %w: added token %q has no entry for id %d", ErrMalformed, s, i)
			}
			if !dec.Normalized {
				s = tok.Decode(tok.Encode(s))
				if cleanup {
					s = cleanUpTokenization(s)
				}
			}
			if dec.Special || looksSpecial(s) {
				types[i] = typeControl
			} else {
				s = strings.ReplaceAll(s, "\u2581", " ")
				types[i] = typeUserDefined
			}
		} else {
			types[i] = typeNormal
		}
		tokens[i] = s
	}
	c.kv.addString("tokenizer.ggml.model", "gpt2")
	c.kv.addString("tokenizer.ggml.pre", pre)
	c.kv.addStrings("tokenizer.ggml.tokens", tokens)
	c.kv.set("tokenizer.ggml.token_type", types)
	sv, err := loadSpecialVocab(c.dir, defaultSpecialTypes, -1, true, c.override)
	if err != nil {
		return err
	}
	sv.addTo(c.kv)
	return nil
}

// vocabWithAdded is transformers' get_vocab(): the model vocabulary plus the added tokens.
func (t *hfTokenizer) vocabWithAdded() map[string]int {
	v := make(map[string]int, len(t.vocab)+len(t.added))
	for s, id := range t.vocab {
		v[s] = id
	}
	for _, a := range t.added {
		v[a.Content] = a.ID
	}
	return v
}

// applyConfigTemplate mimics transformers' LlamaTokenizer(Fast), which rebuilds the post-processor
// from tokenizer_config.json's add_bos_token/add_eos_token.
func (t *hfTokenizer) applyConfigTemplate(tc map[string]any) {
	cls, _ := tc["tokenizer_class"].(string)
	if !strings.HasPrefix(cls, "LlamaTokenizer") && !strings.HasPrefix(cls, "CodeLlamaTokenizer") {
		return
	}
	addBOS, okB := tc["add_bos_token"].(bool)
	addEOS, okE := tc["add_eos_token"].(bool)
	if !okB && !okE {
		return
	}
	lookup := func(k string) int {
		var s string
		switch x := tc[k].(type) {
		case string:
			s = x
		case map[string]any:
			s, _ = x["content"].(string)
		}
		if id, ok := t.tokenID(s); ok && s != "" {
			return id
		}
		return -1
	}
	if okB {
		t.prefixIDs = nil
		if id := lookup("bos_token"); addBOS && id >= 0 {
			t.prefixIDs = []int{id}
		}
	}
	if okE {
		t.suffixIDs = nil
		if id := lookup("eos_token"); addEOS && id >= 0 {
			t.suffixIDs = []int{id}
		}
	}
}

// cleanUpTokenization is transformers' clean_up_tokenization.
func cleanUpTokenization(s string) string {
	return strings.NewReplacer(" .", ".", " ?", "?", " !", "!", " ,", ",", " ' ", "'", " n't", "n't",
		" 'm", "'m", " 's", "'s", " 've", "'ve", " 're", "'re").Replace(s)
}

// kvList is an ordered GGUF key/value list with gguf-py GGUFWriter semantics: re-adding a key keeps
// its position, empty strings and arrays are not written.
type kvList struct {
	kvs []gguf.KV
	idx map[string]int
}

func (l *kvList) set(key string, v any) {
	if i, ok := l.idx[key]; ok {
		l.kvs[i].Value = v
		return
	}
	l.idx[key] = len(l.kvs)
	l.kvs = append(l.kvs, gguf.KV{Key: key, Value: v})
}

func (l *kvList) addString(key, v string) {
	if v != "" {
		l.set(key, v)
	}
}

func (l *kvList) addStrings(key string, v []string) {
	if len(v) > 0 {
		l.set(key, v)
	}
}

// addChatTemplate is GGUFWriter.add_chat_template for a string or a list of {name, template}.
func (l *kvList) addChatTemplate(v any) {
	if s, ok := v.(string); ok {
		l.addString("tokenizer.chat_template", s)
		return
	}
	list, _ := v.([]any)
	var def *string
	var names []string
	seen := map[string]bool{}
	for _, x := range list {
		m := getMap(x)
		name, _ := m["name"].(string)
		tmpl, has := m["template"]
		name = strings.Map(func(r rune) rune {
			if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return r
			}
			return '_'
		}, name)
		if name == "" || !has || tmpl == nil {
			continue
		}
		ts, _ := tmpl.(string)
		if name == "default" {
			def = &ts
			continue
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name) // gguf-py uses a set here: its order is not reproducible
		}
		l.addString("tokenizer.chat_template."+name, ts)
	}
	l.addStrings("tokenizer.chat_templates", names)
	if def != nil {
		l.addString("tokenizer.chat_template", *def)
	}
}

type objectEntry struct {
	key   string
	value any
}

// orderedObject decodes a JSON object keeping its key order.
func orderedObject(b []byte) ([]objectEntry, error) {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	t, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if delim, ok := t.(json.Delim); !ok || delim != '{' {
		return nil, fmt.Errorf("%w: expected a JSON object", ErrMalformed)
	}
	var out []objectEntry
	for d.More() {
		kt, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		var v any
		if err := d.Decode(&v); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		out = append(out, objectEntry{key: kt.(string), value: v})
	}
	return out, nil
}
