package ggufmeta

import (
	"math"
	"math/big"
	"math/bits"
	"regexp"
	"strings"
)

// The reference's patterns are Python regular expressions: \d is any decimal digit (category Nd)
// and re.IGNORECASE also lets "i" match "İ" and "ı" (Python's special equivalences; the Kelvin
// sign for "k" and the long s for "s" are covered by Go's case folding as well).
var (
	// Metadata.id_to_title keeps these words as they are.
	titleKeepRE = regexp.MustCompile(`^(?:v\p{Nd}+(?:\.\p{Nd}+)*|\p{Nd}.*)$`)

	// get_model_id_components name part classes.
	versionRE  = regexp.MustCompile(`^(?i:(?:v|[iİı]ter)?\p{Nd}+(?:[.]\p{Nd}+)*)$`)
	quantRE    = regexp.MustCompile(`^(?i:[iİı]?q\p{Nd}(?:_[\p{L}\p{N}_])*|b?fp?(?:16|32))$`)
	sizeRE     = regexp.MustCompile(`^(?i:(?:A|\p{Nd}+x)?\p{Nd}+(?:[._]\p{Nd}+)?[KMBT]\p{Nd}?|small|m[iİı]n[iİı]|med[iİı]um|large|x?xl)$`)
	finetuneRE = regexp.MustCompile(`^(?i:chat|[iİı]nstruct|v[iİı]s[iİı]on|lora)$`)

	// Hugging Face id inside a URL (apply_metadata_heuristic); the dot is any character there too.
	hfURLRE = regexp.MustCompile(`^https?://huggingface.co/([^/]+/[^/]+)$`)
)

// idToTitle is Metadata.id_to_title: dashes become spaces and all-lowercase words are
// title-cased, except version numbers and words starting with a digit.
func idToTitle(s string) string {
	words := pySplit(strings.ReplaceAll(pyStrip(s), "-", " "))
	for i, w := range words {
		if pyIsLower(w) && !titleKeepRE.MatchString(w) {
			words[i] = pyTitle(w)
		}
	}
	return strings.Join(words, " ")
}

// idComponents is what get_model_id_components returns; nil stands for None.
type idComponents struct {
	fullName, org, basename, finetune, version, sizeLabel *string
}

const (
	partBasename = 1 << iota
	partSizeLabel
	partFinetune
	partVersion
	partType
)

func some(s string) *string { return &s }

// orNone is Python's `s or None`.
func orNone(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// modelIDComponents is Metadata.get_model_id_components: it splits "org/Name-7B-Instruct-v0.1"
// into the full name, organization, basename, finetune, version and size label, using the
// parameter count to tell a size ("8B") from a context length ("128k").
func modelIDComponents(modelID string, totalParams int64) idComponents {
	if strings.Contains(modelID, " ") {
		// a human-readable name rather than a Hugging Face id
		return idComponents{fullName: some(modelID)}
	}
	var c idComponents
	full := modelID
	if org, name, ok := strings.Cut(modelID, "/"); ok {
		c.org, full = some(org), name
	}
	if c.org != nil && len(*c.org) > 0 && (*c.org)[0] == '.' {
		c.org = nil // "./model" or "../model"
	}
	c.fullName = some(full)

	var parts []string
	for _, p := range strings.Split(full, "-") {
		if p != "" {
			parts = append(parts, p)
		}
	}
	types := make([]uint, len(parts))

	for i, part := range parts {
		switch {
		case versionRE.MatchString(part):
			types[i] |= partVersion
		case quantRE.MatchString(part):
			types[i] |= partType
			parts[i] = pyUpper(part)
		case i > 0 && sizeRE.MatchString(part):
			parts[i] = sizePart(part, totalParams, &types[i])
		case i > 0 && finetuneRE.MatchString(part):
			if totalParams < 0 && pyLower(part) == "lora" {
				// redundant "lora" when the output is a LoRA adapter
				types[i] |= partType
			} else {
				types[i] |= partFinetune
			}
		}
	}

	// Word-based size labels ("mini") are dropped when a number-based one is present.
	numeric := false
	for i, p := range parts {
		if types[i]&partSizeLabel != 0 && strings.IndexFunc(p, pyIsDecimal) >= 0 {
			numeric = true
		}
	}
	if numeric {
		for i, p := range parts {
			if types[i]&partSizeLabel != 0 && strings.IndexFunc(p, func(r rune) bool { return !pyIsAlpha(r) }) < 0 {
				types[i] &^= partSizeLabel
			}
		}
	}

	atStart := true
	for i, p := range parts {
		first := []rune(p)[0]
		if atStart && (types[i] == 0 && pyIsAlpha(first) || types[i]&partVersion != 0) {
			types[i] |= partBasename
		} else {
			atStart = false
			if types[i] == 0 {
				types[i] |= partFinetune
			}
		}
	}
	// A trailing version is not part of the basename.
	for i := len(parts) - 1; i >= 0; i-- {
		if types[i]&partBasename == 0 || bits.OnesCount(types[i]) < 2 {
			break
		}
		types[i] &^= partBasename
	}

	join := func(want func(uint) bool, dedupe bool) *string {
		var out []string
		seen := map[string]bool{}
		for i, p := range parts {
			if !want(types[i]) || dedupe && seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
		}
		return orNone(strings.Join(out, "-"))
	}
	c.basename = join(func(t uint) bool { return t&partBasename != 0 }, false)
	c.sizeLabel = join(func(t uint) bool { return t&partSizeLabel != 0 }, true)
	c.finetune = join(func(t uint) bool { return t&partFinetune != 0 }, false)
	c.version = join(func(t uint) bool { return t&partVersion != 0 && t&partBasename == 0 }, false)
	if c.sizeLabel == nil && c.finetune == nil && c.version == nil {
		c.basename = nil // too ambiguous
	}
	return c
}

// sizePart normalizes a size-like name part ("7b1" -> "7.1B", "1_5b" -> "1.5B") and marks it as
// a size label, or as a finetune when it is far from the model's parameter count (then it is
// most likely a context length such as "128k" and is lowercased).
func sizePart(part string, totalParams int64, t *uint) string {
	r := []rune(strings.ReplaceAll(part, "_", "."))
	n := len(r)
	if pyIsDecimal(r[n-1]) && n >= 2 {
		// bloom-7b1 notation
		r = append(append([]rune{}, r[:n-2]...), '.', r[n-1], r[n-2])
		n = len(r)
	}
	if n > 1 && pyIsDecimal(r[n-2]) && strings.ContainsRune("kmbt", r[n-1]) {
		r[n-1] -= 'a' - 'A'
	}
	if totalParams != 0 {
		if num, ok := pyFloat(string(r[:n-1])); ok {
			scale := 1.0 / 1000 // pow(1000, -1) when the suffix is not one of KMBT
			if idx := strings.IndexRune(" KMBT", r[n-1]); idx >= 0 {
				scale = math.Pow(1000, float64(idx))
			}
			if contextLength(num*scale, totalParams) {
				*t |= partFinetune
				r[n-1] = []rune(pyLower(string(r[n-1])))[0]
			}
		}
	}
	if *t == 0 {
		*t |= partSizeLabel
	}
	return string(r)
}

// contextLength evaluates
//
//	(total < 0 and label < abs(total) // 8) or (total > 0 and abs(label - total) > 7 * total // 8)
//
// with Python's exact comparison between floats and ints.
func contextLength(label float64, total int64) bool {
	if math.IsNaN(label) {
		return false // every comparison with NaN is false
	}
	cmp := func(f float64, i *big.Int) int { return new(big.Float).SetFloat64(f).Cmp(new(big.Float).SetInt(i)) }
	t := big.NewInt(total)
	if total < 0 {
		abs8 := new(big.Int).Div(new(big.Int).Abs(t), big.NewInt(8))
		return cmp(label, abs8) < 0
	}
	if total > 0 {
		lim := new(big.Int).Div(new(big.Int).Mul(t, big.NewInt(7)), big.NewInt(8))
		return cmp(math.Abs(label-float64(total)), lim) > 0
	}
	return false
}
