package cuda

import (
	"context"
	"fmt"
	"runtime"
)

// blas holds the cuBLAS functions.
var blas struct {
	create        func(h *uintptr) int32
	destroy       func(h uintptr) int32
	setMathMode   func(h uintptr, mode int32) int32
	getVersion    func(h uintptr, v *int32) int32
	sgemm         func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, lda int32, b uint64, ldb int32, beta *float32, c uint64, ldc int32) int32
	ssyrk         func(h uintptr, uplo, trans int32, n, k int32, alpha *float32, a uint64, lda int32, beta *float32, c uint64, ldc int32) int32
	gemmEx        func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, atype int32, lda int32, b uint64, btype int32, ldb int32, beta *float32, c uint64, ctype int32, ldc int32, compute int32, algo int32) int32
	sgemmBatched  func(h uintptr, ta, tb int32, m, n, k int32, alpha *float32, a uint64, lda int32, sa int64, b uint64, ldb int32, sb int64, beta *float32, c uint64, ldc int32, sc int64, count int32) int32
	getStatusName func(s int32) string // optional
}

func cublasSymbols() map[string]any {
	return map[string]any{
		"cublasCreate_v2":           &blas.create,
		"cublasDestroy_v2":          &blas.destroy,
		"cublasSetMathMode":         &blas.setMathMode,
		"cublasGetVersion_v2":       &blas.getVersion,
		"cublasSgemm_v2":            &blas.sgemm,
		"cublasSsyrk_v2":            &blas.ssyrk,
		"cublasSgemmStridedBatched": &blas.sgemmBatched,
		"cublasGemmEx":              &blas.gemmEx,
	}
}

const (
	cublasOpN       = 0
	cublasOpT       = 1
	cublasFillLower = 0
	cublasFillUpper = 1
	// CUBLAS_DEFAULT_MATH: single precision stays IEEE float32 (TF32 tensor cores need
	// CUBLAS_TF32_TENSOR_OP_MATH); the GPTQ reference disables TF32.
	cublasDefaultMath = 0
	// CUBLAS_TF32_TENSOR_OP_MATH: SGEMM on the tensor cores with TF32 inputs (10-bit
	// mantissas), float32 accumulation.
	cublasTF32Math = 3
	// cudaDataType and cublasComputeType values of GemmHalf.
	cudaR32F          = 0
	cudaR16F          = 2
	cublasCompute32F  = 68
	cublasGemmDefault = -1
)

// BLAS is a cuBLAS handle of one device, using the legacy default stream. Its matrices are
// row-major, like the rest of quantfleet: the calls swap operands to use cuBLAS's
// column-major routines.
type BLAS struct {
	d       *Device
	h       uintptr
	version int
}

// BLAS returns the device's cuBLAS handle (created on first use, with TF32 off).
func (d *Device) BLAS(ctx context.Context) (*BLAS, error) {
	return d.handle(ctx, &d.blas, cublasDefaultMath)
}

// BLASTF32 returns a second cuBLAS handle of the device whose Gemm runs on the tensor cores
// with TF32 inputs (10-bit mantissas, float32 sums): several times the IEEE rate, for forward
// passes whose results tolerate about 1e-3 relative error (the references run theirs in
// bf16). Its SyrkUpper is IEEE float32 as well as TF32 allows; Hessians use BLAS.
func (d *Device) BLASTF32(ctx context.Context) (*BLAS, error) {
	return d.handle(ctx, &d.blasTF32, cublasTF32Math)
}

// handle returns *slot, creating it with the math mode on first use. A handle's mode never
// changes, so goroutines may share it.
func (d *Device) handle(ctx context.Context, slot **BLAS, mode int32) (*BLAS, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if *slot != nil {
		return *slot, nil
	}
	if err := loadCUBLAS(); err != nil {
		return nil, err
	}
	leave, err := d.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	b := &BLAS{d: d}
	if err := cublasErr("cublasCreate", blas.create(&b.h)); err != nil {
		return nil, err
	}
	if err := cublasErr("cublasSetMathMode", blas.setMathMode(b.h, mode)); err != nil {
		blas.destroy(b.h)
		return nil, err
	}
	var v int32
	if blas.getVersion(b.h, &v) == 0 {
		b.version = int(v)
	}
	*slot = b
	return b, nil
}

// Version returns cuBLAS's version number (e.g. 130000).
func (b *BLAS) Version() int { return b.version }

func op(t bool) int32 {
	if t {
		return cublasOpT
	}
	return cublasOpN
}

func checkDims(vals ...int) error {
	for _, v := range vals {
		if v < 0 || v > 1<<31-1 {
			return fmt.Errorf("cuda: BLAS dimension %d out of range", v)
		}
	}
	return nil
}

// call makes one cuBLAS call on the device: ctx checked, the dimensions in range, nothing
// called when skip (an empty result).
func (b *BLAS) call(ctx context.Context, name string, skip bool, dims []int, f func() int32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkDims(dims...); err != nil {
		return err
	}
	if skip {
		return nil
	}
	leave, err := b.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return cublasErr(name, f())
}

// Gemm computes C = alpha·op(A)·op(B) + beta·C for row-major float32 matrices (op(A) m×k,
// op(B) k×n, C m×n, leading dimensions in elements), like transformer.Gemm.
func (b *BLAS) Gemm(ctx context.Context, transA, transB bool, m, n, k int, alpha float32, a Ptr, lda int, bm Ptr, ldb int, beta float32, c Ptr, ldc int) error {
	// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: the same memory with the
	// operands swapped (so in every call below).
	return b.call(ctx, "cublasSgemm", m == 0 || n == 0, []int{m, n, k, lda, ldb, ldc}, func() int32 {
		r := blas.sgemm(b.h, op(transB), op(transA), int32(n), int32(m), int32(k), &alpha, uint64(bm), int32(ldb), uint64(a), int32(lda), &beta, uint64(c), int32(ldc))
		runtime.KeepAlive(&alpha)
		runtime.KeepAlive(&beta)
		return r
	})
}

// GemmStridedBatched is Gemm on count triples of matrices: triple i's A, B and C start
// strideA, strideB and strideC elements after triple i−1's (a stride may be 0: one matrix
// shared by every triple).
func (b *BLAS) GemmStridedBatched(ctx context.Context, transA, transB bool, m, n, k int, alpha float32, a Ptr, lda, strideA int, bm Ptr, ldb, strideB int, beta float32, c Ptr, ldc, strideC, count int) error {
	if strideA < 0 || strideB < 0 || strideC < 0 {
		return fmt.Errorf("cuda: negative BLAS batch stride")
	}
	return b.call(ctx, "cublasSgemmStridedBatched", m == 0 || n == 0 || count == 0, []int{m, n, k, lda, ldb, ldc, count}, func() int32 {
		r := blas.sgemmBatched(b.h, op(transB), op(transA), int32(n), int32(m), int32(k), &alpha, uint64(bm), int32(ldb), int64(strideB),
			uint64(a), int32(lda), int64(strideA), &beta, uint64(c), int32(ldc), int64(strideC), int32(count))
		runtime.KeepAlive(&alpha)
		runtime.KeepAlive(&beta)
		return r
	})
}

// GemmHalf is Gemm with A and B in IEEE half precision (uint16 bit patterns) on the tensor
// cores, the products summed in float32 into the float32 C.
func (b *BLAS) GemmHalf(ctx context.Context, transA, transB bool, m, n, k int, alpha float32, a Ptr, lda int, bm Ptr, ldb int, beta float32, c Ptr, ldc int) error {
	return b.gemmHalf(ctx, transA, transB, m, n, k, alpha, a, lda, bm, ldb, beta, c, ldc, cudaR32F)
}

// GemmHalfOut is GemmHalf with C in half precision too: the float32 sums rounded to half, as
// a half-precision forward pass (PyTorch's fp16 matmul) produces them.
func (b *BLAS) GemmHalfOut(ctx context.Context, transA, transB bool, m, n, k int, alpha float32, a Ptr, lda int, bm Ptr, ldb int, beta float32, c Ptr, ldc int) error {
	return b.gemmHalf(ctx, transA, transB, m, n, k, alpha, a, lda, bm, ldb, beta, c, ldc, cudaR16F)
}

// gemmHalf is cublasGemmEx with half A and B, float32 sums and C of type ctype.
func (b *BLAS) gemmHalf(ctx context.Context, transA, transB bool, m, n, k int, alpha float32, a Ptr, lda int, bm Ptr, ldb int, beta float32, c Ptr, ldc int, ctype int32) error {
	return b.call(ctx, "cublasGemmEx", m == 0 || n == 0, []int{m, n, k, lda, ldb, ldc}, func() int32 {
		r := blas.gemmEx(b.h, op(transB), op(transA), int32(n), int32(m), int32(k), &alpha, uint64(bm), cudaR16F, int32(ldb),
			uint64(a), cudaR16F, int32(lda), &beta, uint64(c), ctype, int32(ldc), cublasCompute32F, cublasGemmDefault)
		runtime.KeepAlive(&alpha)
		runtime.KeepAlive(&beta)
		return r
	})
}

// SyrkUpper computes the upper triangle of C = alpha·AᵀA + beta·C for a row-major k×n matrix
// A (leading dimension lda) and row-major n×n C; the strict lower triangle of C is not
// touched.
func (b *BLAS) SyrkUpper(ctx context.Context, n, k int, alpha float32, a Ptr, lda int, beta float32, c Ptr, ldc int) error {
	return b.call(ctx, "cublasSsyrk", n == 0, []int{n, k, lda, ldc}, func() int32 {
		// Row-major A (k×n) is column-major Aᵀ (n×k), so AᵀA is column-major Aᵀ·(Aᵀ)ᵀ: op N.
		// Column-major lower triangle = row-major upper triangle.
		r := blas.ssyrk(b.h, cublasFillLower, cublasOpN, int32(n), int32(k), &alpha, uint64(a), int32(lda), &beta, uint64(c), int32(ldc))
		runtime.KeepAlive(&alpha)
		runtime.KeepAlive(&beta)
		return r
	})
}
