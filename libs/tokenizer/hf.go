package tokenizer

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"quantfleet.dev/libs/pqueue"
)

// hfTokenizer is a Hugging Face tokenizers pipeline for BPE models: added-token splitting, normalizer,
// pre-tokenizer, BPE (with byte fallback or byte-level), post-processor and decoder.
type hfTokenizer struct {
	vocab   map[string]int
	idToTok []string // model vocab and added tokens
	merges  map[[2]int]merge

	byteFallback bool
	byteIDs      [256]int
	unk          int
	fuseUnk      bool
	ignoreMerges bool
	contPrefix   string
	eowSuffix    string

	added       []addedToken
	addedByID   map[int]*addedToken
	rawMatch    *addedMatcher // added tokens matched on the raw text (normalized == false)
	normMatch   *addedMatcher // added tokens matched after normalization
	normalizers []normalizeFunc
	pre         []preTokenizer
	decoders    []decodeFunc
	// Special tokens the post-processor puts around a single sequence.
	prefixIDs, suffixIDs []int

	byteLevel bool // the pre-tokenizer maps bytes to GPT-2's printable characters
	bos, eos  int
}

type merge struct{ rank, id int }

type addedToken struct {
	hfAddedToken
}

// LoadHF loads a tokenizer.json (BPE model). BOS and EOS come from tokenizer_config.json and
// config.json beside it when present, else from the post-processor's template.
func LoadHF(path string) (Tokenizer, error) {
	t, err := loadHF(path)
	if err != nil {
		return nil, err
	}
	if err := t.setSpecialIDs(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return t, nil
}

func loadHF(path string) (*hfTokenizer, error) {
	f, err := readHFFile(path)
	if err != nil {
		return nil, err
	}
	t, err := newHF(f)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

func newHF(f *hfFile) (*hfTokenizer, error) {
	if f.Model.Type != "BPE" && f.Model.Type != "" {
		return nil, fmt.Errorf("%w: model type %q (only BPE)", ErrUnsupported, f.Model.Type)
	}
	if f.Model.Dropout != nil && *f.Model.Dropout > 0 {
		return nil, fmt.Errorf("%w: BPE dropout", ErrUnsupported)
	}
	vocab, err := f.Model.vocabMap()
	if err != nil {
		return nil, err
	}
	t := &hfTokenizer{
		vocab:        vocab,
		byteFallback: f.Model.ByteFallback,
		unk:          -1,
		fuseUnk:      f.Model.FuseUnk,
		ignoreMerges: f.Model.IgnoreMerges,
		addedByID:    map[int]*addedToken{},
		bos:          -1,
		eos:          -1,
	}
	if f.Model.ContinuingSubwordPrefix != nil {
		t.contPrefix = *f.Model.ContinuingSubwordPrefix
	}
	if f.Model.EndOfWordSuffix != nil {
		t.eowSuffix = *f.Model.EndOfWordSuffix
	}
	n, err := tableSize(vocab, f.AddedTokens)
	if err != nil {
		return nil, err
	}
	t.idToTok = make([]string, n)
	for s, id := range vocab {
		t.idToTok[id] = s
	}
	for i := range t.byteIDs {
		t.byteIDs[i] = -1
		if id, ok := vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			t.byteIDs[i] = id
		}
	}
	if f.Model.UnkToken != nil {
		id, ok := vocab[*f.Model.UnkToken]
		if !ok {
			return nil, fmt.Errorf("%w: unk_token %q is not in the vocabulary", ErrMalformed, *f.Model.UnkToken)
		}
		t.unk = id
	}
	pairs, err := f.Model.mergePairs()
	if err != nil {
		return nil, err
	}
	t.merges = make(map[[2]int]merge, len(pairs))
	for rank, p := range pairs {
		a, okA := vocab[p[0]]
		b, okB := vocab[p[1]]
		if !okA || !okB {
			return nil, fmt.Errorf("%w: merge %q %q uses a token missing from the vocabulary", ErrMalformed, p[0], p[1])
		}
		id, ok := vocab[p[0]+p[1][len(t.contPrefix):]]
		if !ok {
			return nil, fmt.Errorf("%w: merge result %q is missing from the vocabulary", ErrMalformed, p[0]+p[1])
		}
		t.merges[[2]int{a, b}] = merge{rank, id}
	}

	var raw, normd []*addedToken
	t.added = make([]addedToken, len(f.AddedTokens))
	for i, a := range f.AddedTokens {
		t.added[i] = addedToken{a}
		at := &t.added[i]
		t.idToTok[a.ID] = a.Content
		t.addedByID[a.ID] = at
		if a.Normalized {
			normd = append(normd, at)
		} else {
			raw = append(raw, at)
		}
	}
	t.rawMatch = newAddedMatcher(raw)
	t.normMatch = newAddedMatcher(normd)

	if err := eachComponent([]json.RawMessage{f.Normalizer}, t.addNormalizer); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	if err := eachComponent([]json.RawMessage{f.PreTokenizer}, t.addPreTokenizer); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if err := eachComponent([]json.RawMessage{f.PostProcessor}, t.addPostProcessor); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	if err := eachComponent([]json.RawMessage{f.Decoder}, t.addDecoder); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	return t, nil
}

// maxIDHoles bounds the ids no entry uses: ids index a dense table, so one huge id must not
// size it. Real vocabularies are dense or padded by a few hundred.
const maxIDHoles = 1 << 16

// tableSize returns the size of the id → token table (the largest id + 1) after checking that
// every id is within what the entries can explain.
func tableSize(vocab map[string]int, added []hfAddedToken) (int, error) {
	limit := min(len(vocab)+len(added)+maxIDHoles, MaxVocab)
	n := 0
	check := func(kind, token string, id int) error {
		if id < 0 || id >= limit {
			return fmt.Errorf("%w: %s %q has id %d, outside [0, %d) for %d tokens", ErrMalformed, kind, token, id, limit, len(vocab)+len(added))
		}
		n = max(n, id+1)
		return nil
	}
	for s, id := range vocab {
		if err := check("token", s, id); err != nil {
			return 0, err
		}
	}
	for _, a := range added {
		if err := check("added token", a.Content, a.ID); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Tokenizer interface.

func (t *hfTokenizer) BOS() int       { return t.bos }
func (t *hfTokenizer) EOS() int       { return t.eos }
func (t *hfTokenizer) VocabSize() int { return len(t.idToTok) }

// Encode tokenizes text without the post-processor's special tokens.
func (t *hfTokenizer) Encode(text string) []int {
	return t.encode(text, nil)
}

// encodeWithSpecial adds the special tokens the post-processor adds by default (tokenizer.encode in
// transformers), as used for the pre-tokenizer hash.
func (t *hfTokenizer) encodeWithSpecial(text string) []int {
	ids := append([]int(nil), t.prefixIDs...)
	ids = t.encode(text, ids)
	return append(ids, t.suffixIDs...)
}

type segment struct {
	s       string
	atStart bool // begins at offset 0 of the input: Metaspace's "first" prepend scheme keys on it
	added   int  // id of an added token, or -1
}

func (t *hfTokenizer) encode(text string, dst []int) []int {
	for _, seg := range t.rawMatch.split(text, true) {
		if seg.added >= 0 {
			dst = append(dst, seg.added)
			continue
		}
		s := seg.s
		for _, nf := range t.normalizers {
			s = nf(s)
		}
		for _, seg2 := range t.normMatch.split(s, seg.atStart) {
			if seg2.added >= 0 {
				dst = append(dst, seg2.added)
				continue
			}
			pieces := []segment{seg2}
			for _, p := range t.pre {
				pieces = p(pieces)
			}
			for _, p := range pieces {
				dst = t.bpe(p.s, dst)
			}
		}
	}
	return dst
}

// bpe runs the BPE model on one pre-token (tokenizers BPE::merge_word + Word::merge_all).
func (t *hfTokenizer) bpe(w string, dst []int) []int {
	if w == "" {
		return dst
	}
	if t.ignoreMerges {
		if id, ok := t.vocab[w]; ok {
			return append(dst, id)
		}
	}
	type sym struct {
		id         int
		prev, next int
		gone       bool
	}
	syms := make([]sym, 0, len(w))
	add := func(id int) { syms = append(syms, sym{id: id, prev: len(syms) - 1, next: len(syms) + 1}) }
	unkPending := false
	for i := 0; i < len(w); {
		_, sz := utf8.DecodeRuneInString(w[i:])
		s := w[i : i+sz]
		if i > 0 && t.contPrefix != "" {
			s = t.contPrefix + s
		}
		if i+sz == len(w) && t.eowSuffix != "" {
			s += t.eowSuffix
		}
		i += sz
		if id, ok := t.vocab[s]; ok {
			if unkPending {
				add(t.unk)
				unkPending = false
			}
			add(id)
			continue
		}
		if t.byteFallback {
			ok := true
			for j := 0; j < len(s); j++ {
				if t.byteIDs[s[j]] < 0 {
					ok = false
					break
				}
			}
			if ok {
				for j := 0; j < len(s); j++ {
					add(t.byteIDs[s[j]])
				}
				continue
			}
		}
		if t.unk >= 0 {
			if unkPending && !t.fuseUnk {
				add(t.unk)
			}
			unkPending = true
		}
	}
	if unkPending {
		add(t.unk)
	}
	if len(syms) == 0 {
		return dst
	}
	syms[len(syms)-1].next = -1

	q := pqueue.New(mergeBefore, len(syms))
	for i := 0; i+1 < len(syms); i++ {
		if m, ok := t.merges[[2]int{syms[i].id, syms[i+1].id}]; ok {
			q.Push(mergeItem{pos: i, rank: m.rank, id: m.id})
		}
	}
	for q.Len() > 0 {
		top := q.Pop()
		cur := &syms[top.pos]
		if cur.gone || cur.next < 0 {
			continue
		}
		right := syms[cur.next]
		if m, ok := t.merges[[2]int{cur.id, right.id}]; !ok || m.id != top.id {
			continue // expired entry
		}
		cur.id = top.id
		syms[cur.next].gone = true
		cur.next = right.next
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if m, ok := t.merges[[2]int{syms[cur.prev].id, cur.id}]; ok {
				q.Push(mergeItem{pos: cur.prev, rank: m.rank, id: m.id})
			}
		}
		if cur.next >= 0 {
			if m, ok := t.merges[[2]int{cur.id, syms[cur.next].id}]; ok {
				q.Push(mergeItem{pos: top.pos, rank: m.rank, id: m.id})
			}
		}
	}
	for i := 0; i >= 0; i = syms[i].next {
		dst = append(dst, syms[i].id)
	}
	return dst
}

type mergeItem struct{ pos, rank, id int }

// mergeBefore orders merges by rank, then leftmost (tokenizers' Merge ordering).
func mergeBefore(a, b mergeItem) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.pos < b.pos
}

// Decode maps ids to their tokens and runs the decoder chain (special tokens are kept, as
// transformers' decode does by default). Unknown ids are skipped.
func (t *hfTokenizer) Decode(ids []int) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < len(t.idToTok) {
			toks = append(toks, t.idToTok[id])
		}
	}
	for _, d := range t.decoders {
		toks = d(toks)
	}
	return strings.Join(toks, "")
}

// ---- added tokens ----

// addedMatcher finds added tokens leftmost-longest, like tokenizers' AddedVocabulary.
type addedMatcher struct {
	byFirst map[byte][]*addedToken // longest first
}

func newAddedMatcher(toks []*addedToken) *addedMatcher {
	m := &addedMatcher{byFirst: map[byte][]*addedToken{}}
	for _, a := range toks {
		if a.Content == "" {
			continue
		}
		m.byFirst[a.Content[0]] = append(m.byFirst[a.Content[0]], a)
	}
	for _, l := range m.byFirst {
		sort.SliceStable(l, func(i, j int) bool { return len(l[i].Content) > len(l[j].Content) })
	}
	return m
}

func (m *addedMatcher) split(s string, atStart bool) []segment {
	if len(m.byFirst) == 0 {
		return []segment{{s: s, atStart: atStart, added: -1}}
	}
	var out []segment
	last := 0 // end of the previous emitted piece
	emitText := func(from, to int) {
		if from < to {
			out = append(out, segment{s: s[from:to], atStart: atStart && from == 0, added: -1})
		}
	}
	for i := 0; i < len(s); {
		var hit *addedToken
		for _, a := range m.byFirst[s[i]] {
			if !strings.HasPrefix(s[i:], a.Content) {
				continue
			}
			if a.SingleWord {
				before, after := s[:i], s[i+len(a.Content):]
				if (before != "" && endsWithWord(before)) || (after != "" && startsWithWord(after)) {
					continue
				}
			}
			hit = a
			break
		}
		if hit == nil {
			i++
			continue
		}
		start, stop := i, i+len(hit.Content)
		if hit.LStrip {
			start = max(last, len(strings.TrimRightFunc(s[:start], unicode.IsSpace)))
		}
		if hit.RStrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
		}
		emitText(last, start)
		out = append(out, segment{added: hit.ID})
		last, i = stop, stop
	}
	emitText(last, len(s))
	return out
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) || r == '_' || unicode.Is(unicode.Pc, r)
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isWordRune(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWordRune(r)
}

// ---- normalizers ----

type normalizeFunc func(string) string

func (t *hfTokenizer) addNormalizer(c *hfComponent) error {
	switch c.Type {
	case "Sequence":
		if err := eachComponent(c.Normalizers, t.addNormalizer); err != nil {
			return err
		}
	case "NFC":
		t.normalizers = append(t.normalizers, norm.NFC.String)
	case "NFD":
		t.normalizers = append(t.normalizers, norm.NFD.String)
	case "NFKC":
		t.normalizers = append(t.normalizers, norm.NFKC.String)
	case "NFKD":
		t.normalizers = append(t.normalizers, norm.NFKD.String)
	case "Lowercase":
		t.normalizers = append(t.normalizers, strings.ToLower)
	case "Prepend":
		p := c.Prepend
		t.normalizers = append(t.normalizers, func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		})
	case "Strip":
		left, right := c.Left, c.Right
		t.normalizers = append(t.normalizers, func(s string) string {
			if left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		})
	case "Replace":
		if c.Pattern == nil || c.Content == nil {
			return fmt.Errorf("%w: Replace without pattern/content", ErrMalformed)
		}
		content := *c.Content
		if c.Pattern.String != nil {
			old := *c.Pattern.String
			t.normalizers = append(t.normalizers, func(s string) string { return strings.ReplaceAll(s, old, content) })
			return nil
		}
		if c.Pattern.Regex == nil {
			return fmt.Errorf("%w: Replace pattern", ErrMalformed)
		}
		sp, err := newRegexSplitter(*c.Pattern.Regex)
		if err != nil {
			return err
		}
		t.normalizers = append(t.normalizers, func(s string) string {
			var b strings.Builder
			for _, m := range sp.findMatches(s) {
				if m.match {
					b.WriteString(content)
				} else {
					b.WriteString(s[m.start:m.end])
				}
			}
			return b.String()
		})
	default:
		return fmt.Errorf("%w: normalizer %q", ErrUnsupported, c.Type)
	}
	return nil
}

// ---- pre-tokenizers ----

type preTokenizer func([]segment) []segment

func (t *hfTokenizer) addPreTokenizer(c *hfComponent) error {
	switch c.Type {
	case "Sequence":
		if err := eachComponent(c.PreTokenizers, t.addPreTokenizer); err != nil {
			return err
		}
	case "Split":
		if c.Pattern == nil {
			return fmt.Errorf("%w: Split without pattern", ErrMalformed)
		}
		var sp *splitter
		switch {
		case c.Pattern.Regex != nil:
			s, err := newRegexSplitter(*c.Pattern.Regex)
			if err != nil {
				return err
			}
			sp = s
		case c.Pattern.String != nil:
			sp = newLiteralSplitter(*c.Pattern.String)
		default:
			return fmt.Errorf("%w: Split pattern", ErrMalformed)
		}
		behavior, invert := c.Behavior, c.Invert
		if _, err := applyBehavior(nil, behavior); err != nil {
			return err
		}
		t.pre = append(t.pre, func(in []segment) []segment {
			return splitEach(in, func(s string) []span {
				m := sp.findMatches(s)
				if invert {
					for i := range m {
						m[i].match = !m[i].match
					}
				}
				return m
			}, behavior)
		})
	case "Digits":
		behavior := "Contiguous"
		if c.IndividualDigits {
			behavior = "Isolated"
		}
		t.pre = append(t.pre, func(in []segment) []segment {
			return splitEach(in, func(s string) []span { return runeMatches(s, isNumeric) }, behavior)
		})
	case "Metaspace":
		repl := c.Replacement
		if repl == "" {
			repl = "▁"
		}
		scheme := c.PrependScheme
		if scheme == "" {
			scheme = "always"
			if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
				scheme = "never"
			}
		}
		split := c.Split == nil || *c.Split
		replRune, _ := utf8.DecodeRuneInString(repl)
		t.pre = append(t.pre, func(in []segment) []segment {
			out := make([]segment, 0, len(in))
			for _, seg := range in {
				s := strings.ReplaceAll(seg.s, " ", repl)
				if !strings.HasPrefix(s, repl) && (scheme == "always" || (scheme == "first" && seg.atStart)) {
					s = repl + s
				}
				seg.s = s
				if !split {
					out = append(out, seg)
					continue
				}
				out = append(out, splitEach([]segment{seg}, func(s string) []span {
					return runeMatches(s, func(r rune) bool { return r == replRune })
				}, "MergedWithNext")...)
			}
			return out
		})
	case "ByteLevel":
		addPrefix := c.AddPrefixSpace != nil && *c.AddPrefixSpace
		useRegex := c.UseRegex == nil || *c.UseRegex
		sp, err := newRegexSplitter(gpt2Pattern)
		if err != nil {
			return err
		}
		t.byteLevel = true
		t.pre = append(t.pre, func(in []segment) []segment {
			out := make([]segment, 0, len(in))
			for _, seg := range in {
				if addPrefix && !strings.HasPrefix(seg.s, " ") {
					seg.s = " " + seg.s
				}
				if useRegex {
					out = append(out, splitEach([]segment{seg}, sp.findMatches, "Isolated")...)
				} else {
					out = append(out, seg)
				}
			}
			for i := range out {
				out[i].s = byteLevelEncode(out[i].s)
			}
			return out
		})
	default:
		return fmt.Errorf("%w: pre-tokenizer %q", ErrUnsupported, c.Type)
	}
	return nil
}

// gpt2Pattern is the regex of tokenizers' ByteLevel pre-tokenizer (GPT-2).
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// runeMatches is tokenizers' find_matches for a char predicate: every matching character is its own
// match, and runs of other characters are single non-matched spans.
func runeMatches(s string, pred func(rune) bool) []span {
	var out []span
	prev := 0
	for i, r := range s {
		if !pred(r) {
			continue
		}
		if prev < i {
			out = append(out, span{prev, i, false})
		}
		n := utf8.RuneLen(r)
		if n < 0 {
			n = 1
		}
		out = append(out, span{i, i + n, true})
		prev = i + n
	}
	if prev < len(s) {
		out = append(out, span{prev, len(s), false})
	}
	return out
}

// splitEach splits every segment at the spans found by find, per tokenizers' SplitDelimiterBehavior;
// empty pieces are dropped.
func splitEach(in []segment, find func(string) []span, behavior string) []segment {
	out := make([]segment, 0, len(in))
	for _, seg := range in {
		spans, _ := applyBehavior(find(seg.s), behavior)
		for _, sp := range spans {
			if sp.match || sp.start == sp.end { // match marks "remove" here
				continue
			}
			out = append(out, segment{s: seg.s[sp.start:sp.end], atStart: seg.atStart && sp.start == 0, added: -1})
		}
	}
	return out
}

// applyBehavior turns matches into pieces; in the result, match == true means "drop this piece".
func applyBehavior(m []span, behavior string) ([]span, error) {
	var out []span
	switch behavior {
	case "Isolated":
		for _, s := range m {
			out = append(out, span{s.start, s.end, false})
		}
	case "Removed":
		out = m
	case "Contiguous":
		prev := false
		for i, s := range m {
			if i > 0 && s.match == prev {
				out[len(out)-1].end = s.end
			} else {
				out = append(out, span{s.start, s.end, false})
			}
			prev = s.match
		}
	case "MergedWithPrevious":
		prev := false
		for _, s := range m {
			if s.match && !prev && len(out) > 0 {
				out[len(out)-1].end = s.end
			} else {
				out = append(out, span{s.start, s.end, false})
			}
			prev = s.match
		}
	case "MergedWithNext":
		prev := false
		for i := len(m) - 1; i >= 0; i-- {
			s := m[i]
			if s.match && !prev && len(out) > 0 {
				out[len(out)-1].start = s.start
			} else {
				out = append(out, span{s.start, s.end, false})
			}
			prev = s.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	default:
		return nil, fmt.Errorf("%w: split behavior %q", ErrUnsupported, behavior)
	}
	return out, nil
}

// ---- byte-level mapping (GPT-2 bytes_to_unicode) ----

var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		r := rune(b)
		if !(b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF) {
			r = rune(256 + n)
			n++
		}
		b2r[b] = r
		r2b[r] = byte(b)
	}
	return b2r, r2b
}()

func byteLevelEncode(s string) string {
	var b strings.Builder
	b.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// byteLevelDecode is tokenizers' ByteLevel decoder for one token: the bytes behind its characters,
// or the token unchanged when a character is outside the byte alphabet.
func byteLevelDecode(tok string) ([]byte, bool) {
	out := make([]byte, 0, len(tok))
	for _, r := range tok {
		b, ok := runeToByte[r]
		if !ok {
			return []byte(tok), false
		}
		out = append(out, b)
	}
	return out, true
}

// ---- post-processor ----

func (t *hfTokenizer) addPostProcessor(c *hfComponent) error {
	switch c.Type {
	case "Sequence":
		if err := eachComponent(c.Processors, t.addPostProcessor); err != nil {
			return err
		}
	case "ByteLevel":
	case "TemplateProcessing":
		seen := false
		for _, p := range c.Single {
			switch {
			case p.Sequence != nil:
				seen = true
			case p.SpecialToken != nil:
				st, ok := c.SpecialTokens[p.SpecialToken.ID]
				if !ok {
					return fmt.Errorf("%w: template token %q is not in special_tokens", ErrMalformed, p.SpecialToken.ID)
				}
				if seen {
					t.suffixIDs = append(t.suffixIDs, st.IDs...)
				} else {
					t.prefixIDs = append(t.prefixIDs, st.IDs...)
				}
			}
		}
	case "RobertaProcessing", "BertProcessing":
		cls, err := tokenPairID(c.Cls)
		if err != nil {
			return err
		}
		sep, err := tokenPairID(c.Sep)
		if err != nil {
			return err
		}
		t.prefixIDs = append(t.prefixIDs, cls)
		t.suffixIDs = append(t.suffixIDs, sep)
	default:
		return fmt.Errorf("%w: post-processor %q", ErrUnsupported, c.Type)
	}
	return nil
}

func tokenPairID(p []json.RawMessage) (int, error) {
	if len(p) != 2 {
		return 0, fmt.Errorf("%w: expected [token, id]", ErrMalformed)
	}
	var id int
	if err := json.Unmarshal(p[1], &id); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return id, nil
}

// ---- decoders ----

type decodeFunc func([]string) []string

func (t *hfTokenizer) addDecoder(c *hfComponent) error {
	switch c.Type {
	case "Sequence":
		if err := eachComponent(c.Decoders, t.addDecoder); err != nil {
			return err
		}
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil || c.Content == nil {
			return fmt.Errorf("%w: Replace decoder supports string patterns only", ErrUnsupported)
		}
		old, repl := *c.Pattern.String, *c.Content
		t.decoders = append(t.decoders, func(toks []string) []string {
			for i := range toks {
				toks[i] = strings.ReplaceAll(toks[i], old, repl)
			}
			return toks
		})
	case "ByteFallback":
		t.decoders = append(t.decoders, decodeByteFallback)
	case "Fuse":
		t.decoders = append(t.decoders, func(toks []string) []string { return []string{strings.Join(toks, "")} })
	case "Strip":
		content := " "
		if c.Content != nil {
			content = *c.Content
		}
		cr, _ := utf8.DecodeRuneInString(content)
		start, stop := c.Start, c.Stop
		t.decoders = append(t.decoders, func(toks []string) []string {
			for i, tok := range toks {
				rs := []rune(tok)
				a, b := 0, len(rs)
				for a < start && a < b && rs[a] == cr {
					a++
				}
				for k := 0; k < stop && b > a && rs[b-1] == cr; k++ {
					b--
				}
				toks[i] = string(rs[a:b])
			}
			return toks
		})
	case "Metaspace":
		repl := c.Replacement
		if repl == "" {
			repl = "▁"
		}
		scheme := c.PrependScheme
		if scheme == "" {
			scheme = "always"
			if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
				scheme = "never"
			}
		}
		t.decoders = append(t.decoders, func(toks []string) []string {
			for i := range toks {
				with := " "
				if i == 0 && scheme != "never" {
					with = ""
				}
				toks[i] = strings.ReplaceAll(toks[i], repl, with)
			}
			return toks
		})
	case "ByteLevel":
		t.decoders = append(t.decoders, func(toks []string) []string {
			var buf []byte
			for _, tok := range toks {
				b, _ := byteLevelDecode(tok)
				buf = append(buf, b...)
			}
			return []string{lossyUTF8(buf)}
		})
	default:
		return fmt.Errorf("%w: decoder %q", ErrUnsupported, c.Type)
	}
	return nil
}

// decodeByteFallback turns runs of <0xNN> tokens into text; a run that is not valid UTF-8 becomes one
// U+FFFD per byte (tokenizers' ByteFallback decoder).
func decodeByteFallback(toks []string) []string {
	out := make([]string, 0, len(toks))
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			for range run {
				out = append(out, "\uFFFD")
			}
		}
		run = run[:0]
	}
	for _, tok := range toks {
		if len(tok) == 6 && strings.HasPrefix(tok, "<0x") && tok[5] == '>' {
			if v, err := strconv.ParseUint(tok[3:5], 16, 8); err == nil {
				run = append(run, byte(v))
				continue
			}
		}
		flush()
		out = append(out, tok)
	}
	flush()
	return out
}

// lossyUTF8 is Rust's String::from_utf8_lossy: each maximal prefix of an invalid sequence becomes one
// U+FFFD.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r != utf8.RuneError || n > 1 {
			sb.Write(b[:n])
			b = b[n:]
			continue
		}
		sb.WriteString("\uFFFD")
		b = b[invalidPrefixLen(b):]
	}
	return sb.String()
}

// invalidPrefixLen is the length of the maximal subpart of an ill-formed sequence at b[0] (Unicode
// §3.9, "U+FFFD substitution of maximal subparts").
func invalidPrefixLen(b []byte) int {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		if b[n] < lo || b[n] > hi {
			break
		}
		n++
		lo, hi = 0x80, 0xBF
	}
	return n
}
