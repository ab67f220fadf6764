package awq

import (
	"context"
	"fmt"
)

// Arithmetic computes the sums of the shard API's steps (SHARDS.md) for one layer and the
// shard of calibration tokens it holds: the work that reads activations or grows with the
// weights, as opposed to the bookkeeping (spans, keys, candidates, picks, merges), which stays
// in this package, so that every implementation yields the same partial objects. The host
// implementation runs on Layer.Inputs and the groups' Inspect functions; a GPU's keeps the
// layer's weights and its captured inputs on the device (Layer.Arithmetic). Results must be
// deterministic functions of their arguments and the shard.
//
// Group indices refer to Layer.Groups; cfg has its defaults applied.
type Arithmetic interface {
	// AbsSums returns Σ_t |x[t][c]| (float64, tokens in order) per input channel c of the
	// input of group i.
	AbsSums(ctx context.Context, group int) ([]float64, error)
	// Losses returns, per candidate scale vector, Σ (y_fp − y_q)² (float64) over the outputs of
	// group i's compared module (its Inspect, or its single linear) on the shard, y_q with the
	// group's weights replaced by Q(W·diag(s))·diag(1/s) in half precision (scaledQuant), and
	// the number of output values.
	Losses(ctx context.Context, group int, cands [][]float32, cfg Config) ([]float64, int64, error)
	// Gram returns the float32 Gram matrices (one gs×gs matrix per group of gs input
	// columns) of the input of the named linear at the shard's tokens first, first+step, …
	// (shard-local indices of the input's rows, first < its rows), each divided by s when s is not nil, and the
	// number of those tokens.
	Gram(ctx context.Context, linear string, first, step int, s []float32, gs int) ([]float32, int64, error)
	// SearchClip returns the clipping bounds (rows×groups) of lin's scaled weight from the
	// Gram matrices of n sampled tokens, as searchClipGram. It reads no activations.
	SearchClip(ctx context.Context, lin *Linear, gram []float32, n int, cfg Config) ([]float32, error)
}

// host is the Arithmetic of the host: l.Inputs and the groups' Inspect functions.
type host struct {
	l      *Layer
	groups []Group
}

// arithmetic returns l.Arithmetic, or the host's on l's inputs and groups (from prepare).
func (l *Layer) arithmetic(groups []Group) Arithmetic {
	if l.Arithmetic != nil {
		return l.Arithmetic
	}
	return host{l, groups}
}

func (h host) AbsSums(_ context.Context, group int) ([]float64, error) {
	g := h.groups[group]
	return sumAbs(g.Input, g.Tokens, g.Linears[0].Cols), nil
}

func (h host) Losses(ctx context.Context, group int, cands [][]float32, cfg Config) ([]float64, int64, error) {
	return groupLosses(ctx, h.groups[group], cands, cfg)
}

func (h host) Gram(_ context.Context, linear string, first, step int, s []float32, gs int) ([]float32, int64, error) {
	lin, x, rows := h.l.Linears[linear], h.l.Inputs[linear], h.l.rows(linear)
	if lin == nil || first < 0 || first >= rows {
		return nil, 0, fmt.Errorf("%w: Gram of %q from token %d of %d", ErrShape, linear, first, rows)
	}
	xs := sampleTokens(x[first*lin.Cols:], rows-first, lin.Cols, step, s)
	n := len(xs) / lin.Cols
	return gram(xs, n, lin.Cols, gs), int64(n), nil
}

func (host) SearchClip(_ context.Context, lin *Linear, gram []float32, n int, cfg Config) ([]float32, error) {
	return searchClipGram(lin, gram, n, cfg), nil
}

// QuantizerConstants returns the largest code 2^bits − 1 and the floor of a group's range
// (1e-5 as a half value) of the zero-point quantizer, for an Arithmetic that pseudo-quantizes
// elsewhere: scale = f16(max(f16(max−min), eps)/maxInt), zero = clamp(−round(f16(min/scale)),
// 0, maxInt), code = clamp(round(f16(w/scale)) + zero, 0, maxInt), value f16((code−zero)·scale),
// rounding half to even, every operation in float32.
func QuantizerConstants(bits int) (maxInt, eps float32) {
	q := newQuantizer(bits)
	return q.maxInt, q.eps
}

// ClipShrinks is the number of clipping bounds the search tries per row-group:
// max·(1 − i/ClipGrid) for i < ClipShrinks(cfg); cfg has its defaults applied.
func ClipShrinks(cfg Config) int { return int(cfg.MaxShrink * float64(cfg.ClipGrid)) }

// Sums returns the statistics' Σ|x| per group and input channel (not a copy), for tests that
// compare implementations.
func (st *Stats) Sums() [][]float64 { return st.sums }

// Sums returns the losses' sums per group and candidate and the output counts per group (not
// copies), for tests that compare implementations.
func (sl *ScaleLosses) Sums() ([][]float64, []int64) { return sl.sums, sl.counts }
