package transformer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func naiveAttention(q, k, v []float32, batch, seq, heads, kvHeads, hd, window int) []float64 {
	qd, kd := heads*hd, kvHeads*hd
	out := make([]float64, batch*seq*qd)
	for b := 0; b < batch; b++ {
		for h := 0; h < heads; h++ {
			g := h / (heads / kvHeads)
			for i := 0; i < seq; i++ {
				lo := 0
				if window > 0 {
					lo = max(0, i-window+1)
				}
				sc := make([]float64, i+1)
				mx := math.Inf(-1)
				for j := lo; j <= i; j++ {
					var s float64
					for d := 0; d < hd; d++ {
						s += float64(q[(b*seq+i)*qd+h*hd+d]) * float64(k[(b*seq+j)*kd+g*hd+d])
					}
					sc[j] = s / math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := lo; j <= i; j++ {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := lo; j <= i; j++ {
					for d := 0; d < hd; d++ {
						out[(b*seq+i)*qd+h*hd+d] += sc[j] / sum * float64(v[(b*seq+j)*kd+g*hd+d])
					}
				}
			}
		}
	}
	return out
}

func TestAttend(t *testing.T) {
	cases := []struct{ batch, seq, heads, kvHeads, hd, window int }{
		{1, 1, 1, 1, 4, 0},
		{2, 37, 4, 2, 8, 0},
		{1, 200, 2, 1, 64, 0},
		{2, 150, 4, 4, 16, 50},
		{1, 300, 3, 1, 80, 7},
		{1, 70, 2, 2, 300, 0}, // head_dim deeper than one packed block
		{3, 65, 8, 2, 32, 64},
	}
	r := rand.New(rand.NewPCG(7, 8))
	for _, ker := range kernels {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/%+v", ker.name, c), func(t *testing.T) {
				saved := activeKernel
				activeKernel = ker
				defer func() { activeKernel = saved }()
				q := randSlice(r, c.batch*c.seq*c.heads*c.hd)
				k := randSlice(r, c.batch*c.seq*c.kvHeads*c.hd)
				v := randSlice(r, c.batch*c.seq*c.kvHeads*c.hd)
				got := make([]float32, len(q))
				for i := range got {
					got[i] = float32(math.NaN())
				}
				attend(got, q, k, v, c.batch, c.seq, c.heads, c.kvHeads, c.hd, c.window)
				want := naiveAttention(q, k, v, c.batch, c.seq, c.heads, c.kvHeads, c.hd, c.window)
				for i := range want {
					if d := math.Abs(float64(got[i]) - want[i]); !(d < 2e-5*(1+math.Abs(want[i]))) {
						t.Fatalf("out[%d] = %v, want %v", i, got[i], want[i])
					}
				}
			})
		}
	}
}
