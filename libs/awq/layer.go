package awq

import (
	"context"
	"fmt"
)

// Norm is a normalization layer's weight (and bias, nil for RMSNorm).
type Norm struct {
	Weight []float32
	Bias   []float32
}

// LayerGroup declares one scaling group of a decoder layer (notes §2.2), for example
// {Prev: "input_layernorm", Linears: q_proj, k_proj, v_proj, Inspect: the attention block}.
type LayerGroup struct {
	// Prev names the op that produces the linears' input and absorbs 1/s: a key of
	// Layer.Norms or of Layer.Linears.
	Prev string
	// Linears name the scaled linears (keys of Layer.Linears); they read one input (the
	// experts of a mixture-of-experts block each read the tokens routed to them, subsets of it).
	Linears []string
	// Input is the key of the group's input in Layer.Inputs, the input its statistics and
	// Inspect see; "" is Linears[0]'s. A mixture-of-experts block's experts' gate/up group reads
	// the block's input (AutoAWQ's input_feat of block_sparse_moe or mlp).
	Input string
	// Dense name linears of Layer.Dense that read the group's input without being quantized
	// (a router): the fold scales their columns too, so that they keep computing what they did.
	Dense []string
	// Inspect runs the compared module on the group's input; nil when the group has one
	// linear and the module is that linear.
	Inspect InspectFunc
}

// Layer is one decoder layer as AWQ needs it. QuantizeLayer modifies its weights and norms
// in place.
type Layer struct {
	Linears map[string]*Linear
	Norms   map[string]*Norm
	// Inputs holds the full-precision calibration input of every linear to quantize,
	// tokens×cols row-major (linears with the same input may share the slice): all tokens
	// for QuantizeLayer, one shard's tokens for the shard API (SHARDS.md), none for
	// PickScales and FinishLayer.
	Inputs map[string][]float32
	Tokens int
	// Rows holds the number of rows (tokens) of the Inputs that do not hold one per token of
	// the shard (an expert's input: the tokens routed to it); the others have Tokens rows.
	Rows map[string]int
	// Dense are linears that stay unquantized but absorb scales (LayerGroup.Dense).
	Dense map[string]*Linear
	// Groups in application order (AutoAWQ: attention input, v→o when shapes allow, MLP
	// input, up→down).
	Groups []LayerGroup
	// Arithmetic, if not nil, computes the shard API's sums instead of the host (a GPU's,
	// holding the shard's inputs itself): Inputs and the groups' Inspect are then not used,
	// Tokens still counts the shard's tokens.
	Arithmetic Arithmetic
}

// DropActivations forgets the shard's activations (Inputs, the groups' Inspect functions and
// the Arithmetic), so that their memory can go: what is left is what PickScales and
// FinishLayer read.
func (l *Layer) DropActivations() {
	l.Inputs, l.Arithmetic = nil, nil
	for i := range l.Groups {
		l.Groups[i].Inspect = nil
	}
}

// LayerResult is the outcome of QuantizeLayer.
type LayerResult struct {
	// Quantized holds the quantized weight of every linear of the layer.
	Quantized map[string]*Result
	// Scales holds the searched scales of each group (same order as Layer.Groups).
	Scales []*Scales
	// Clips holds the clipping bounds (rows×groups) of every clipped linear.
	Clips map[string][]float32
}

// QuantizeLayer runs AWQ on one decoder layer (notes §2.6): it searches the scales of every
// group with the original weights, folds all of them in (linears scaled in half precision,
// prev norms and linears divided), searches and applies clipping for every linear that
// Clippable allows, and quantizes every linear of the layer. The layer's full-precision
// outputs for the next layer must be computed by the caller before, from the original
// weights, as AutoAWQ propagates unquantized activations.
//
// QuantizeLayer is the shard API (SHARDS.md) run on one shard holding all tokens, so a run
// over any number of shards uses the same code, and one shard gives the same bytes.
func QuantizeLayer(ctx context.Context, l *Layer, cfg Config) (*LayerResult, error) {
	// The one-shard case of the shard API (SHARDS.md): every sum runs over the tokens in the
	// same order as a search over all tokens at once.
	sh := Whole(l)
	stats, err := CollectStats(l, sh, cfg)
	if err != nil {
		return nil, err
	}
	losses, err := CollectScaleLosses(ctx, l, sh, stats, cfg)
	if err != nil {
		return nil, err
	}
	scales, err := PickScales(l, stats, losses, cfg)
	if err != nil {
		return nil, err
	}
	clip, err := CollectClipStats(l, sh, scales, cfg)
	if err != nil {
		return nil, err
	}
	return FinishLayer(ctx, l, scales, clip, cfg)
}

// prepare applies cfg's defaults and checks the layer, with its calibration inputs if sh is
// not nil (the steps that read activations), and returns its groups and the token span of
// the shard it holds.
func (l *Layer) prepare(cfg Config, sh *Shard) (Config, []Group, span, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return cfg, nil, span{}, err
	}
	var sp span
	if sh != nil {
		if sp, err = sh.span(l.Tokens); err != nil {
			return cfg, nil, span{}, err
		}
	}
	for name, lin := range l.Linears {
		if err := lin.check(); err != nil {
			return cfg, nil, span{}, err
		}
		if gs := cfg.groupSize(lin.Cols); lin.Cols%gs != 0 {
			return cfg, nil, span{}, fmt.Errorf("%w: %s has %d columns, not a multiple of group size %d", ErrShape, name, lin.Cols, gs)
		}
		if x, ok := l.Inputs[name]; sh != nil && l.Arithmetic == nil && (!ok || len(x) != l.rows(name)*lin.Cols) {
			return cfg, nil, span{}, fmt.Errorf("%w: %s needs %d×%d calibration inputs, has %d values", ErrShape, name, l.rows(name), lin.Cols, len(x))
		}
	}
	groups := make([]Group, len(l.Groups))
	for i, lg := range l.Groups {
		if len(lg.Linears) == 0 {
			return cfg, nil, span{}, fmt.Errorf("%w: group %d (after %s) has no linears", ErrShape, i, lg.Prev)
		}
		g := Group{Inspect: lg.Inspect}
		for _, name := range lg.Linears {
			lin, ok := l.Linears[name]
			if !ok {
				return cfg, nil, span{}, fmt.Errorf("%w: group after %s names unknown linear %q", ErrShape, lg.Prev, name)
			}
			if lin.Cols != l.Linears[lg.Linears[0]].Cols {
				return cfg, nil, span{}, fmt.Errorf("%w: linears of the group after %s have %d and %d input features", ErrShape, lg.Prev, l.Linears[lg.Linears[0]].Cols, lin.Cols)
			}
			g.Linears = append(g.Linears, lin)
		}
		if sh != nil && l.Arithmetic == nil && lg.Inspect == nil && len(lg.Linears) != 1 {
			return cfg, nil, span{}, fmt.Errorf("%w: the group after %s has %d linears and needs an Inspect function", ErrShape, lg.Prev, len(lg.Linears))
		}
		if sh != nil {
			key := lg.inputKey()
			g.Input, g.Tokens = l.Inputs[key], l.rows(key)
			if l.Arithmetic == nil && len(g.Input) != g.Tokens*g.Linears[0].Cols {
				return cfg, nil, span{}, fmt.Errorf("%w: the group after %s needs %d×%d calibration inputs %q, has %d values", ErrShape, lg.Prev, g.Tokens, g.Linears[0].Cols, key, len(g.Input))
			}
		}
		for _, name := range lg.Dense {
			if d, ok := l.Dense[name]; !ok || d.check() != nil || d.Cols != g.Linears[0].Cols {
				return cfg, nil, span{}, fmt.Errorf("%w: the group after %s names dense linear %q, missing or not reading its input", ErrShape, lg.Prev, name)
			}
		}
		if _, isNorm := l.Norms[lg.Prev]; !isNorm {
			if _, isLinear := l.Linears[lg.Prev]; !isLinear {
				return cfg, nil, span{}, fmt.Errorf("%w: group prev op %q is neither a norm nor a linear of the layer", ErrShape, lg.Prev)
			}
		}
		groups[i] = g
	}
	return cfg, groups, sp, nil
}

// inputKey is the key of the group's input in Layer.Inputs.
func (lg LayerGroup) inputKey() string {
	if lg.Input != "" {
		return lg.Input
	}
	return lg.Linears[0]
}

// rows returns the number of rows of the input with the given key.
func (l *Layer) rows(key string) int {
	if n, ok := l.Rows[key]; ok {
		return n
	}
	return l.Tokens
}

// sampleTokens returns every step-th token of x (tokens×cols), divided by s if not nil.
func sampleTokens(x []float32, tokens, cols, step int, s []float32) []float32 {
	n := (tokens + step - 1) / step
	out := make([]float32, n*cols)
	for i := 0; i < n; i++ {
		src, dst := x[i*step*cols:(i*step+1)*cols], out[i*cols:(i+1)*cols]
		if s == nil {
			copy(dst, src)
			continue
		}
		for c, v := range src {
			dst[c] = v / s[c]
		}
	}
	return out
}
