package gptqcuda

import (
	"context"
	"fmt"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/gptq"
)

// Quantize runs GPTQ on w (rows×cols, row-major float32; not modified) with the Hessian h on
// the GPU: Prepare, Factor.Quantize, Close.
func Quantize(ctx context.Context, h *Hessian, w []float32, rows, cols int, cfg gptq.Config) (*gptq.Result, error) {
	if h.Cols() != cols {
		return nil, fmt.Errorf("%w: Hessian of %d columns for a weight of %d", gptq.ErrShape, h.Cols(), cols)
	}
	f, err := Prepare(ctx, h, cfg)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Quantize(ctx, w, rows, cols)
}

// Quantize runs GPTQ on w (rows×cols, row-major float32; not modified) as
// gptq.Factor.Quantize does: the column loop in lazy blocks of cfg.BlockSize columns, one
// kernel quantizing a block with error feedback inside it (rows in parallel), one SGEMM
// propagating the block's error to the columns after it; grids per group (recomputed from
// the partially updated weight at each group start), static or per row as configured. The
// result has the same form as the CPU's; codes may differ where float32 summation order
// turns a rounding tie the other way.
func (f *Factor) Quantize(ctx context.Context, w []float32, rows, cols int) (*gptq.Result, error) {
	cfg, k, n := f.cfg, f.k, f.n
	if rows <= 0 || cols <= 0 || len(w) != rows*cols {
		return nil, fmt.Errorf("%w: %d weights for %d×%d", gptq.ErrShape, len(w), rows, cols)
	}
	if cols != n {
		return nil, fmt.Errorf("%w: Hessian of %d columns for a weight of %d", gptq.ErrShape, n, cols)
	}
	maxq := float32(int(1)<<cfg.Bits - 1)
	sym := int32(0)
	if cfg.Sym {
		sym = 1
	}
	v1 := int32(0)
	if cfg.V1Zeros && !cfg.Sym {
		v1 = 1
	}
	gs := cfg.GroupSize
	perChannel := gs == -1
	if perChannel {
		gs = cols
	}
	ng := (cols + gs - 1) / gs
	if ng > 65535 {
		return nil, fmt.Errorf("%w: %d groups per row (the GPU handles at most 65535)", gptq.ErrConfig, ng)
	}

	bufs := buffers{d: k.d}
	defer bufs.free()
	wd, err := bufs.alloc(ctx, "weight", 4*rows*n)
	if err != nil {
		return nil, err
	}
	if err := cuda.Upload(ctx, wd, 0, w); err != nil {
		return nil, err
	}
	flag, err := bufs.alloc(ctx, "flag", 4)
	if err != nil {
		return nil, err
	}
	if bad, err := k.nonFinite(ctx, wd, rows*n, flag); err != nil {
		return nil, err
	} else if bad {
		return nil, fmt.Errorf("%w: weight has NaN or infinite values", gptq.ErrNonFinite)
	}
	scales, err := bufs.alloc(ctx, "scales", 4*ng*rows)
	if err != nil {
		return nil, err
	}
	zeros, err := bufs.alloc(ctx, "zeros", 4*ng*rows)
	if err != nil {
		return nil, err
	}
	// params computes count grids from groups of gs columns of m starting at column c0,
	// stored from grid g0 on.
	params := func(m *cuda.Buffer, c0, count, g0 int) error {
		g, b := warpRows(rows, count)
		return k.findParams.Launch(ctx, g, b, 0, scales, zeros, m, int32(n), int32(rows),
			int32(c0), int32(gs), int32(cols), int32(g0), maxq, sym, v1)
	}

	// A per-channel grid comes from the original weight, before dead columns are zeroed.
	if perChannel {
		if err := params(wd, 0, 1, 0); err != nil {
			return nil, err
		}
	}
	if len(f.dead) > 0 {
		if err := k.zeroCols.Launch(ctx, cuda.Dim3{X: (rows + threads - 1) / threads}, cuda.Dim3{X: threads}, 0,
			wd, f.deadD, int32(len(f.dead)), int32(rows), int32(n)); err != nil {
			return nil, err
		}
	}
	if cfg.StaticGroups {
		if err := params(wd, 0, ng, 0); err != nil {
			return nil, err
		}
	}
	wp := wd
	if cfg.ActOrder {
		if wp, err = bufs.alloc(ctx, "permuted weight", 4*rows*n); err != nil {
			return nil, err
		}
		g, b := grid2(n, rows)
		if err := k.gatherCols.Launch(ctx, g, b, 0, wp, wd, f.permD, int32(rows), int32(n)); err != nil {
			return nil, err
		}
	}

	// gridOf[p] is the grid used at processing position p.
	gridOf := make([]int32, n)
	for p := range gridOf {
		switch {
		case perChannel:
			gridOf[p] = 0
		case cfg.StaticGroups:
			gridOf[p] = int32(f.perm[p] / gs)
		default:
			gridOf[p] = int32(p / gs)
		}
	}
	gridD, err := bufs.alloc(ctx, "group map", 4*n)
	if err != nil {
		return nil, err
	}
	if err := cuda.Upload(ctx, gridD, 0, gridOf); err != nil {
		return nil, err
	}
	codes, err := bufs.alloc(ctx, "codes", rows*n)
	if err != nil {
		return nil, err
	}
	bs := cfg.BlockSize
	errs, err := bufs.alloc(ctx, "block errors", 4*rows*bs)
	if err != nil {
		return nil, err
	}
	losses, err := bufs.alloc(ctx, "losses", 8*rows)
	if err != nil {
		return nil, err
	}
	if err := losses.Zero(ctx, 0, losses.Size()); err != nil {
		return nil, err
	}

	for i1 := 0; i1 < n; i1 += bs {
		i2 := min(i1+bs, n)
		count := i2 - i1
		// Dynamic groups starting in this block take their grid from the global weight,
		// which holds the updates of earlier blocks but not this block's.
		if !perChannel && !cfg.StaticGroups {
			if first := (i1 + gs - 1) / gs * gs; first < i2 {
				if err := params(wp, first, (i2-1-first)/gs+1, first/gs); err != nil {
					return nil, err
				}
			}
		}
		g, b := warpRows(rows, 1)
		if err := k.gptqBlock.Launch(ctx, g, b, 0, wp, f.u, int32(n), codes, errs, scales, zeros, gridD, losses,
			int32(rows), int32(i1), int32(count), maxq); err != nil {
			return nil, err
		}
		// W[:, i2:] −= Err · U[i1:i2, i2:]
		if rest := n - i2; rest > 0 {
			if err := k.blas.Gemm(ctx, false, false, rows, rest, count, -1, errs.Ptr(), count,
				at(f.u, i1, i2, n), n, 1, at(wp, 0, i2, n), n); err != nil {
				return nil, err
			}
		}
	}

	// Back to the original column order.
	out := codes
	if cfg.ActOrder {
		if out, err = bufs.alloc(ctx, "codes", rows*n); err != nil {
			return nil, err
		}
		g, b := grid2(n, rows)
		if err := k.scatterCodes.Launch(ctx, g, b, 0, out, codes, f.permD, int32(rows), int32(n)); err != nil {
			return nil, err
		}
	}
	res := &gptq.Result{
		Rows: rows, Cols: cols, Bits: cfg.Bits, GroupSize: cfg.GroupSize, Sym: cfg.Sym,
		QWeight: make([]uint8, rows*cols),
		Scales:  make([]float32, ng*rows),
		Zeros:   make([]uint8, ng*rows),
		GIdx:    make([]int32, cols),
		Damp:    f.damp,
		Dead:    len(f.dead),
	}
	zf := make([]float32, ng*rows)
	rowLoss := make([]float64, rows)
	if err := cuda.Download(ctx, res.QWeight, out, 0); err != nil {
		return nil, err
	}
	if err := cuda.Download(ctx, res.Scales, scales, 0); err != nil {
		return nil, err
	}
	if err := cuda.Download(ctx, zf, zeros, 0); err != nil {
		return nil, err
	}
	if err := cuda.Download(ctx, rowLoss, losses, 0); err != nil {
		return nil, err
	}
	for i, z := range zf {
		res.Zeros[i] = uint8(z)
	}
	for _, l := range rowLoss {
		res.Loss += l / 2
	}
	for p, c := range f.perm {
		switch {
		case perChannel:
			res.GIdx[c] = 0
		case cfg.StaticGroups:
			res.GIdx[c] = int32(c / gs)
		default:
			res.GIdx[c] = int32(p / gs)
		}
	}
	return res, nil
}
