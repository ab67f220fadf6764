package transformer

import "math"

// rowsParallel runs f over row ranges of [0, rows) on all threads when the work (rows×cost
// floats) is large enough to pay for goroutines.
func rowsParallel(rows, cost int, f func(lo, hi int)) {
	threads := numThreads()
	if rows*cost < 1<<15 {
		threads = 1
	}
	parallel(threads, rows, f)
}

// rmsNorm writes x·rsqrt(mean(x²)+eps)·w for each row of x (width len(w)) into dst, as
// transformers' RMSNorm does in float32 (the mean is accumulated in float64).
func rmsNorm(dst, x, w []float32, eps float64) {
	n := len(w)
	rowsParallel(len(x)/n, n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			rmsNormRow(dst[r*n:(r+1)*n], x[r*n:(r+1)*n], w, eps)
		}
	})
}

func rmsNormRow(dst, x, w []float32, eps float64) {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	// torch holds the mean in float32 before adding eps.
	mean := float32(s / float64(len(x)))
	inv := float32(1 / math.Sqrt(float64(mean)+eps))
	for i, v := range x {
		dst[i] = w[i] * (v * inv)
	}
}

// siluMul computes g ← silu(g)·u elementwise: the SwiGLU activation.
func siluMul(g, u []float32) {
	const block = 4096
	rowsParallel((len(g)+block-1)/block, block, func(lo, hi int) {
		lo, hi = lo*block, min(hi*block, len(g))
		siluMulRange(g[lo:hi], u[lo:hi])
	})
}

// expf is e^x in float32 (Cephes expf: range reduction by ln 2 and a degree-6
// polynomial; relative error below 2 ulp). Arguments are clamped to [−87.34, 88.38], so
// that the result is a normal float: e^−87.34 ≈ 1.2e−38 stands for 0.
func expf(x float32) float32 {
	if x != x {
		return x
	}
	// The same clamps as the vector code: the result stays a normal float.
	x = min(max(x, -87.33654), 88.37626)
	const (
		log2e = 1.44269504088896341
		c1    = 0.693359375
		c2    = -2.12194440e-4
	)
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - n*c1
	r = r - n*c2
	z := r * r
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	p = p*z + r + 1
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// softmaxRow replaces x with softmax(x) in float32 (the max is subtracted first).
func softmaxRow(x []float32) {
	s := expSubSum(x, maxOf(x))
	inv := 1 / s
	for i := range x {
		x[i] *= inv
	}
}

// logSumExp returns log Σ exp(x).
func logSumExp(x []float32) float64 {
	m := maxOf(x)
	return float64(m) + math.Log(float64(sumExpSub(x, m)))
}

func addInto(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}
