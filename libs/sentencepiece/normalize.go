package sentencepiece

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

const spaceSymbol = "\u2581" // ▁, SentencePiece's escaped whitespace

// normalizer reproduces SentencePiece's Normalizer::Normalize (normalizer.cc): precompiled character
// map (a darts-clone double-array trie over UTF-8 bytes plus a blob of replacement strings), whitespace
// trimming and collapsing, the dummy prefix and whitespace escaping.
type normalizer struct {
	spec         NormalizerSpec
	wsAsSuffix   bool
	trie         []uint32 // darts-clone units; nil for identity
	replacements []byte
	userSymbols  *prefixMatcher // user-defined pieces are never normalized
}

func newNormalizer(spec NormalizerSpec, wsAsSuffix bool, userSymbols *prefixMatcher) (*normalizer, error) {
	n := &normalizer{spec: spec, wsAsSuffix: wsAsSuffix, userSymbols: userSymbols}
	if cm := spec.PrecompiledCharsmap; len(cm) > 0 {
		if len(cm) < 4 {
			return nil, fmt.Errorf("%w: precompiled_charsmap too short", ErrMalformed)
		}
		size := binary.LittleEndian.Uint32(cm)
		if uint64(size) >= uint64(len(cm)-4)+1 || size%4 != 0 {
			return nil, fmt.Errorf("%w: precompiled_charsmap trie size %d out of range", ErrMalformed, size)
		}
		blob := cm[4 : 4+size]
		n.trie = make([]uint32, size/4)
		for i := range n.trie {
			n.trie[i] = binary.LittleEndian.Uint32(blob[4*i:])
		}
		n.replacements = cm[4+size:]
	}
	return n, nil
}

// prefix returns the normalized form of the longest prefix of s that the model maps, and how many
// bytes of s it consumed.
func (n *normalizer) prefix(s string) (string, int) {
	if n.userSymbols != nil {
		if l := n.userSymbols.match(s); l > 0 {
			return s[:l], l
		}
	}
	if n.trie != nil {
		if l, v, ok := n.longestPrefix(s); ok {
			end := int(v)
			for end < len(n.replacements) && n.replacements[end] != 0 {
				end++
			}
			if int(v) <= len(n.replacements) {
				return string(n.replacements[v:end]), l
			}
		}
	}
	r, size := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && size <= 1 {
		// Malformed UTF-8: SentencePiece emits U+FFFD and consumes one byte.
		return "\uFFFD", 1
	}
	return s[:size], size
}

// longestPrefix is darts-clone's commonPrefixSearch keeping the longest hit.
func (n *normalizer) longestPrefix(s string) (length int, value uint32, ok bool) {
	units := n.trie
	unitAt := func(i uint32) (uint32, bool) {
		if int(i) >= len(units) {
			return 0, false
		}
		return units[i], true
	}
	offset := func(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }
	hasLeaf := func(u uint32) bool { return (u>>8)&1 == 1 }
	label := func(u uint32) uint32 { return u & ((1 << 31) | 0xFF) }
	valueOf := func(u uint32) uint32 { return u & ((1 << 31) - 1) }

	u, good := unitAt(0)
	if !good {
		return 0, 0, false
	}
	pos := offset(u)
	for i := 0; i < len(s); i++ {
		c := uint32(s[i])
		pos ^= c
		u, good = unitAt(pos)
		if !good || label(u) != c {
			break
		}
		pos ^= offset(u)
		if hasLeaf(u) {
			leaf, good := unitAt(pos)
			if !good {
				break
			}
			length, value, ok = i+1, valueOf(leaf), true
		}
	}
	return length, value, ok
}

// normalize returns the normalized text that the segmentation model sees.
func (n *normalizer) normalize(in string) string {
	if in == "" {
		return ""
	}
	if n.spec.RemoveExtraWhitespaces {
		for in != "" {
			p, l := n.prefix(in)
			if p != " " {
				break
			}
			in = in[l:]
		}
		if in == "" {
			return ""
		}
	}
	ws := " "
	if n.spec.EscapeWhitespaces {
		ws = spaceSymbol
	}
	var b strings.Builder
	b.Grow(len(in) + len(in)/2 + 3)
	if !n.wsAsSuffix && n.spec.AddDummyPrefix {
		b.WriteString(ws)
	}
	prevSpace := n.spec.RemoveExtraWhitespaces
	for in != "" {
		p, l := n.prefix(in)
		in = in[l:]
		if prevSpace {
			p = strings.TrimLeft(p, " ")
		}
		if p != "" {
			if n.spec.EscapeWhitespaces {
				for i := 0; i < len(p); i++ {
					if p[i] == ' ' {
						b.WriteString(spaceSymbol)
					} else {
						b.WriteByte(p[i])
					}
				}
			} else {
				b.WriteString(p)
			}
			prevSpace = p[len(p)-1] == ' '
		}
		if !n.spec.RemoveExtraWhitespaces {
			prevSpace = false
		}
	}
	out := b.String()
	if n.spec.RemoveExtraWhitespaces {
		for strings.HasSuffix(out, ws) {
			out = out[:len(out)-len(ws)]
		}
	}
	if n.wsAsSuffix && n.spec.AddDummyPrefix {
		out += ws
	}
	return out
}

// prefixMatcher finds the longest user-defined symbol at the start of a string.
type prefixMatcher struct {
	set    map[string]struct{}
	maxLen int
}

func newPrefixMatcher(symbols []string) *prefixMatcher {
	if len(symbols) == 0 {
		return nil
	}
	m := &prefixMatcher{set: make(map[string]struct{}, len(symbols))}
	for _, s := range symbols {
		m.set[s] = struct{}{}
		m.maxLen = max(m.maxLen, len(s))
	}
	return m
}

// match returns the byte length of the longest symbol that prefixes s, or 0.
func (m *prefixMatcher) match(s string) int {
	if m == nil {
		return 0
	}
	for l := min(m.maxLen, len(s)); l > 0; l-- {
		if _, ok := m.set[s[:l]]; ok {
			return l
		}
	}
	return 0
}
