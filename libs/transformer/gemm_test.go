package transformer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// naiveGemm is the textbook triple loop in float64.
func naiveGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			v := float64(alpha) * s
			if beta != 0 {
				v += float64(beta) * float64(c[i*ldc+j])
			}
			c[i*ldc+j] = float32(v)
		}
	}
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func TestGemm(t *testing.T) {
	cases := []struct {
		m, n, k        int
		transA, transB bool
		alpha, beta    float32
		pad            int // extra stride
	}{
		{1, 1, 1, false, false, 1, 0, 0},
		{14, 32, 256, false, true, 1, 0, 0},
		{15, 33, 257, false, true, 1, 0, 0},
		{37, 70, 600, false, false, 1, 1, 3},
		{100, 3, 5, true, false, 0.5, 2, 1},
		{3, 100, 700, true, true, -1, 0.25, 0},
		{300, 2100, 40, false, true, 1, 0, 7},
		{5, 7, 0, false, false, 1, 0.5, 0},
		{64, 512, 64, false, true, 0.125, 0, 0},
		{700, 65, 130, false, false, 1, 1, 0},
		{1000, 512, 520, false, true, 1, 0, 0},
		{400, 1536, 600, false, true, 1, 1, 0},
		{29, 96, 1536, false, true, 1, 0, 5},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		ar, ac := tc.m, tc.k
		if tc.transA {
			ar, ac = tc.k, tc.m
		}
		br, bc := tc.k, tc.n
		if tc.transB {
			br, bc = tc.n, tc.k
		}
		lda, ldb, ldc := ac+tc.pad, bc+tc.pad, tc.n+tc.pad
		a := randSlice(r, max(ar*lda, 1))
		b := randSlice(r, max(br*ldb, 1))
		c0 := randSlice(r, tc.m*ldc)
		want := append([]float32(nil), c0...)
		naiveGemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, want, ldc)
		if tc.beta == 0 {
			for i := range c0 {
				c0[i] = float32(math.NaN()) // beta 0 must not read C
			}
			for i := 0; i < tc.m; i++ {
				for j := tc.n; j < ldc; j++ {
					c0[i*ldc+j], want[i*ldc+j] = 7, 7 // padding must stay untouched
				}
			}
		}
		tol := 1e-5 * math.Sqrt(float64(tc.k+1)) * 4
		for _, ker := range kernels {
			for _, threads := range []int{1, 2, 3} {
				name := fmt.Sprintf("%s/t%d/%dx%dx%d/tA=%v/tB=%v", ker.name, threads, tc.m, tc.n, tc.k, tc.transA, tc.transB)
				t.Run(name, func(t *testing.T) {
					c := append([]float32(nil), c0...)
					gemm(ker, threads, tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)
					for i := range c {
						if d := math.Abs(float64(c[i] - want[i])); !(d <= tol*(1+math.Abs(float64(want[i])))) {
							t.Fatalf("c[%d,%d] = %v, want %v", i/ldc, i%ldc, c[i], want[i])
						}
					}
				})
			}
		}
	}
}

func TestGemmPanicsOnShortSlice(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a short A")
		}
	}()
	Gemm(false, false, 4, 4, 4, 1, make([]float32, 15), 4, make([]float32, 16), 4, 0, make([]float32, 16), 4)
}

// BenchmarkMatMul reports GFLOP/s of the products a forward pass of tiny-llama runs
// (512 tokens × hidden 512 through the q/o (512×512), gate/up (1536×512), down (512×1536)
// and lm_head (8192×512) weights) for every kernel this CPU has, on GOMAXPROCS threads.
func BenchmarkMatMul(b *testing.B) {
	shapes := []struct{ m, n, k int }{
		{512, 512, 512},
		{512, 1536, 512},
		{512, 512, 1536},
		{2048, 8192, 512},
		{4096, 1536, 512},
	}
	hessian := []struct{ m, n, k int }{{512, 512, 8192}} // XᵀX, as GPTQ accumulates it
	r := rand.New(rand.NewPCG(3, 4))
	for _, ker := range kernels {
		for _, s := range shapes {
			b.Run(fmt.Sprintf("%s/%dx%dx%d", ker.name, s.m, s.n, s.k), func(b *testing.B) {
				x := randSlice(r, s.m*s.k)
				w := randSlice(r, s.n*s.k)
				c := make([]float32, s.m*s.n)
				threads := numThreads()
				b.ResetTimer()
				for b.Loop() {
					gemm(ker, threads, false, true, s.m, s.n, s.k, 1, x, s.k, w, s.k, 0, c, s.n)
				}
				flops := 2 * float64(s.m) * float64(s.n) * float64(s.k) * float64(b.N)
				b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
		for _, s := range hessian {
			b.Run(fmt.Sprintf("%s/AtA/%dx%dx%d", ker.name, s.m, s.n, s.k), func(b *testing.B) {
				x := randSlice(r, s.k*s.m)
				c := make([]float32, s.m*s.n)
				threads := numThreads()
				b.ResetTimer()
				for b.Loop() {
					gemm(ker, threads, true, false, s.m, s.n, s.k, 1, x, s.m, x, s.n, 1, c, s.n)
				}
				flops := 2 * float64(s.m) * float64(s.n) * float64(s.k) * float64(b.N)
				b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
