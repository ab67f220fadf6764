package awq

import (
	"context"
	"fmt"
	"math"

	"quantfleet.dev/libs/transformer"
)

// Linear is a linear layer: y = x·Wᵀ + b.
type Linear struct {
	Name   string
	Rows   int       // out_features
	Cols   int       // in_features
	Weight []float32 // rows×cols row-major
	Bias   []float32 // nil, or rows values
}

func (l *Linear) check() error {
	if l.Rows <= 0 || l.Cols <= 0 || len(l.Weight) != l.Rows*l.Cols || (l.Bias != nil && len(l.Bias) != l.Rows) {
		return fmt.Errorf("%w: linear %s: %d weights, %d biases for %d×%d", ErrShape, l.Name, len(l.Weight), len(l.Bias), l.Rows, l.Cols)
	}
	return nil
}

// InspectFunc runs the module whose output error the scale search minimizes (for example a
// whole attention block for q/k/v, or the MLP for gate/up) on the group's calibration input,
// with weights[i] substituted for the weight of the group's i-th linear, and returns its
// output. Outputs are compared element by element, so any fixed layout works.
type InspectFunc func(ctx context.Context, weights [][]float32) ([]float32, error)

// Group is a set of linears that read the same input, whose input channels are scaled by
// one vector s: W ← W·diag(s), and the op producing the input absorbs 1/s.
type Group struct {
	Linears []*Linear
	// Input is the linears' common calibration input, tokens×cols row-major.
	Input  []float32
	Tokens int
	// Inspect runs the module whose output is compared. Nil means the module is the single
	// linear of the group, which SearchScale then evaluates itself.
	Inspect InspectFunc
}

// Scales is the result of a scale search.
type Scales struct {
	// S is the per-input-channel scale (half-precision values).
	S []float32
	// Ratio is the exponent r of the chosen grid point, or -1 when no scaling (KeepIdentity)
	// was best.
	Ratio float64
	// Loss is the mean squared output error of the chosen scales; Losses lists it for every
	// grid point r = k/Grid.
	Loss   float64
	Losses []float64
	// IdentityLoss is the loss without scaling (NaN unless KeepIdentity).
	IdentityLoss float64
}

// SearchScale finds the scales of g that minimize the mean squared error between the
// inspected module's output with the original weights and with the weights scaled,
// quantized and unscaled, Q(W·diag(s))·diag(1/s), over the grid s(r), r = k/Grid (notes
// §2.3). The linears are not modified.
func SearchScale(ctx context.Context, g Group, cfg Config) (*Scales, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(g.Linears) == 0 {
		return nil, fmt.Errorf("%w: scale group without linears", ErrShape)
	}
	cols := g.Linears[0].Cols
	for _, l := range g.Linears {
		if err := l.check(); err != nil {
			return nil, err
		}
		if l.Cols != cols {
			return nil, fmt.Errorf("%w: linears of one group have %d and %d input features", ErrShape, cols, l.Cols)
		}
		if cols%cfg.groupSize(cols) != 0 {
			return nil, fmt.Errorf("%w: %s has %d columns, not a multiple of group size %d", ErrShape, l.Name, cols, cfg.GroupSize)
		}
	}
	if g.Tokens <= 0 || len(g.Input) != g.Tokens*cols {
		return nil, fmt.Errorf("%w: %d input values for %d tokens of %d features", ErrShape, len(g.Input), g.Tokens, cols)
	}
	xMean := sumAbs(g.Input, g.Tokens, cols)
	for c := range xMean {
		xMean[c] /= float64(g.Tokens)
	}
	cands, ratios := candidates(xMean, g, cfg)
	sums, n, err := groupLosses(ctx, g, cands, cfg)
	if err != nil {
		return nil, err
	}
	return pickScale(cands, ratios, sums, n)
}

// groupLosses evaluates every candidate scale vector on g's tokens: it returns, per
// candidate, the sum of squared differences between the inspected module's output with the
// original weights and with the weights scaled, quantized and unscaled (summed in float64,
// in output order), and the number of output values.
func groupLosses(ctx context.Context, g Group, cands [][]float32, cfg Config) ([]float64, int64, error) {
	inspect := g.Inspect
	if inspect == nil {
		if len(g.Linears) != 1 {
			return nil, 0, fmt.Errorf("%w: a group of %d linears needs an Inspect function", ErrShape, len(g.Linears))
		}
		inspect = linearInspect(g.Linears[0], g.Input, g.Tokens)
	}
	orig := make([][]float32, len(g.Linears))
	for i, l := range g.Linears {
		orig[i] = l.Weight
	}
	y0, err := inspect(ctx, orig)
	if err != nil {
		return nil, 0, err
	}
	q := newQuantizer(cfg.Bits)
	cols := g.Linears[0].Cols
	gs := cfg.groupSize(cols)
	cand := make([][]float32, len(g.Linears))
	for i, l := range g.Linears {
		cand[i] = make([]float32, len(l.Weight))
	}
	sums := make([]float64, len(cands))
	for k, s := range cands {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		for i, l := range g.Linears {
			scaledQuant(q, l.Weight, cand[i], l.Rows, cols, gs, s)
		}
		y, err := inspect(ctx, cand)
		if err != nil {
			return nil, 0, err
		}
		if len(y) != len(y0) {
			return nil, 0, fmt.Errorf("%w: inspected module returned %d values, then %d", ErrShape, len(y0), len(y))
		}
		var sum float64
		for i, v := range y {
			d := float64(y0[i]) - float64(v)
			sum += d * d
		}
		sums[k] = sum
	}
	return sums, int64(len(y0)), nil
}

// scaledQuant writes Q(W·diag(s))·diag(1/s) into dst, in half precision as AutoAWQ.
func scaledQuant(q quantizer, w, dst []float32, rows, cols, gs int, s []float32) {
	for r := 0; r < rows; r++ {
		row, out := w[r*cols:(r+1)*cols], dst[r*cols:(r+1)*cols]
		for c, v := range row {
			out[c] = f16(f16(v) * s[c])
		}
		q.pseudoQuantize(out, gs)
		for c, v := range out {
			out[c] = f16(v / s[c])
		}
	}
}

// gridScales returns the candidate scales for exponent r (duo: x^r / (w^(1−r) + 1e-4);
// plain: x^r), clamped to ≥ 1e-4, normalized by sqrt(max·min), non-finite entries set to 1,
// and rounded to half precision.
func gridScales(xMean, wMean []float64, r float64, duo bool) []float32 {
	s := make([]float64, len(xMean))
	lo, hi := math.Inf(1), math.Inf(-1)
	for c, x := range xMean {
		v := math.Pow(x, r)
		if duo {
			v /= math.Pow(wMean[c], 1-r) + 1e-4
		}
		v = math.Max(v, 1e-4)
		s[c] = v
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	norm := math.Sqrt(hi * lo)
	out := make([]float32, len(s))
	for c, v := range s {
		v /= norm
		if math.IsNaN(v) || math.IsInf(v, 0) {
			v = 1
		}
		out[c] = f16(float32(v))
	}
	return out
}

// sumAbs returns the sum of |x| of each input channel over the tokens, in token order.
func sumAbs(x []float32, tokens, cols int) []float64 {
	sum := make([]float64, cols)
	for t := 0; t < tokens; t++ {
		for c, v := range x[t*cols : (t+1)*cols] {
			sum[c] += math.Abs(float64(v))
		}
	}
	return sum
}

// weightMean returns, per input channel, the mean over all rows of all linears of
// |w| / (max |w| of its row-group + 1e-6).
func weightMean(ls []*Linear, gs int) []float64 {
	cols := ls[0].Cols
	sum := make([]float64, cols)
	var rows int
	for _, l := range ls {
		rows += l.Rows
	}
	// Column groups in parallel: each column still sums its rows in order, so the result does
	// not depend on the number of goroutines.
	parallel(cols/gs, func(lo, hi int) {
		for _, l := range ls {
			for r := 0; r < l.Rows; r++ {
				row := l.Weight[r*cols : (r+1)*cols]
				for g := lo * gs; g < hi*gs; g += gs {
					var m float64
					for _, v := range row[g : g+gs] {
						m = math.Max(m, math.Abs(float64(f16(v))))
					}
					m += 1e-6
					for c, v := range row[g : g+gs] {
						sum[g+c] += math.Abs(float64(f16(v))) / m
					}
				}
			}
		}
	})
	for c := range sum {
		sum[c] /= float64(rows)
	}
	return sum
}

// linearInspect evaluates the linear l itself on x.
func linearInspect(l *Linear, x []float32, tokens int) InspectFunc {
	return func(ctx context.Context, weights [][]float32) ([]float32, error) {
		y := make([]float32, tokens*l.Rows)
		transformer.Gemm(false, true, tokens, l.Rows, l.Cols, 1, x, l.Cols, weights[0], l.Cols, 0, y, l.Rows)
		if l.Bias != nil {
			for t := 0; t < tokens; t++ {
				row := y[t*l.Rows : (t+1)*l.Rows]
				for i, b := range l.Bias {
					row[i] += b
				}
			}
		}
		return y, nil
	}
}

// ScaleColumns multiplies column c of the linear's weight by s[c] (in half precision, as
// AutoAWQ scales its fp16 model).
func ScaleColumns(l *Linear, s []float32) error {
	if err := l.check(); err != nil {
		return err
	}
	if len(s) != l.Cols {
		return fmt.Errorf("%w: %d scales for %s with %d input features", ErrShape, len(s), l.Name, l.Cols)
	}
	parallel(l.Rows, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := l.Weight[r*l.Cols : (r+1)*l.Cols]
			for c := range row {
				row[c] = f16(f16(row[c]) * s[c])
			}
		}
	})
	return nil
}

// FoldIntoLinear divides the last len(s) rows of prev's weight (and bias) by s: prev
// produces the input of linears scaled by s (v_proj → o_proj, up_proj → down_proj).
func FoldIntoLinear(prev *Linear, s []float32) error {
	if err := prev.check(); err != nil {
		return err
	}
	if len(s) > prev.Rows {
		return fmt.Errorf("%w: %d scales for %s with %d output features", ErrShape, len(s), prev.Name, prev.Rows)
	}
	off := prev.Rows - len(s)
	parallel(len(s), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := s[i]
			row := prev.Weight[(off+i)*prev.Cols : (off+i+1)*prev.Cols]
			for c := range row {
				row[c] = f16(f16(row[c]) / v)
			}
			if prev.Bias != nil {
				prev.Bias[off+i] = f16(f16(prev.Bias[off+i]) / v)
			}
		}
	})
	return nil
}

// FoldIntoNorm divides a norm's weight (and bias, if not nil) by s: the norm's output is
// the input of linears scaled by s. The quotients are kept in float32; the checkpoint writer
// rounds them to the stored dtype. A Gemma norm, which multiplies by 1 + w, must be given 1 + w
// (as libs/transformer holds it) and stored as the quotient − 1.
func FoldIntoNorm(weight, bias, s []float32) error {
	if len(weight) != len(s) || (bias != nil && len(bias) != len(s)) {
		return fmt.Errorf("%w: %d scales for a norm of %d weights, %d biases", ErrShape, len(s), len(weight), len(bias))
	}
	for i, v := range s {
		weight[i] /= v
		if bias != nil {
			bias[i] /= v
		}
	}
	return nil
}
