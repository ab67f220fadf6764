package domain

import (
	"strconv"
	"strings"
)

// GGUFLevels are the GGUF quantization levels: the seed's 14 llama.cpp mixes, then the plain float
// outputs. Canonical spelling is upper case.
var GGUFLevels = []string{
	"Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M",
	"Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0",
	"F16", "BF16", "F32",
}

// GPTQLevels are the GPTQ bit widths.
var GPTQLevels = []string{"2bit", "3bit", "4bit", "8bit"}

// AWQLevels are the AWQ bit widths.
var AWQLevels = []string{"4bit"}

// Levels returns the quantization levels of a format in canonical spelling, or nil for an unknown
// format. The slice is shared: do not modify it.
func Levels(f OutputFormat) []string {
	switch f {
	case FormatGGUF:
		return GGUFLevels
	case FormatGPTQ:
		return GPTQLevels
	case FormatAWQ:
		return AWQLevels
	}
	return nil
}

// ParseLevel returns the canonical spelling of level for format f ("q4_k_m" → "Q4_K_M",
// "4BIT" → "4bit") and, for GPTQ and AWQ, its bit width (0 for GGUF), or an error wrapping
// ErrInvalidConfig if f has no such level. It is the one parser of levels.
func ParseLevel(f OutputFormat, level string) (name string, bits int, err error) {
	levels := Levels(f)
	if levels == nil {
		return "", 0, invalid("target_format", "target_format %q is not valid (valid: %s)", f, joinEnum(outputFormats))
	}
	for _, l := range levels {
		if strings.EqualFold(l, strings.TrimSpace(level)) {
			if b, ok := strings.CutSuffix(l, "bit"); ok {
				bits, _ = strconv.Atoi(b)
			}
			return l, bits, nil
		}
	}
	return "", 0, invalid("quantization_level", "level %s is not a %s level (valid: %s)", level, f, strings.Join(levels, ", "))
}
