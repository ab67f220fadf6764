package gptqcuda

import (
	"context"
	_ "embed"
	"fmt"

	"quantfleet.dev/libs/cuda"
)

//go:embed kernels.cu
var kernelSource string

// kernelOptions: no FMA contraction, so that float32 expressions round like Go's; IEEE
// division and denormals are NVRTC's defaults.
var kernelOptions = []string{"--fmad=false", "--std=c++17"}

// kernels are the GPTQ kernels and cuBLAS handle of one device.
type kernels struct {
	d    *cuda.Device
	blas *cuda.BLAS

	hessAccum, hessMerge, hessDiag      *cuda.Function
	hessBuild                           *cuda.Function
	cholInvLeaf, checkFinite, flipUpper *cuda.Function
	gatherCols, scatterCodes, zeroCols  *cuda.Function
	findParams, gptqBlock               *cuda.Function
}

// loadKernels returns the kernels on d; the module is compiled once per process and loaded
// once per device (package cuda caches both).
func loadKernels(ctx context.Context, d *cuda.Device) (*kernels, error) {
	m, err := d.Module(ctx, "gptq_kernels.cu", kernelSource, kernelOptions...)
	if err != nil {
		return nil, err
	}
	b, err := d.BLAS(ctx)
	if err != nil {
		return nil, err
	}
	k := &kernels{d: d, blas: b}
	for name, f := range map[string]**cuda.Function{
		"hess_accum": &k.hessAccum, "hess_merge": &k.hessMerge, "hess_diag": &k.hessDiag, "hess_build": &k.hessBuild,
		"chol_inv_leaf": &k.cholInvLeaf, "check_finite": &k.checkFinite, "flip_upper": &k.flipUpper,
		"gather_cols": &k.gatherCols, "scatter_codes": &k.scatterCodes, "zero_cols": &k.zeroCols,
		"find_params": &k.findParams, "gptq_block": &k.gptqBlock,
	} {
		if *f, err = m.Function(name); err != nil {
			return nil, err
		}
	}
	return k, nil
}

const threads = 256

// grid2 is the launch shape of the 2D kernels: x over cols, rows looped over at most
// 65535 y blocks.
func grid2(cols, rows int) (cuda.Dim3, cuda.Dim3) {
	return cuda.Dim3{X: (cols + threads - 1) / threads, Y: min(max(rows, 1), 65535)}, cuda.Dim3{X: threads}
}

// warpRows is the launch shape of the one-warp-per-row kernels, with groups y blocks.
func warpRows(rows, groups int) (cuda.Dim3, cuda.Dim3) {
	const warps = threads / 32
	return cuda.Dim3{X: (rows + warps - 1) / warps, Y: groups}, cuda.Dim3{X: threads}
}

// at returns the address of element (r, c) of a row-major float32 matrix with leading
// dimension ld.
func at(b *cuda.Buffer, r, c, ld int) cuda.Ptr { return b.Ptr().Add(4 * (r*ld + c)) }

// nonFinite reports whether any of the first n float32 values of b is NaN or infinite; flag
// is a one-int32 scratch buffer.
func (k *kernels) nonFinite(ctx context.Context, b *cuda.Buffer, n int, flag *cuda.Buffer) (bool, error) {
	if err := flag.Zero(ctx, 0, 4); err != nil {
		return false, err
	}
	blocks := min((n+threads-1)/threads, 4096)
	if err := k.checkFinite.Launch(ctx, cuda.Dim3{X: blocks}, cuda.Dim3{X: threads}, 0, b, int64(n), flag); err != nil {
		return false, err
	}
	return readFlag(ctx, flag)
}

func readFlag(ctx context.Context, flag *cuda.Buffer) (bool, error) {
	v := make([]int32, 1)
	if err := cuda.Download(ctx, v, flag, 0); err != nil {
		return false, err
	}
	return v[0] != 0, nil
}

// buffers allocates several buffers and frees them together.
type buffers struct {
	d    *cuda.Device
	list []*cuda.Buffer
}

func (bs *buffers) alloc(ctx context.Context, what string, bytes int) (*cuda.Buffer, error) {
	b, err := bs.d.Alloc(ctx, bytes)
	if err != nil {
		return nil, fmt.Errorf("gptq on %s: %s: %w", bs.d.Name(), what, err)
	}
	bs.list = append(bs.list, b)
	return b, nil
}

func (bs *buffers) free() {
	for _, b := range bs.list {
		b.Free()
	}
	bs.list = nil
}

// Warm compiles and loads the GPTQ kernels on d and creates its cuBLAS handle: the start-up
// work of the first solve, done before it (see quantize.Warmer).
func Warm(ctx context.Context, d *cuda.Device) error {
	_, err := loadKernels(ctx, d)
	return err
}
