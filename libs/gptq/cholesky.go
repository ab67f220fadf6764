package gptq

import "math"

// leafSize is the order up to which cholInv32 factors and inverts in float64 directly.
const leafSize = 128

// cholInv32 computes, for the symmetric positive definite n×n matrix a (row-major float32,
// lower triangle read, overwritten), the lower Cholesky factor L (a = L·Lᵀ) and its inverse
// X = L⁻¹, stored in l and x (row-major with stride ld, upper triangles zeroed). It recurses
// on halves: with a = [[A11, ·], [A21, A22]],
//
//	L11, X11 = cholInv(A11);  L21 = A21·X11ᵀ;  L22, X22 = cholInv(A22 − L21·L21ᵀ);
//	X21 = −X22·(L21·X11)
//
// so nearly all the work is float32 matrix products (like the reference's float32 Cholesky
// on the GPU); blocks of order ≤ leafSize are done in float64. It reports false if the
// matrix is not (numerically) positive definite.
func cholInv32(a, l, x []float32, n, ld int) bool {
	if n <= leafSize {
		return cholInvLeaf(a, l, x, n, ld)
	}
	k := n / 2
	m := n - k
	a21, a22 := a[k*ld:], a[k*ld+k:]
	l21, l22 := l[k*ld:], l[k*ld+k:]
	x21, x22 := x[k*ld:], x[k*ld+k:]
	if !cholInv32(a, l, x, k, ld) {
		return false
	}
	// L21 = A21·X11ᵀ (m×k)
	gemm(false, true, m, k, k, 1, a21, ld, x, ld, 0, l21, ld)
	// A22 −= L21·L21ᵀ
	gemm(false, true, m, m, k, -1, l21, ld, l21, ld, 1, a22, ld)
	if !cholInv32(a22, l22, x22, m, ld) {
		return false
	}
	// X21 = −X22·(L21·X11): T = L21·X11 (m×k) into x21, then X21 = −X22·T.
	t := make([]float32, m*k)
	gemm(false, false, m, k, k, 1, l21, ld, x, ld, 0, t, k)
	gemm(false, false, m, k, m, -1, x22, ld, t, k, 0, x21, ld)
	for i := 0; i < k; i++ { // upper-right blocks are zero
		clear(l[i*ld+k : i*ld+n])
		clear(x[i*ld+k : i*ld+n])
	}
	return true
}

// cholInvLeaf is cholInv32 for a small block, in float64.
func cholInvLeaf(a, l, x []float32, n, ld int) bool {
	L := make([]float64, n*n)
	for j := 0; j < n; j++ {
		s := float64(a[j*ld+j])
		for k := 0; k < j; k++ {
			s -= L[j*n+k] * L[j*n+k]
		}
		if !(s > 0) || math.IsInf(s, 0) {
			return false
		}
		d := math.Sqrt(s)
		L[j*n+j] = d
		for i := j + 1; i < n; i++ {
			s := float64(a[i*ld+j])
			for k := 0; k < j; k++ {
				s -= L[i*n+k] * L[j*n+k]
			}
			L[i*n+j] = s / d
		}
	}
	// X = L⁻¹ by forward substitution, column by column.
	X := make([]float64, n*n)
	for j := 0; j < n; j++ {
		X[j*n+j] = 1 / L[j*n+j]
		for i := j + 1; i < n; i++ {
			var s float64
			for k := j; k < i; k++ {
				s += L[i*n+k] * X[k*n+j]
			}
			X[i*n+j] = -s / L[i*n+i]
		}
	}
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			l[i*ld+j] = float32(L[i*n+j])
			x[i*ld+j] = float32(X[i*n+j])
		}
	}
	return true
}
