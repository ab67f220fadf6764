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
	// Linears name the scaled linears (keys of Layer.Linears); they share one input.
	Linears []string
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
	// tokens×cols row-major (linears with the same input may share the slice).
	Inputs map[string][]float32
	Tokens int
	// Groups in application order (AutoAWQ: attention input, v→o when shapes allow, MLP
	// input, up→down).
	Groups []LayerGroup
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
func QuantizeLayer(ctx context.Context, l *Layer, cfg Config) (*LayerResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	for name, lin := range l.Linears {
		if err := lin.check(); err != nil {
			return nil, err
		}
		if gs := cfg.groupSize(lin.Cols); lin.Cols%gs != 0 {
			return nil, fmt.Errorf("%w: %s has %d columns, not a multiple of group size %d", ErrShape, name, lin.Cols, gs)
		}
		if x, ok := l.Inputs[name]; !ok || len(x) != l.Tokens*lin.Cols || l.Tokens <= 0 {
			return nil, fmt.Errorf("%w: %s needs %d×%d calibration inputs, has %d values", ErrShape, name, l.Tokens, lin.Cols, len(x))
		}
	}
	res := &LayerResult{Quantized: map[string]*Result{}, Clips: map[string][]float32{}}
	groups := make([]Group, len(l.Groups))
	for i, lg := range l.Groups {
		if len(lg.Linears) == 0 {
			return nil, fmt.Errorf("%w: group %d (after %s) has no linears", ErrShape, i, lg.Prev)
		}
		g := Group{Tokens: l.Tokens, Inspect: lg.Inspect}
		for _, name := range lg.Linears {
			lin, ok := l.Linears[name]
			if !ok {
				return nil, fmt.Errorf("%w: group after %s names unknown linear %q", ErrShape, lg.Prev, name)
			}
			g.Linears = append(g.Linears, lin)
		}
		g.Input = l.Inputs[lg.Linears[0]]
		if _, isNorm := l.Norms[lg.Prev]; !isNorm {
			if _, isLinear := l.Linears[lg.Prev]; !isLinear {
				return nil, fmt.Errorf("%w: group prev op %q is neither a norm nor a linear of the layer", ErrShape, lg.Prev)
			}
		}
		groups[i] = g
	}
	for _, g := range groups {
		s, err := SearchScale(ctx, g, cfg)
		if err != nil {
			return nil, err
		}
		res.Scales = append(res.Scales, s)
	}

	// Fold the scales in, and remember by which scales each linear's input was divided.
	inputScale := map[string][]float32{}
	for i, lg := range l.Groups {
		s := res.Scales[i].S
		if n, ok := l.Norms[lg.Prev]; ok {
			if err := FoldIntoNorm(n.Weight, n.Bias, s); err != nil {
				return nil, fmt.Errorf("folding into %s: %w", lg.Prev, err)
			}
		} else if err := FoldIntoLinear(l.Linears[lg.Prev], s); err != nil {
			return nil, err
		}
		for _, lin := range groups[i].Linears {
			if err := ScaleColumns(lin, s); err != nil {
				return nil, err
			}
		}
		for _, name := range lg.Linears {
			inputScale[name] = s
		}
	}

	for name, lin := range l.Linears {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if cfg.NoClip || !Clippable(name) {
			continue
		}
		x := l.Inputs[name]
		step := max(1, l.Tokens/cfg.ClipTokens)
		xs := sampleTokens(x, l.Tokens, lin.Cols, step, inputScale[name])
		m, err := searchClip(lin, xs, len(xs)/lin.Cols, cfg)
		if err != nil {
			return nil, err
		}
		res.Clips[name] = m
		if err := ApplyClip(lin, res.Clips[name], cfg.groupSize(lin.Cols)); err != nil {
			return nil, err
		}
	}

	for name, lin := range l.Linears {
		q, err := Quantize(lin.Weight, lin.Rows, lin.Cols, cfg)
		if err != nil {
			return nil, fmt.Errorf("quantizing %s: %w", name, err)
		}
		res.Quantized[name] = q
	}
	return res, nil
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
