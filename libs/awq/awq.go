// Package awq implements activation-aware weight quantization (Lin et al., 2023) as AutoAWQ
// does it (which agrees with mit-han-lab/llm-awq up to its duo_scaling option): the per-group
// scale search, the clipping search, folding the scales into the preceding operation, and the
// zero-point group quantizer, in half precision where AutoAWQ uses half precision.
//
// Weights are row-major [rows = out_features][cols = in_features] float32 matrices and
// activations are row-major [tokens][features]. The module forward passes that the scale
// search compares are supplied by the caller as functions, so this package does not depend
// on a particular runtime.
package awq

import (
	"errors"
	"fmt"

	"quantfleet.dev/libs/fault"
)

// Defaults of Config (AutoAWQ's).
const (
	DefaultBits         = 4
	DefaultGroupSize    = 128
	DefaultGrid         = 20
	DefaultMaxShrink    = 0.5
	DefaultClipGrid     = 20
	DefaultClipTokens   = 512
	DefaultClipRowBatch = 256
)

// Sentinel errors.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("awq: invalid config")
	// ErrShape reports inconsistent dimensions.
	ErrShape = errors.New("awq: shape mismatch")
	// ErrNonFinite reports a NaN or infinite weight, or a search whose every loss was
	// NaN or infinite: the model's weights, or its activations on the calibration text, are at fault.
	ErrNonFinite = fault.New(fault.ErrBadInput, "awq: non-finite value")
	// ErrPartial reports a partial result of the shard API (SHARDS.md) that cannot be used:
	// undecodable, merged out of shard order, incomplete, or computed from other stats,
	// scales or config than it is combined with. Retrying the same combination cannot help.
	ErrPartial = fault.New(fault.ErrPermanent, "awq: invalid partial result")
)

// Config selects the quantization and the searches. The zero value, after defaults, is
// AutoAWQ's: 4 bits, group 128, duo scaling, clipping on.
type Config struct {
	// Bits per weight (the GEMM checkpoint format holds 4). 0 means DefaultBits.
	Bits int
	// GroupSize is the number of input columns per group; 0 means DefaultGroupSize, -1 one
	// group per row.
	GroupSize int
	// Grid is the number of scale exponents tried, r = k/Grid for k = 0..Grid−1 (r = 1 is
	// never tried). 0 means DefaultGrid.
	Grid int
	// PlainScaling uses s = x_mean^r (llm-awq's grid) instead of AutoAWQ's default
	// duo scaling s = x_mean^r / (w_mean^(1−r) + 1e-4).
	PlainScaling bool
	// KeepIdentity adds s = 1 (no scaling) as a candidate, as llm-compressor does, so the
	// chosen scales never do worse than plain quantization on the calibration data. With
	// PlainScaling, r = 0 is already s = 1. AutoAWQ does not do this.
	KeepIdentity bool
	// NoClip skips the clipping search.
	NoClip bool
	// MaxShrink and ClipGrid: clipping tries max·(1 − i/ClipGrid) for i < MaxShrink·ClipGrid.
	// 0 means the defaults (0.5 and 20).
	MaxShrink float64
	ClipGrid  int
	// ClipTokens is the target number of calibration tokens the clipping search uses (every
	// max(1, tokens/ClipTokens)-th token). 0 means DefaultClipTokens.
	ClipTokens int
}

func (c Config) withDefaults() (Config, error) {
	if c.Bits == 0 {
		c.Bits = DefaultBits
	}
	if c.GroupSize == 0 {
		c.GroupSize = DefaultGroupSize
	}
	if c.Grid == 0 {
		c.Grid = DefaultGrid
	}
	if c.MaxShrink == 0 {
		c.MaxShrink = DefaultMaxShrink
	}
	if c.ClipGrid == 0 {
		c.ClipGrid = DefaultClipGrid
	}
	if c.ClipTokens == 0 {
		c.ClipTokens = DefaultClipTokens
	}
	switch {
	case c.Bits < 2 || c.Bits > 8:
		return c, fmt.Errorf("%w: %d bits", ErrConfig, c.Bits)
	case c.GroupSize < -1:
		return c, fmt.Errorf("%w: group size %d", ErrConfig, c.GroupSize)
	case c.Grid < 1 || c.ClipGrid < 1 || c.ClipTokens < 1 || !(c.MaxShrink > 0 && c.MaxShrink < 1):
		return c, fmt.Errorf("%w: grid %d, clip grid %d, clip tokens %d, max shrink %v", ErrConfig, c.Grid, c.ClipGrid, c.ClipTokens, c.MaxShrink)
	}
	return c, nil
}

func (c Config) groupSize(cols int) int {
	if c.GroupSize == -1 {
		return cols
	}
	return c.GroupSize
}
