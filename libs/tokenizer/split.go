package tokenizer

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Pre-tokenizer regexes in tokenizer.json are Oniguruma patterns with Unicode classes and, in every
// GPT-2-derived family, the lookahead alternative `\s+(?!\S)`. Go's RE2 has neither Unicode \s nor
// lookahead, so a pattern is split into its top-level alternatives: runs of ordinary alternatives are
// compiled (with \s, \S, \d, \w rewritten to their Unicode meaning) and anchored at the current
// position, and `\s+(?!\S)` is matched by hand. Trying them in order at each position gives the
// backtracking engine's leftmost-first result.

// onigSpace is Oniguruma's Unicode \s (White_Space), as class-body text.
const onigSpace = `\t\n\x0B\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`

// Unicode \w (Letter, Mark, Decimal_Number, Connector_Punctuation) and \d, as class-body text.
const (
	onigWord  = `\p{L}\p{M}\p{Nd}\p{Pc}`
	onigDigit = `\p{Nd}`
)

func isOnigSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}

// splitter finds the matches of one pre-tokenizer pattern.
type splitter struct {
	parts []splitPart
}

type splitPart struct {
	re        *regexp.Regexp // anchored with ^; nil for the lookahead alternative
	spaceLook bool           // `\s+(?!\S)`
}

func newRegexSplitter(pattern string) (*splitter, error) {
	alts, err := topLevelAlternatives(pattern)
	if err != nil {
		return nil, err
	}
	s := &splitter{}
	var pending []string
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		re, err := regexp.Compile(`^(?:` + strings.Join(pending, "|") + `)`)
		if err != nil {
			return fmt.Errorf("%w: pre-tokenizer regex %q: %v", ErrUnsupported, pattern, err)
		}
		s.parts = append(s.parts, splitPart{re: re})
		pending = nil
		return nil
	}
	for _, a := range alts {
		if a == `\s+(?!\S)` {
			if err := flush(); err != nil {
				return nil, err
			}
			s.parts = append(s.parts, splitPart{spaceLook: true})
			continue
		}
		t, err := translateOnig(a)
		if err != nil {
			return nil, fmt.Errorf("%w: pre-tokenizer regex %q: %v", ErrUnsupported, pattern, err)
		}
		pending = append(pending, t)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return s, nil
}

func newLiteralSplitter(lit string) *splitter {
	return &splitter{parts: []splitPart{{re: regexp.MustCompile(`^` + regexp.QuoteMeta(lit))}}}
}

// matchAt returns the length of the match starting exactly at s[0], or 0.
func (sp *splitter) matchAt(s string) int {
	for _, p := range sp.parts {
		if p.spaceLook {
			if n := spaceNotBeforeNonSpace(s); n > 0 {
				return n
			}
			continue
		}
		if loc := p.re.FindStringIndex(s); loc != nil && loc[1] > 0 {
			return loc[1]
		}
	}
	return 0
}

// spaceNotBeforeNonSpace matches `\s+(?!\S)` at the start of s: the whole whitespace run if it ends the
// text, else the run less its last character (which must then stay for the next token).
func spaceNotBeforeNonSpace(s string) int {
	end, last := 0, 0
	for end < len(s) {
		r, n := utf8.DecodeRuneInString(s[end:])
		if !isOnigSpace(r) {
			break
		}
		last = n
		end += n
	}
	if end == 0 {
		return 0
	}
	if end == len(s) {
		return end
	}
	return end - last // 0 when the run is a single character
}

// span is a piece of the input and whether the pattern matched it.
type span struct {
	start, end int
	match      bool
}

// findMatches covers s with alternating non-matched and matched spans (tokenizers' find_matches).
func (sp *splitter) findMatches(s string) []span {
	var out []span
	prev := 0
	for i := 0; i < len(s); {
		n := sp.matchAt(s[i:])
		if n == 0 {
			_, sz := utf8.DecodeRuneInString(s[i:])
			i += sz
			continue
		}
		if prev < i {
			out = append(out, span{prev, i, false})
		}
		out = append(out, span{i, i + n, true})
		i += n
		prev = i
	}
	if prev < len(s) {
		out = append(out, span{prev, len(s), false})
	}
	return out
}

// topLevelAlternatives splits a pattern at the | characters outside groups and classes.
func topLevelAlternatives(p string) ([]string, error) {
	var (
		alts  []string
		depth int
		class bool
		start int
	)
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\':
			i++
		case class:
			if c == ']' {
				class = false
			}
		case c == '[':
			class = true
			if i+1 < len(p) && p[i+1] == '^' {
				i++
			}
			if i+1 < len(p) && p[i+1] == ']' {
				i++ // a literal ] first in a class
			}
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("%w: unbalanced ) in %q", ErrUnsupported, p)
			}
		case c == '|' && depth == 0:
			alts = append(alts, p[start:i])
			start = i + 1
		}
	}
	if depth != 0 || class {
		return nil, fmt.Errorf("%w: unbalanced pattern %q", ErrUnsupported, p)
	}
	return append(alts, p[start:]), nil
}

// translateOnig rewrites an Oniguruma alternative (without lookaround) for Go's regexp, giving the
// Perl classes their Unicode meaning.
func translateOnig(a string) (string, error) {
	for _, look := range []string{"(?=", "(?!", "(?<=", "(?<!", "(?>"} {
		if strings.Contains(a, look) {
			return "", fmt.Errorf("lookaround or atomic group %q is not supported", look)
		}
	}
	var b strings.Builder
	class := false
	for i := 0; i < len(a); i++ {
		c := a[i]
		if c == '\\' && i+1 < len(a) {
			e := a[i+1]
			i++
			switch e {
			case 's', 'd', 'w':
				body := map[byte]string{'s': onigSpace, 'd': onigDigit, 'w': onigWord}[e]
				if class {
					b.WriteString(body)
				} else {
					b.WriteString("[" + body + "]")
				}
			case 'S', 'D', 'W':
				if class {
					return "", fmt.Errorf(`\%c inside a character class is not supported`, e)
				}
				body := map[byte]string{'S': onigSpace, 'D': onigDigit, 'W': onigWord}[e]
				b.WriteString("[^" + body + "]")
			default:
				b.WriteByte('\\')
				b.WriteByte(e)
			}
			continue
		}
		switch {
		case class && c == ']':
			class = false
		case !class && c == '[':
			class = true
			b.WriteByte(c)
			if i+1 < len(a) && a[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			continue
		case !class && (c == '+' || c == '?' || c == '*') && i+1 < len(a) && a[i+1] == '+':
			return "", fmt.Errorf("possessive quantifier is not supported")
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// isNumeric is Rust's char::is_numeric (general categories Nd, Nl, No).
func isNumeric(r rune) bool { return unicode.IsNumber(r) }
