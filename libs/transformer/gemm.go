package transformer

import (
	"fmt"
	"runtime"
	"sync"
)

//go:generate go run gen_kernels.go

// A microKernel computes one mr×nr tile of C from packed panels (see gen_kernels.go):
// C = acc (add false) or C += acc (add true), where acc[i][j] = Σ_p a[p*mr+i]·b[p*nr+j].
type microKernel struct {
	name   string
	mr, nr int
	mc, nc int // cache blocks of C rows and columns (multiples of mr and nr)
	fn     func(k int, a, b, c *float32, ldc int, add bool)
	// fnU is fn reading A in place (row i at a+i·lda) instead of from a packed panel; nil
	// if the kernel has none.
	fnU func(k int, a *float32, lda int, b, c *float32, ldc int, add bool)
	// packBT packs nr rows of a row-major matrix, kb&^7 columns, as kb steps of nr values
	// (see packB); nil if the kernel has none.
	packBT func(dst, src *float32, ldb, kb int)
}

// kc is the depth of a packed block: a kc×nr micro-panel of B (32 KiB for nr=32) stays in
// L1 while the mc×kc block of A streams from L2.
const kc = 256

// kernels lists the micro-kernels this CPU can run, fastest first; the last is pure Go.
var kernels = append(archKernels(), goKernel)

// activeKernel is the kernel Gemm uses.
var activeKernel = kernels[0]

// KernelName names the matrix-product kernel in use (e.g. "avx512 14x32").
func KernelName() string { return activeKernel.name }

// Gemm computes C = alpha·op(A)·op(B) + beta·C with row-major float32 matrices, where op(X)
// is X, or Xᵀ when the trans flag is set: op(A) is m×k, op(B) is k×n, C is m×n, and lda,
// ldb, ldc are the row strides of the stored matrices. With beta == 0, C is not read.
// Work is spread over GOMAXPROCS goroutines. It panics if a slice is too short, like a
// BLAS call with bad arguments.
func Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	gemm(activeKernel, runtime.GOMAXPROCS(0), transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func checkMatrix(name string, s []float32, rows, cols, ld int) {
	if rows == 0 || cols == 0 {
		return
	}
	if ld < cols {
		panic(fmt.Sprintf("transformer: Gemm: stride of %s is %d < %d columns", name, ld, cols))
	}
	if need := (rows-1)*ld + cols; len(s) < need {
		panic(fmt.Sprintf("transformer: Gemm: %s has %d elements, %d×%d with stride %d needs %d", name, len(s), rows, cols, ld, need))
	}
}

var bufPool sync.Pool // *[]float32 scratch for packed blocks

func getBuf(n int) *[]float32 {
	if p, ok := bufPool.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]float32, n)
	return &s
}

func gemm(ker *microKernel, threads int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("transformer: Gemm: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	if transA {
		checkMatrix("A", a, k, m, lda)
	} else {
		checkMatrix("A", a, m, k, lda)
	}
	if transB {
		checkMatrix("B", b, n, k, ldb)
	} else {
		checkMatrix("B", b, k, n, ldb)
	}
	checkMatrix("C", c, m, n, ldc)
	if m == 0 || n == 0 {
		return
	}
	if beta != 0 && beta != 1 || k == 0 || alpha == 0 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				if beta == 0 {
					row[j] = 0
				} else {
					row[j] *= beta
				}
			}
		}
		if k == 0 || alpha == 0 {
			return
		}
		beta = 1
	}
	mr, nr := ker.mr, ker.nr
	panelsM := (m + mr - 1) / mr
	if threads < 1 {
		threads = 1
	}
	// Small products are not worth a goroutine.
	if 2*m*n*k < 1<<20 {
		threads = 1
	}
	splitM := panelsM >= 2*threads
	for jc := 0; jc < n; jc += ker.nc {
		nc := min(ker.nc, n-jc)
		panelsN := (nc + nr - 1) / nr
		for pc := 0; pc < k; pc += kc {
			kb := min(kc, k-pc)
			add := pc > 0 || beta != 0
			bp := getBuf(panelsN * nr * kb)
			packed := *bp
			parallel(threads, panelsN, func(lo, hi int) {
				for q := lo; q < hi; q++ {
					ker.packB(packed[q*nr*kb:(q+1)*nr*kb], transB, b, ldb, pc, kb, jc+q*nr, min(nr, n-jc-q*nr))
				}
			})
			// A is read in place by fnU when it needs neither transposing nor scaling;
			// otherwise (and for a last partial panel of rows) it is packed.
			inPlace := ker.fnU != nil && !transA && alpha == 1
			block := func(i0, i1, q0, q1 int) {
				ap := getBuf(ker.mc * kb)
				var tmp [16 * 32]float32
				for ic := i0; ic < i1; ic += ker.mc {
					mb := min(ker.mc, i1-ic)
					pa := *ap
					for r := 0; r*mr < mb; r++ {
						if rows := min(mr, mb-r*mr); !inPlace || rows < mr {
							packA(pa[r*mr*kb:(r+1)*mr*kb], transA, a, lda, pc, kb, ic+r*mr, rows, mr, alpha)
						}
					}
					for q := q0; q < q1; q++ {
						j0 := jc + q*nr
						nw := min(nr, n-j0)
						pb := &packed[q*nr*kb]
						for r := 0; r*mr < mb; r++ {
							i := ic + r*mr
							mh := min(mr, mb-r*mr)
							if mh == mr && nw == nr {
								if inPlace {
									ker.fnU(kb, &a[i*lda+pc], lda, pb, &c[i*ldc+j0], ldc, add)
								} else {
									ker.fn(kb, &pa[r*mr*kb], pb, &c[i*ldc+j0], ldc, add)
								}
								continue
							}
							if inPlace && mh == mr {
								ker.fnU(kb, &a[i*lda+pc], lda, pb, &tmp[0], nr, false)
							} else {
								ker.fn(kb, &pa[r*mr*kb], pb, &tmp[0], nr, false)
							}
							for y := 0; y < mh; y++ {
								row := c[(i+y)*ldc+j0 : (i+y)*ldc+j0+nw]
								t := tmp[y*nr : y*nr+nw]
								if add {
									for x := range row {
										row[x] += t[x]
									}
								} else {
									copy(row, t)
								}
							}
						}
					}
				}
				bufPool.Put(ap)
			}
			if splitM {
				parallel(threads, panelsM, func(lo, hi int) { block(lo*mr, min(hi*mr, m), 0, panelsN) })
			} else {
				parallel(threads, panelsN, func(lo, hi int) { block(0, m, lo, hi) })
			}
			bufPool.Put(bp)
		}
	}
}

// packA copies rows i0..i0+rows of op(A)[:, p0:p0+kb], scaled by alpha, into dst as kb
// steps of mr values; rows past the matrix are zero.
func packA(dst []float32, trans bool, a []float32, lda, p0, kb, i0, rows, mr int, alpha float32) {
	if rows < mr {
		clear(dst[:kb*mr])
	}
	if trans { // op(A) = Aᵀ: the mr values of a step are contiguous in a row of A
		for p := 0; p < kb; p++ {
			d := dst[p*mr : p*mr+rows]
			src := a[(p0+p)*lda+i0 : (p0+p)*lda+i0+rows]
			if alpha == 1 {
				copy(d, src)
				continue
			}
			for r, v := range src {
				d[r] = alpha * v
			}
		}
		return
	}
	for r := 0; r < rows; r++ {
		src := a[(i0+r)*lda+p0 : (i0+r)*lda+p0+kb]
		if alpha == 1 {
			for p, v := range src {
				dst[p*mr+r] = v
			}
		} else {
			for p, v := range src {
				dst[p*mr+r] = alpha * v
			}
		}
	}
}

// packB packs like the package-level packB, with the kernel's transposing packer for
// full panels of a transposed B.
func (ker *microKernel) packB(dst []float32, trans bool, b []float32, ldb, p0, kb, j0, cols int) {
	nr := ker.nr
	if !trans || ker.packBT == nil || cols < nr || kb < 8 {
		packB(dst, trans, b, ldb, p0, kb, j0, cols, nr)
		return
	}
	k8 := kb &^ 7
	_ = b[(j0+nr-1)*ldb+p0+kb-1] // the asm reads rows j0..j0+nr-1, columns p0..p0+k8-1
	ker.packBT(&dst[0], &b[j0*ldb+p0], ldb, k8)
	for x := 0; x < nr; x++ {
		src := b[(j0+x)*ldb+p0+k8 : (j0+x)*ldb+p0+kb]
		for p, v := range src {
			dst[(k8+p)*nr+x] = v
		}
	}
}

// packB copies columns j0..j0+cols of op(B)[p0:p0+kb, :] into dst as kb steps of nr
// values; columns past the matrix are zero.
func packB(dst []float32, trans bool, b []float32, ldb, p0, kb, j0, cols, nr int) {
	if cols < nr {
		clear(dst[:kb*nr])
	}
	if trans {
		for x := 0; x < cols; x++ {
			src := b[(j0+x)*ldb+p0 : (j0+x)*ldb+p0+kb]
			for p, v := range src {
				dst[p*nr+x] = v
			}
		}
		return
	}
	for p := 0; p < kb; p++ {
		copy(dst[p*nr:p*nr+cols], b[(p0+p)*ldb+j0:(p0+p)*ldb+j0+cols])
	}
}

// parallel splits [0, n) into up to threads contiguous ranges and runs f on each, the
// last on the calling goroutine.
func parallel(threads, n int, f func(lo, hi int)) {
	if threads > n {
		threads = n
	}
	if threads <= 1 {
		if n > 0 {
			f(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	for t := 0; t < threads-1; t++ {
		lo, hi := t*n/threads, (t+1)*n/threads
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	f((threads-1)*n/threads, n)
	wg.Wait()
}

// goKernel is the portable 4×8 micro-kernel.
var goKernel = &microKernel{name: "go 4x8", mr: 4, nr: 8, mc: 128, nc: 1024, fn: kernelGo}

func kernelGo(k int, a, b, c *float32, ldc int, add bool) {
	const mr, nr = 4, 8
	pa := unsafeSlice(a, k*mr)
	pb := unsafeSlice(b, k*nr)
	var acc [mr][nr]float32
	for p := 0; p < k; p++ {
		bv := (*[nr]float32)(pb[p*nr : p*nr+nr])
		av := (*[mr]float32)(pa[p*mr : p*mr+mr])
		for i := 0; i < mr; i++ {
			ai := av[i]
			for j := 0; j < nr; j++ {
				acc[i][j] += ai * bv[j]
			}
		}
	}
	pc := unsafeSlice(c, (mr-1)*ldc+nr)
	for i := 0; i < mr; i++ {
		row := pc[i*ldc : i*ldc+nr]
		for j := range row {
			if add {
				row[j] += acc[i][j]
			} else {
				row[j] = acc[i][j]
			}
		}
	}
}

func numThreads() int { return runtime.GOMAXPROCS(0) }
