package gptqcuda

import (
	"context"
	"fmt"
	"math"
	"sort"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/gptq"
)

// leafSize is the order up to which a diagonal block is factored and inverted by one thread
// block in float64 (libs/gptq's leafSize).
const leafSize = 128

// Factor is a Hessian prepared for GPTQ on the GPU: dead columns found, act-order
// permutation chosen, damping applied and U, the upper Cholesky factor of the damped inverse
// Hessian in processing order, computed and kept on the device. Linears that read the same
// input (q/k/v, gate/up) share one Factor. Close frees it.
type Factor struct {
	k     *kernels
	cfg   gptq.Config
	n     int
	dead  []int32 // dead input columns
	perm  []int   // perm[p] is the original column processed at position p
	permD *cuda.Buffer
	deadD *cuda.Buffer
	u     *cuda.Buffer // float32 n×n, U, upper triangle
	damp  float64
}

// Prepare factors h for quantizing weights with cfg, as gptq.Prepare does: a column whose
// Hessian diagonal is 0 is dead (diagonal set to 1, its weights zeroed later), act-order sorts
// columns by decreasing diagonal (stable), H + λ·mean(diag H)·I is factored with λ = cfg.Damp
// raised by cfg.DampStep while the factorization fails. The factorization is libs/gptq's
// float32 recursion (cholInv32), on the GPU.
func Prepare(ctx context.Context, h *Hessian, cfg gptq.Config) (*Factor, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.BlockSize > 128 {
		return nil, fmt.Errorf("%w: block size %d (the GPU kernel handles at most 128)", gptq.ErrConfig, cfg.BlockSize)
	}
	scale, err := h.factor()
	if err != nil {
		return nil, err
	}
	k, n := h.k, h.cols
	f := &Factor{k: k, cfg: cfg, n: n, perm: make([]int, n)}
	tmp := buffers{d: k.d}
	defer tmp.free()

	// The diagonal decides dead columns, the order and the damping, on the host.
	diagD, err := tmp.alloc(ctx, "diagonal", 8*n)
	if err != nil {
		return nil, err
	}
	if err := k.hessDiag.Launch(ctx, cuda.Dim3{X: (n + threads - 1) / threads}, cuda.Dim3{X: threads}, 0, diagD, h.sum, scale, int32(n)); err != nil {
		return nil, err
	}
	diag := make([]float64, n)
	if err := cuda.Download(ctx, diag, diagD, 0); err != nil {
		return nil, err
	}
	var mean float64
	for i, v := range diag {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w in the Hessian", gptq.ErrNonFinite)
		}
		if v == 0 {
			diag[i] = 1
			f.dead = append(f.dead, int32(i))
		}
		f.perm[i] = i
		mean += diag[i]
	}
	mean /= float64(n)
	if cfg.ActOrder {
		sort.SliceStable(f.perm, func(a, b int) bool { return diag[f.perm[a]] > diag[f.perm[b]] })
	}
	perm32 := make([]int32, n)
	for p, c := range f.perm {
		perm32[p] = int32(c)
	}
	if f.permD, err = cuda.Alloc[int32](ctx, k.d, n); err != nil {
		return nil, err
	}
	if err := cuda.Upload(ctx, f.permD, 0, perm32); err != nil {
		f.Close()
		return nil, err
	}
	if len(f.dead) > 0 {
		if f.deadD, err = cuda.Alloc[int32](ctx, k.d, len(f.dead)); err == nil {
			err = cuda.Upload(ctx, f.deadD, 0, f.dead)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.factor(ctx, h, scale, mean, &tmp); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// factor computes U = J·M⁻¹·J where J·(P·H·Pᵀ + λ·mean·I)·J = M·Mᵀ (see gptq's
// invCholUpper: one factorization and one triangular inverse), raising λ on failure.
func (f *Factor) factor(ctx context.Context, h *Hessian, scale, mean float64, tmp *buffers) error {
	k, n := f.k, f.n
	a, err := f.k.d.Alloc(ctx, 4*n*n) // becomes U
	if err != nil {
		return fmt.Errorf("gptq factor of order %d: %w", n, err)
	}
	f.u = a
	l, err := tmp.alloc(ctx, "Cholesky factor", 4*n*n)
	if err != nil {
		return err
	}
	x, err := tmp.alloc(ctx, "inverse factor", 4*n*n)
	if err != nil {
		return err
	}
	t, err := tmp.alloc(ctx, "scratch", 4*(n/2)*(n-n/2)+4)
	if err != nil {
		return err
	}
	work, err := tmp.alloc(ctx, "leaf scratch", 8*2*leafSize*leafSize)
	if err != nil {
		return err
	}
	flag, err := tmp.alloc(ctx, "flag", 4)
	if err != nil {
		return err
	}
	c := &cholInv{k: k, a: a, l: l, x: x, t: t, work: work, bad: flag, ld: n}
	cfg := f.cfg
	for step := 0; ; step++ {
		lambda := cfg.Damp + float64(step)*cfg.DampStep
		if lambda >= 1 {
			return fmt.Errorf("%w (damp raised to %.2f)", gptq.ErrNotPositiveDefinite, cfg.Damp+float64(step-1)*cfg.DampStep)
		}
		g, b := grid2(n, n)
		if err := k.hessBuild.Launch(ctx, g, b, 0, a, h.sum, f.permD, scale, lambda*mean, int32(n)); err != nil {
			return err
		}
		if step == 0 {
			// A finite float64 entry may still overflow float32.
			if bad, err := k.nonFinite(ctx, a, n*n, flag); err != nil {
				return err
			} else if bad {
				return fmt.Errorf("%w in the Hessian (as float32)", gptq.ErrNonFinite)
			}
		}
		if err := l.Zero(ctx, 0, l.Size()); err != nil {
			return err
		}
		if err := x.Zero(ctx, 0, x.Size()); err != nil {
			return err
		}
		if err := flag.Zero(ctx, 0, 4); err != nil {
			return err
		}
		if err := c.run(ctx, 0, n); err != nil {
			return err
		}
		failed, err := readFlag(ctx, flag)
		if err != nil {
			return err
		}
		if !failed {
			if failed, err = k.nonFinite(ctx, x, n*n, flag); err != nil {
				return err
			}
		}
		if failed {
			continue
		}
		f.damp = lambda
		return k.flipUpper.Launch(ctx, g, b, 0, a, x, int32(n))
	}
}

// cholInv is libs/gptq's cholInv32 on device matrices a (lower triangle read, overwritten),
// l and x (zeroed beforehand; the upper-right blocks are never written), all with leading
// dimension ld.
type cholInv struct {
	k                     *kernels
	a, l, x, t, work, bad *cuda.Buffer
	ld                    int
}

// run factors the diagonal block of order n at (o, o):
//
//	L11, X11 = cholInv(A11);  L21 = A21·X11ᵀ;  L22, X22 = cholInv(A22 − L21·L21ᵀ);
//	X21 = −X22·(L21·X11)
func (c *cholInv) run(ctx context.Context, o, n int) error {
	ld := c.ld
	if n <= leafSize {
		return c.k.cholInvLeaf.Launch(ctx, cuda.Dim3{X: 1}, cuda.Dim3{X: leafSize}, 0,
			at(c.a, o, o, ld), at(c.l, o, o, ld), at(c.x, o, o, ld), int32(n), int32(ld), c.work, c.bad)
	}
	k := n / 2
	m := n - k
	if err := c.run(ctx, o, k); err != nil {
		return err
	}
	blas := c.k.blas
	a21, a22 := at(c.a, o+k, o, ld), at(c.a, o+k, o+k, ld)
	l21, x11 := at(c.l, o+k, o, ld), at(c.x, o, o, ld)
	x21, x22 := at(c.x, o+k, o, ld), at(c.x, o+k, o+k, ld)
	if err := blas.Gemm(ctx, false, true, m, k, k, 1, a21, ld, x11, ld, 0, l21, ld); err != nil {
		return err
	}
	if err := blas.Gemm(ctx, false, true, m, m, k, -1, l21, ld, l21, ld, 1, a22, ld); err != nil {
		return err
	}
	if err := c.run(ctx, o+k, m); err != nil {
		return err
	}
	if err := blas.Gemm(ctx, false, false, m, k, k, 1, l21, ld, x11, ld, 0, c.t.Ptr(), k); err != nil {
		return err
	}
	return blas.Gemm(ctx, false, false, m, k, m, -1, x22, ld, c.t.Ptr(), k, 0, x21, ld)
}

// Damp returns the damp_percent used (larger than configured if the factorization failed).
func (f *Factor) Damp() float64 { return f.damp }

// Close frees the factor's device memory.
func (f *Factor) Close() {
	f.u.Free()
	f.permD.Free()
	f.deadD.Free()
}
