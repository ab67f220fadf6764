package transformer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func withVecMath(t *testing.T, f func(t *testing.T)) {
	for _, v := range vecMaths {
		t.Run(v.name, func(t *testing.T) {
			saved := vm
			vm = v
			defer func() { vm = saved }()
			f(t)
		})
	}
}

func TestExpf(t *testing.T) {
	for _, x := range []float32{0, 1, -1, 0.5, 10, -10, 80, -80, 88, -87, 1e-8, -3.4657359} {
		want := math.Exp(float64(x))
		if got := float64(expf(x)); math.Abs(got-want) > 3e-7*want {
			t.Errorf("expf(%v) = %v, want %v", x, got, want)
		}
	}
	if expf(-1000) > 2e-38 || expf(-1000) < 0 || math.IsInf(float64(expf(1000)), 0) || expf(float32(math.NaN())) == expf(float32(math.NaN())) {
		t.Error("expf clamps")
	}
}

func TestVectorMath(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	withVecMath(t, func(t *testing.T) {
		for _, n := range []int{1, 7, 8, 15, 16, 17, 33, 100, 8192} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(r.NormFloat64() * 20)
				}
				x[r.IntN(n)] = -200 // below the clamp
				var wantMax float32 = -1e30
				for _, v := range x {
					wantMax = max(wantMax, v)
				}
				if got := maxOf(x); got != wantMax {
					t.Fatalf("maxOf = %v, want %v", got, wantMax)
				}
				m := wantMax - 3 // arguments up to 3, as softmax sees after subtracting a max
				var want float64
				for _, v := range x {
					want += math.Exp(float64(v - m))
				}
				if got := float64(sumExpSub(x, m)); math.Abs(got-want) > 1e-6*want {
					t.Fatalf("sumExpSub = %v, want %v", got, want)
				}
				y := append([]float32(nil), x...)
				got := float64(expSubSum(y, m))
				if math.Abs(got-want) > 1e-6*want {
					t.Fatalf("expSubSum = %v, want %v", got, want)
				}
				for i, v := range x {
					e := math.Exp(float64(v - m))
					if math.Abs(float64(y[i])-e) > 3e-7*e+2e-38 {
						t.Fatalf("e^(%v) = %v, want %v", v-m, y[i], e)
					}
				}
				g := append([]float32(nil), x...)
				u := make([]float32, n)
				for i := range u {
					u[i] = float32(r.NormFloat64())
				}
				siluMulRange(g, u)
				for i, v := range x {
					w := float64(v) / (1 + math.Exp(-float64(v))) * float64(u[i])
					if math.Abs(float64(g[i])-w) > 1e-6*(1+math.Abs(w)) {
						t.Fatalf("silu(%v)·%v = %v, want %v", v, u[i], g[i], w)
					}
				}
			})
		}
	})
}
