package awq

import (
	"fmt"
	"math"
	"sync"
)

// Result is a quantized weight: W[r][c] ≈ Scales[g][r]·(QWeight[r][c] − Zeros[g][r]) with
// g = c / GroupSize. Scales are half-precision values held in float32.
type Result struct {
	Rows, Cols int
	Bits       int
	GroupSize  int // columns per group (Cols when configured per-row)
	// QWeight holds the integer codes, rows×cols row-major.
	QWeight []uint8
	// Scales and Zeros hold one grid per group, groups×rows row-major (the transposed
	// layout of AutoAWQ, which is the layout of its GEMM scales tensor).
	Scales []float32
	Zeros  []uint8
}

// Dequantize returns scale·(code − zero) as the AWQ loaders reconstruct the weight
// (rows×cols row-major float32; exact, since the scales are half-precision values).
func (r *Result) Dequantize() []float32 {
	out := make([]float32, r.Rows*r.Cols)
	for row := 0; row < r.Rows; row++ {
		for c := 0; c < r.Cols; c++ {
			g := (c/r.GroupSize)*r.Rows + row
			out[row*r.Cols+c] = r.Scales[g] * (float32(r.QWeight[row*r.Cols+c]) - float32(r.Zeros[g]))
		}
	}
	return out
}

// Quantize quantizes w (rows×cols row-major) with the AWQ zero-point quantizer. The weight is
// first rounded to half precision, and the quantizer runs in half precision as AutoAWQ does
// (it calls .half() before pseudo_quantize_tensor). Scaling and clipping (SearchScale,
// SearchClip) are applied to w beforehand by the caller.
func Quantize(w []float32, rows, cols int, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkWeight(w, rows, cols); err != nil {
		return nil, err
	}
	gs := cfg.groupSize(cols)
	if cols%gs != 0 {
		return nil, fmt.Errorf("%w: %d columns are not a multiple of group size %d", ErrShape, cols, gs)
	}
	ng := cols / gs
	res := &Result{
		Rows: rows, Cols: cols, Bits: cfg.Bits, GroupSize: gs,
		QWeight: make([]uint8, rows*cols),
		Scales:  make([]float32, ng*rows),
		Zeros:   make([]uint8, ng*rows),
	}
	q := newQuantizer(cfg.Bits)
	parallel(rows, func(lo, hi int) { // rows are independent
		buf := make([]float32, gs)
		for r := lo; r < hi; r++ {
			for g := 0; g < ng; g++ {
				for i, v := range w[r*cols+g*gs : r*cols+(g+1)*gs] {
					h, ok := halfNormal(v)
					if !ok {
						h = f16Other(v)
					}
					buf[i] = h
				}
				s, z := q.params(buf)
				res.Scales[g*rows+r] = s
				res.Zeros[g*rows+r] = uint8(z)
				codes := res.QWeight[r*cols+g*gs : r*cols+(g+1)*gs]
				for i, v := range buf {
					codes[i] = uint8(q.code(v, s, z))
				}
			}
		}
	})
	return res, nil
}

// quantizer is AutoAWQ's pseudo_quantize_tensor with zero_point=True, in half precision.
type quantizer struct {
	maxInt float32
	eps    float32 // the clamp 1e-5 of the range, as a half value
}

func newQuantizer(bits int) quantizer {
	return quantizer{maxInt: float32(int(1)<<bits - 1), eps: f16(1e-5)}
}

// params returns the half-precision scale and zero point of a group of half values:
// scale = max(max−min, 1e-5)/maxInt, zero = clamp(−round(min/scale), 0, maxInt). Unlike
// GPTQ, the range is not forced to include 0.
func (q quantizer) params(w []float32) (scale, zero float32) {
	mx, mn := w[0], w[0]
	for _, v := range w[1:] {
		mx = max(mx, v)
		mn = min(mn, v)
	}
	scale = f16(max(f16(mx-mn), q.eps) / q.maxInt)
	zero = min(max(-roundEven(f16(mn/scale)), 0), q.maxInt)
	return scale, zero
}

// code returns clamp(round(w/scale) + zero, 0, maxInt) in half precision.
func (q quantizer) code(w, scale, zero float32) float32 {
	h, ok := halfNormal(w / scale)
	if !ok {
		h = f16Other(w / scale)
	}
	return min(max(roundEven(h)+zero, 0), q.maxInt)
}

// fake returns the dequantized half value (code − zero)·scale.
func (q quantizer) fake(code, scale, zero float32) float32 { return f16((code - zero) * scale) }

// pseudoQuantize replaces each group of the half-precision row w with its fake-quantized
// values, as pseudo_quantize_tensor's first result.
func (q quantizer) pseudoQuantize(w []float32, gs int) {
	for g := 0; g < len(w); g += gs {
		grp := w[g : g+gs]
		s, z := q.params(grp)
		for i, v := range grp {
			grp[i] = q.fake(q.code(v, s, z), s, z)
		}
	}
}

func roundEven(x float32) float32 { return float32(math.RoundToEven(float64(x))) }

func checkWeight(w []float32, rows, cols int) error {
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		return fmt.Errorf("%w: %d weights for %d×%d", ErrShape, len(w), rows, cols)
	}
	// On every core: a GPU worker's host runs this on a whole layer between two device steps.
	var (
		mu  sync.Mutex
		bad = len(w)
	)
	parallel(rows, func(lo, hi int) {
		for i, v := range w[lo*cols : hi*cols] {
			if math.Float32bits(v)&0x7f800000 == 0x7f800000 { // NaN or ±Inf
				mu.Lock()
				bad = min(bad, lo*cols+i)
				mu.Unlock()
				return
			}
		}
	})
	if bad < len(w) {
		return fmt.Errorf("%w: weight [%d][%d] = %v", ErrNonFinite, bad/cols, bad%cols, w[bad])
	}
	return nil
}
