package ggufmeta

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/language"
)

// This file holds the few Python str methods the reference converter relies on, with CPython's
// Unicode semantics (which differ from Go's strings/unicode packages in small ways).

// pyIsSpace is str.isspace for one character: Go's unicode.IsSpace plus the ASCII information
// separators U+001C..U+001F, which CPython counts as whitespace (bidi class B/S).
func pyIsSpace(r rune) bool {
	if r >= 0x1c && r <= 0x1f {
		return true
	}
	return unicode.IsSpace(r)
}

// pyStrip is str.strip() without arguments.
func pyStrip(s string) string { return strings.TrimFunc(s, pyIsSpace) }

// pySplit is str.split() without arguments.
func pySplit(s string) []string { return strings.FieldsFunc(s, pyIsSpace) }

// CPython's case predicates use the derived Lowercase/Uppercase properties (category Ll/Lu plus
// Other_Lowercase/Other_Uppercase), not the general category alone.
func pyIsLowerRune(r rune) bool {
	return unicode.IsLower(r) || unicode.Is(unicode.Other_Lowercase, r)
}

func pyIsUpperRune(r rune) bool {
	return unicode.IsUpper(r) || unicode.Is(unicode.Other_Uppercase, r)
}

func pyIsCased(r rune) bool {
	return pyIsLowerRune(r) || pyIsUpperRune(r) || unicode.IsTitle(r)
}

// pyIsDecimal is str.isdecimal for one character (category Nd); it is also what \d matches in
// Python's Unicode regular expressions.
func pyIsDecimal(r rune) bool { return unicode.Is(unicode.Nd, r) }

// pyIsAlpha is str.isalpha for one character (categories Lu, Ll, Lt, Lm, Lo).
func pyIsAlpha(r rune) bool { return unicode.IsLetter(r) }

// pyIsLower is str.islower: no upper- or titlecase character and at least one lowercase one.
func pyIsLower(s string) bool {
	cased := false
	for _, r := range s {
		if pyIsUpperRune(r) || unicode.IsTitle(r) {
			return false
		}
		if !cased && pyIsLowerRune(r) {
			cased = true
		}
	}
	return cased
}

// pyTitle is str.title: a character gets its full titlecase mapping when the character before it
// is uncased, its lowercase mapping otherwise ("gpt4all" -> "Gpt4All", "ß" -> "Ss").
func pyTitle(s string) string {
	var b strings.Builder
	title := cases.Title(language.Und, cases.NoLower)
	prevCased := false
	for _, r := range s {
		if prevCased {
			b.WriteString(cases.Lower(language.Und).String(string(r)))
		} else {
			b.WriteString(title.String(string(r)))
		}
		prevCased = pyIsCased(r)
	}
	return b.String()
}

// pyUpper is str.upper with full case mappings ("ß" -> "SS").
func pyUpper(s string) string { return cases.Upper(language.Und).String(s) }

// pyLower is str.lower with full case mappings.
func pyLower(s string) string { return cases.Lower(language.Und).String(s) }

// pyReadText mirrors reading a file opened in text mode (universal newlines): "\r\n" and "\r"
// become "\n".
func pyReadText(b []byte) string {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}

// pySplitLines is str.splitlines(): it breaks at every Unicode line boundary CPython knows and
// drops the separators; a final separator does not start an empty line.
func pySplitLines(s string) []string {
	var lines []string
	start := 0
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= 0x80 {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		sep := 0
		switch r {
		case '\n', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
			sep = size
		case '\r':
			sep = 1
			if i+1 < len(s) && s[i+1] == '\n' {
				sep = 2
			}
		}
		if sep == 0 {
			i += size
			continue
		}
		lines = append(lines, s[start:i])
		i += sep
		start = i
	}
	if start < len(s) {
		lines = append(lines, s[start:])
	}
	return lines
}

// pyPathName is pathlib.PurePosixPath(p).name: the last non-empty, non-"." component, or "".
func pyPathName(p string) string {
	parts := strings.Split(p, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if parts[i] != "" && parts[i] != "." {
			return parts[i]
		}
	}
	return ""
}

// asciiDigits replaces every decimal digit (category Nd, any script) by its ASCII digit, as
// Python's int() and float() accept them.
func asciiDigits(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 || !pyIsDecimal(r) {
			return r
		}
		// Nd characters come in contiguous runs of ten starting at zero.
		start := r
		for pyIsDecimal(start - 1) {
			start--
		}
		return '0' + (r-start)%10
	}, s)
}
