package awq

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"

	"quantfleet.dev/libs/transformer"
)

// Clippable reports whether AutoAWQ searches clipping for the linear with this name: not for
// query and key projections, whose errors the q·k product amplifies.
func Clippable(name string) bool {
	for _, s := range []string{"q_", "k_", "query", "key", "Wqkv"} {
		if strings.Contains(name, s) {
			return false
		}
	}
	return true
}

// SearchClip searches, for every row and group of the linear's (already scaled) weight, the
// clipping bound m = max|w|·(1 − i/ClipGrid), i < MaxShrink·ClipGrid, that minimizes the mean
// over sampled tokens of the squared error of the group's partial output Σ x·(Q(clamp(w,
// ±m)) − w) (notes §2.4). x is the linear's calibration input (tokens×cols), already divided
// by the scales folded into the weight; every max(1, tokens/ClipTokens)-th token is used.
// The result is rows×groups row-major (half-precision values).
func SearchClip(l *Linear, x []float32, tokens int, cfg Config) ([]float32, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := l.check(); err != nil {
		return nil, err
	}
	cols := l.Cols
	gs := cfg.groupSize(cols)
	if cols%gs != 0 {
		return nil, fmt.Errorf("%w: %s has %d columns, not a multiple of group size %d", ErrShape, l.Name, cols, gs)
	}
	if tokens <= 0 || len(x) != tokens*cols {
		return nil, fmt.Errorf("%w: %d input values for %d tokens of %d features", ErrShape, len(x), tokens, cols)
	}
	xs := sampleTokens(x, tokens, cols, max(1, tokens/cfg.ClipTokens), nil)
	n := len(xs) / cols
	return searchClipGram(l, gram(xs, n, cols, gs), n, cfg), nil
}

// gram returns, for each group of gs input columns, the gs×gs Gram matrix of the n tokens
// xs (n×cols): the clipping search's error of a group is dᵀ·G·d / n with d = q − w, one
// gs×gs product per group instead of n·gs per candidate.
func gram(xs []float32, n, cols, gs int) []float32 {
	ng := cols / gs
	g := make([]float32, ng*gs*gs)
	for i := 0; i < ng; i++ {
		transformer.Gemm(true, false, gs, gs, n, 1, xs[i*gs:], cols, xs[i*gs:], cols, 0, g[i*gs*gs:], gs)
	}
	return g
}

// searchClipGram is SearchClip on the Gram matrices G (from gram) of n sampled tokens.
func searchClipGram(l *Linear, gram []float32, n int, cfg Config) []float32 {
	rows, cols := l.Rows, l.Cols
	gs := cfg.groupSize(cols)
	ng := cols / gs
	shrinks := ClipShrinks(cfg)
	q := newQuantizer(cfg.Bits)
	best := make([]float32, rows*ng)
	parallel(rows, func(r0, r1 int) {
		w := make([]float32, gs)
		c := make([]float32, gs)
		d := make([]float64, gs)
		for r := r0; r < r1; r++ {
			for g := 0; g < ng; g++ {
				var maxAbs float32
				for i, v := range l.Weight[r*cols+g*gs : r*cols+(g+1)*gs] {
					w[i] = f16(v)
					maxAbs = max(maxAbs, abs32(w[i]))
				}
				G := gram[g*gs*gs : (g+1)*gs*gs]
				minErr, bestM := 1e9, maxAbs
				for i := 0; i < shrinks; i++ {
					m := f16(maxAbs * float32(1-float64(i)/float64(cfg.ClipGrid)))
					for j, v := range w {
						c[j] = min(max(v, -m), m)
					}
					q.pseudoQuantize(c, gs)
					for j := range d {
						d[j] = float64(c[j]) - float64(w[j])
					}
					var e float64
					for j, dj := range d {
						if dj == 0 {
							continue
						}
						row := G[j*gs : (j+1)*gs]
						var s float64
						for k, dk := range d {
							s += float64(row[k]) * dk
						}
						e += dj * s
					}
					e /= float64(n)
					if e < minErr {
						minErr, bestM = e, m
					}
				}
				best[r*ng+g] = bestM
			}
		}
	})
	return best
}

// ApplyClip clamps every row-group of the weight to ±maxVal (rows×groups, from SearchClip).
func ApplyClip(l *Linear, maxVal []float32, groupSize int) error {
	if err := l.check(); err != nil {
		return err
	}
	if groupSize == -1 {
		groupSize = l.Cols
	}
	if groupSize <= 0 || l.Cols%groupSize != 0 || len(maxVal) != l.Rows*(l.Cols/groupSize) {
		return fmt.Errorf("%w: %d clip values for %s (%d×%d, group %d)", ErrShape, len(maxVal), l.Name, l.Rows, l.Cols, groupSize)
	}
	parallel(l.Rows, func(lo, hi int) {
		// Row-major rows×groups matches the weight's row-major order: group g of the weight's
		// groups of columns, in order, takes maxVal[g].
		for g := lo * l.Cols / groupSize; g < hi*l.Cols/groupSize; g++ {
			m := maxVal[g]
			grp := l.Weight[g*groupSize : (g+1)*groupSize]
			for i, v := range grp {
				grp[i] = min(max(v, -m), m)
			}
		}
	})
	return nil
}

func abs32(x float32) float32 { return float32(math.Abs(float64(x))) }

// parallel splits [0, n) among GOMAXPROCS goroutines.
func parallel(n int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, n/8))
	if workers <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	step := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += step {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			f(lo, hi)
		}(lo, min(lo+step, n))
	}
	wg.Wait()
}
