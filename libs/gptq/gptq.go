// Package gptq implements GPTQ (Frantar et al., 2022) and round-to-nearest quantization of
// linear-layer weights, following the reference implementation (IST-DASLab/gptq, as extended
// by AutoGPTQ with groups, act-order and static groups) operation by operation: float32
// weights and quantizer arithmetic, round-half-to-even, block size 128, group parameters
// recomputed from the partially updated weight at each group start.
//
// Weights are row-major [rows = out_features][cols = in_features] float32 matrices, as in a
// Hugging Face nn.Linear. Results hold integer codes with per-group scales and zero points;
// package hfquant packs them into checkpoint files.
package gptq

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/x448/float16"

	"quantfleet.dev/libs/fault"
)

// Defaults of Config.
const (
	DefaultDamp      = 0.01 // damp_percent of IST-DASLab and AutoGPTQ
	DefaultDampStep  = 0.01 // increment when Cholesky fails (GPTQModel's damp_auto_increment)
	DefaultBlockSize = 128
)

// Sentinel errors.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("gptq: invalid config")
	// ErrShape reports inconsistent matrix dimensions.
	ErrShape = errors.New("gptq: shape mismatch")
	// ErrNoSamples reports a Hessian without calibration samples.
	ErrNoSamples = errors.New("gptq: no calibration samples")
	// ErrNotPositiveDefinite reports a Hessian that stayed indefinite for every damping
	// below 1 (100% of its mean diagonal).
	ErrNotPositiveDefinite = errors.New("gptq: Hessian not positive definite")
	// ErrNonFinite reports a NaN or infinite weight or Hessian entry: the model's weights, or its
	// activations on the calibration text, are at fault.
	ErrNonFinite = fault.New(fault.ErrBadInput, "gptq: non-finite value")
)

// Config selects the quantization.
type Config struct {
	// Bits per weight: 2, 3, 4 or 8.
	Bits int
	// GroupSize is the number of input columns sharing a scale and zero point (32, 64, 128,
	// 256, ...), or -1 for one grid per output row (per-channel).
	GroupSize int
	// Sym selects symmetric quantization: zero point 2^(bits−1), range symmetric about 0.
	Sym bool
	// ActOrder (desc_act) processes columns by decreasing Hessian diagonal; with groups the
	// group of each column is then recorded in GIdx.
	ActOrder bool
	// StaticGroups computes every group's grid from the weight before quantization instead
	// of at the group's start during error feedback; GIdx stays j/GroupSize.
	StaticGroups bool
	// Damp is the dampening added to the Hessian diagonal, as a fraction of its mean
	// (damp_percent). 0 means DefaultDamp.
	Damp float64
	// DampStep is added to Damp while the Cholesky factorization fails (until Damp reaches 1).
	// 0 means DefaultDampStep.
	DampStep float64
	// BlockSize is the number of columns of a lazy batch update. 0 means DefaultBlockSize.
	BlockSize int
	// V1Zeros keeps asymmetric zero points ≥ 1, so that the GPTQ v1 checkpoint format (which
	// stores zero−1) can hold every group. A grid whose zero would round to 0 becomes
	// zero 1 with scale xmax/(2^bits−2). The reference allows zero 0 (and its v1 files then
	// decode that group wrongly); leave this off to reproduce it or when writing gptq_v2.
	V1Zeros bool
}

func (c Config) withDefaults() (Config, error) {
	switch c.Bits {
	case 2, 3, 4, 8:
	default:
		return c, fmt.Errorf("%w: %d bits (want 2, 3, 4 or 8)", ErrConfig, c.Bits)
	}
	if c.GroupSize == 0 || c.GroupSize < -1 {
		return c, fmt.Errorf("%w: group size %d (want a positive size or -1)", ErrConfig, c.GroupSize)
	}
	if c.StaticGroups && c.GroupSize == -1 {
		c.StaticGroups = false // one static grid per row is what -1 means anyway
	}
	if c.Damp == 0 {
		c.Damp = DefaultDamp
	}
	if c.DampStep == 0 {
		c.DampStep = DefaultDampStep
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if !(c.Damp > 0 && c.Damp < 1) || !(c.DampStep > 0) || c.BlockSize < 1 {
		return c, fmt.Errorf("%w: damp %v, damp step %v, block size %d", ErrConfig, c.Damp, c.DampStep, c.BlockSize)
	}
	return c, nil
}

func (c Config) quantizer() quantizer {
	return quantizer{maxq: float32(int(1)<<c.Bits - 1), sym: c.Sym, v1Zeros: c.V1Zeros && !c.Sym}
}

// Result is a quantized weight: W[r][c] ≈ Scales[g][r]·(QWeight[r][c] − Zeros[g][r]) with
// g = GIdx[c].
type Result struct {
	Rows, Cols int
	Bits       int
	GroupSize  int // as configured (-1: per-channel)
	Sym        bool
	// QWeight holds the integer codes, rows×cols row-major, in the original column order.
	QWeight []uint8
	// Scales and Zeros hold one grid per group, groups×rows row-major (the layout of the
	// GPTQ scales tensor). With act-order and dynamic groups, group g is the g-th group of
	// columns in processing order.
	Scales []float32
	Zeros  []uint8
	// GIdx is the group of each input column.
	GIdx []int32
	// Damp is the damp_percent finally used (larger than configured if Cholesky failed).
	Damp float64
	// Loss is the GPTQ objective Σ (w−q)²/[H⁻¹]ᵢᵢ / 2 as the reference reports it (0 for RTN).
	Loss float64
	// Dead counts input columns that were never non-zero in calibration (their weights are
	// set to 0 before quantization).
	Dead int
}

// Groups returns the number of grids per row.
func (r *Result) Groups() int { return len(r.Scales) / r.Rows }

// Dequantize returns the weight as GPTQ loaders reconstruct it from a checkpoint:
// fp16(scale)·(code − zero), rows×cols row-major float32.
func (r *Result) Dequantize() []float32 {
	half := make([]float32, len(r.Scales))
	for i, s := range r.Scales {
		half[i] = float16.Fromfloat32(s).Float32()
	}
	return r.dequantize(half)
}

// Reconstruct returns the weight as the GPTQ solve produced it: scale·(code − zero) with the
// float32 scales, as the reference (IST-DASLab gptq.py, AutoGPTQ, GPTQModel) puts it back into
// the layer before the later modules' Hessians are collected. Only the checkpoint rounds the
// scales to fp16 (Dequantize); using that inside the pipeline changes every later Hessian.
func (r *Result) Reconstruct() []float32 { return r.dequantize(r.Scales) }

func (r *Result) dequantize(scales []float32) []float32 {
	out := make([]float32, r.Rows*r.Cols)
	for row := 0; row < r.Rows; row++ {
		o := out[row*r.Cols : (row+1)*r.Cols]
		q := r.QWeight[row*r.Cols : (row+1)*r.Cols]
		for c := range o {
			g := int(r.GIdx[c])*r.Rows + row
			o[c] = scales[g] * (float32(q[c]) - float32(r.Zeros[g]))
		}
	}
	return out
}

func checkWeight(w []float32, rows, cols int) error {
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		return fmt.Errorf("%w: %d weights for %d×%d", ErrShape, len(w), rows, cols)
	}
	for i, v := range w {
		if nonFinite(v) {
			return fmt.Errorf("%w: weight [%d][%d] = %v", ErrNonFinite, i/cols, i%cols, v)
		}
	}
	return nil
}

// RTN quantizes w (rows×cols, row-major) to the nearest grid point without calibration: the
// grid of each group is computed from the weight, with the same quantizer as GPTQ.
// ActOrder and the damping settings are ignored.
func RTN(w []float32, rows, cols int, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkWeight(w, rows, cols); err != nil {
		return nil, err
	}
	q := cfg.quantizer()
	gs := cfg.GroupSize
	if gs == -1 {
		gs = cols
	}
	ng := (cols + gs - 1) / gs
	res := newResult(rows, cols, ng, cfg)
	for g := 0; g < ng; g++ {
		c0, c1 := g*gs, min((g+1)*gs, cols)
		gr := res.grid(g)
		q.findParams(w, rows, cols, c0, c1, gr)
		for r := 0; r < rows; r++ {
			s, z := gr.scale[r], gr.zero[r]
			for c := c0; c < c1; c++ {
				res.QWeight[r*cols+c] = uint8(q.code(w[r*cols+c], s, z))
			}
		}
	}
	for c := range res.GIdx {
		res.GIdx[c] = int32(c / gs)
	}
	res.setZeros()
	return &res.Result, nil
}

// newResult allocates a result with ng groups; zero points are kept as float32 in zf until
// setZeros converts them.
func newResult(rows, cols, ng int, cfg Config) *result {
	return &result{
		Result: Result{
			Rows: rows, Cols: cols, Bits: cfg.Bits, GroupSize: cfg.GroupSize, Sym: cfg.Sym,
			QWeight: make([]uint8, rows*cols),
			Scales:  make([]float32, ng*rows),
			Zeros:   make([]uint8, ng*rows),
			GIdx:    make([]int32, cols),
		},
		zf: make([]float32, ng*rows),
	}
}

type result struct {
	Result
	zf []float32
}

func (r *result) grid(g int) grid {
	return grid{scale: r.Scales[g*r.Rows : (g+1)*r.Rows], zero: r.zf[g*r.Rows : (g+1)*r.Rows]}
}

func (r *result) setZeros() {
	for i, z := range r.zf {
		r.Zeros[i] = uint8(z)
	}
}

// Factor is a Hessian prepared for GPTQ: dead columns found, act-order permutation chosen,
// damping applied and the inverse Cholesky factor computed. Linears that read the same input
// (q/k/v, gate/up) share one Factor, so the factorization runs once for all of them.
type Factor struct {
	cfg  Config
	n    int
	dead []bool
	perm []int     // perm[p] is the original column processed at position p
	u    []float32 // upper Cholesky factor of the damped inverse Hessian, permuted order
	damp float64
}

// Prepare factors the Hessian h for quantizing weights with cfg.
func Prepare(h *Hessian, cfg Config) (*Factor, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	H, err := h.Matrix()
	if err != nil {
		return nil, err
	}
	for _, v := range H {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w in the Hessian", ErrNonFinite)
		}
	}
	n := h.Cols()
	f := &Factor{cfg: cfg, n: n, dead: make([]bool, n), perm: make([]int, n)}
	for i := 0; i < n; i++ {
		if H[i*n+i] == 0 {
			H[i*n+i] = 1
			f.dead[i] = true
		}
		f.perm[i] = i
	}
	if cfg.ActOrder {
		perm := f.perm
		sort.SliceStable(perm, func(a, b int) bool { return H[perm[a]*n+perm[a]] > H[perm[b]*n+perm[b]] })
		H = permuteSym(H, n, perm)
	}
	if f.u, f.damp, err = invCholUpper(H, n, cfg.Damp, cfg.DampStep); err != nil {
		return nil, err
	}
	return f, nil
}

// Quantize runs GPTQ on w (rows×cols, row-major float32; not modified) with the Hessian h of
// the layer's calibration inputs (not modified). It is Prepare followed by Factor.Quantize.
func Quantize(w []float32, rows, cols int, h *Hessian, cfg Config) (*Result, error) {
	if h.Cols() != cols {
		return nil, fmt.Errorf("%w: Hessian of %d columns for a weight of %d", ErrShape, h.Cols(), cols)
	}
	f, err := Prepare(h, cfg)
	if err != nil {
		return nil, err
	}
	return f.Quantize(w, rows, cols)
}

// Quantize runs GPTQ on w (rows×cols, row-major float32; not modified). Concurrent calls on
// one Factor are safe.
func (f *Factor) Quantize(w []float32, rows, cols int) (*Result, error) {
	cfg := f.cfg
	if err := checkWeight(w, rows, cols); err != nil {
		return nil, err
	}
	if cols != f.n {
		return nil, fmt.Errorf("%w: Hessian of %d columns for a weight of %d", ErrShape, f.n, cols)
	}
	W := append([]float32(nil), w...)
	q := cfg.quantizer()
	n := cols

	gs := cfg.GroupSize
	perChannel := gs == -1
	if perChannel {
		gs = cols
	}
	ng := (cols + gs - 1) / gs
	res := newResult(rows, cols, ng, cfg)
	res.Damp = f.damp

	// A per-channel grid comes from the original weight, before dead columns are zeroed.
	if perChannel {
		q.findParams(W, rows, cols, 0, cols, res.grid(0))
	}
	for i, dead := range f.dead {
		if dead {
			for r := 0; r < rows; r++ {
				W[r*cols+i] = 0
			}
			res.Dead++
		}
	}
	if cfg.StaticGroups {
		for g := 0; g < ng; g++ {
			q.findParams(W, rows, cols, g*gs, min((g+1)*gs, cols), res.grid(g))
		}
	}
	perm, U := f.perm, f.u
	if cfg.ActOrder {
		W = permuteColumns(W, rows, cols, perm)
	}

	// groupOf returns the grid index used at processing position p.
	groupOf := func(p int) int {
		switch {
		case perChannel:
			return 0
		case cfg.StaticGroups:
			return perm[p] / gs
		default:
			return p / gs
		}
	}

	codes := make([]uint8, rows*cols) // processing order
	bs := cfg.BlockSize
	errBuf := make([]float32, rows*bs)
	var tmp []float32
	losses := make([]float64, rows)
	for i1 := 0; i1 < n; i1 += bs {
		i2 := min(i1+bs, n)
		count := i2 - i1
		// Dynamic groups starting in this block take their grid from the global W, which
		// holds the updates of earlier blocks but not this block's (as the reference does).
		if !perChannel && !cfg.StaticGroups {
			for p := i1; p < i2; p++ {
				if p%gs == 0 {
					q.findParams(W, rows, cols, p, min(p+gs, cols), res.grid(p/gs))
				}
			}
		}
		groups := make([]grid, count)
		for i := range groups {
			groups[i] = res.grid(groupOf(i1 + i))
		}
		ublock := func(i int) []float32 { return U[(i1+i)*n+i1 : (i1+i)*n+i2] } // U[i1+i, i1:i2]
		parallelRows(rows, func(r0, r1 int) {
			w1 := make([]float32, count)
			for r := r0; r < r1; r++ {
				copy(w1, W[r*cols+i1:r*cols+i2])
				e1 := errBuf[r*count : (r+1)*count]
				var loss float64
				for i := 0; i < count; i++ {
					wv := w1[i]
					s, z := groups[i].scale[r], groups[i].zero[r]
					c := q.code(wv, s, z)
					qv := s * (c - z)
					codes[r*cols+i1+i] = uint8(c)
					u := ublock(i)
					d := u[i]
					diff := wv - qv
					loss += float64(diff * diff / (d * d))
					e := diff / d
					for j := i + 1; j < count; j++ {
						w1[j] -= float32(e * u[j])
					}
					e1[i] = e
				}
				losses[r] += loss
			}
		})
		// W[:, i2:] −= Err1 · U[i1:i2, i2:]
		if rest := n - i2; rest > 0 {
			if cap(tmp) < rows*rest {
				tmp = make([]float32, rows*rest)
			}
			t := tmp[:rows*rest]
			gemm(false, false, rows, rest, count, 1, errBuf[:rows*count], count, U[i1*n+i2:], n, 0, t, rest)
			parallelRows(rows, func(r0, r1 int) {
				for r := r0; r < r1; r++ {
					dst, src := W[r*cols+i2:(r+1)*cols], t[r*rest:(r+1)*rest]
					for j := range dst {
						dst[j] -= src[j]
					}
				}
			})
		}
	}
	for _, l := range losses {
		res.Loss += l / 2
	}

	// Back to the original column order.
	for p, c := range perm {
		for r := 0; r < rows; r++ {
			res.QWeight[r*cols+c] = codes[r*cols+p]
		}
		switch {
		case perChannel:
			res.GIdx[c] = 0
		case cfg.StaticGroups:
			res.GIdx[c] = int32(c / gs)
		default:
			res.GIdx[c] = int32(p / gs)
		}
	}
	res.setZeros()
	return &res.Result, nil
}

// parallelRows splits [0, rows) among GOMAXPROCS goroutines.
func parallelRows(rows int, f func(r0, r1 int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, rows/16))
	if workers <= 1 {
		f(0, rows)
		return
	}
	var wg sync.WaitGroup
	step := (rows + workers - 1) / workers
	for r0 := 0; r0 < rows; r0 += step {
		wg.Add(1)
		go func(r0, r1 int) {
			defer wg.Done()
			f(r0, r1)
		}(r0, min(r0+step, rows))
	}
	wg.Wait()
}

func permuteColumns(w []float32, rows, cols int, perm []int) []float32 {
	out := make([]float32, len(w))
	for r := 0; r < rows; r++ {
		src, dst := w[r*cols:(r+1)*cols], out[r*cols:(r+1)*cols]
		for p, c := range perm {
			dst[p] = src[c]
		}
	}
	return out
}

func permuteSym(h []float64, n int, perm []int) []float64 {
	out := make([]float64, len(h))
	for i, pi := range perm {
		for j, pj := range perm {
			out[i*n+j] = h[pi*n+pj]
		}
	}
	return out
}

// invCholUpper returns, as float32, the upper triangular U with UᵀU = (H + λ·mean(diag H)·I)⁻¹,
// the factor the reference gets from cholesky(cholesky_inverse(cholesky(H)), upper=True).
// With J the exchange matrix and JHJ = M·Mᵀ (lower Cholesky factor M), H = (JMJ)(JMJ)ᵀ with
// JMJ upper triangular, so U = (JMJ)⁻¹ = J·M⁻¹·J: one factorization and one triangular
// inverse instead of two factorizations and a full inverse, in float32 products like the
// reference's (cholInv32; the GPU runs the same recursion, package gptqcuda).
// λ starts at damp and grows by step while the factorization fails; the λ used is returned.
func invCholUpper(H []float64, n int, damp, step float64) ([]float32, float64, error) {
	var mean float64
	for i := 0; i < n; i++ {
		mean += H[i*n+i]
	}
	mean /= float64(n)
	a, l, x := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	for k := 0; ; k++ {
		lambda := damp + float64(k)*step
		if lambda >= 1 {
			return nil, 0, fmt.Errorf("%w (damp raised to %.2f)", ErrNotPositiveDefinite, damp+float64(k-1)*step)
		}
		for i := 0; i < n; i++ {
			for j := 0; j < i; j++ {
				a[i*n+j] = float32(H[(n-1-i)*n+(n-1-j)])
			}
			a[i*n+i] = float32(H[(n-1-i)*n+(n-1-i)] + lambda*mean)
		}
		if !cholInv32(a, l, x, n, n) || slices.ContainsFunc(x, nonFinite) {
			continue
		}
		u := make([]float32, n*n)
		for i := 0; i < n; i++ {
			for j := i; j < n; j++ {
				u[i*n+j] = x[(n-1-i)*n+(n-1-j)]
			}
		}
		return u, lambda, nil
	}
}

// nonFinite reports NaN or ±Inf, without a float64 conversion.
func nonFinite(v float32) bool { return math.Float32bits(v)&0x7f800000 == 0x7f800000 }
