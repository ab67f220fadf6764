package transformer

import "math"

// attendCapped is plain causal attention with a given scale and optional tanh soft-cap of the
// scores (Gemma 2: cap·tanh(s/cap)), the way transformers' eager attention computes them.
func attendCapped(out, q, k, v []float32, batch, seq, heads, kvHeads, hd, window int, scale, softcap float32) {
	group := heads / kvHeads
	qd, kd := heads*hd, kvHeads*hd
	parallel(numThreads(), batch*heads, func(lo, hi int) {
		s := make([]float32, seq)
		for w := lo; w < hi; w++ {
			b, h := w/heads, w%heads
			g := h / group
			for i := 0; i < seq; i++ {
				qi := q[(b*seq+i)*qd+h*hd : (b*seq+i)*qd+(h+1)*hd]
				j0 := 0
				if window > 0 {
					j0 = max(0, i-window+1)
				}
				sc := s[:i+1-j0]
				for j := j0; j <= i; j++ {
					kj := k[(b*seq+j)*kd+g*hd : (b*seq+j)*kd+(g+1)*hd]
					var d float32
					for e := range qi {
						d += float32(qi[e] * kj[e])
					}
					d *= scale
					if softcap > 0 {
						d = float32(math.Tanh(float64(d/softcap))) * softcap
					}
					sc[j-j0] = d
				}
				softmaxRow(sc)
				oi := out[(b*seq+i)*qd+h*hd : (b*seq+i)*qd+(h+1)*hd]
				clear(oi)
				for j := j0; j <= i; j++ {
					vj := v[(b*seq+j)*kd+g*hd : (b*seq+j)*kd+(g+1)*hd]
					p := sc[j-j0]
					for e := range oi {
						oi[e] += p * vj[e]
					}
				}
			}
		}
	})
}

// geluTanhMul computes g ← gelu_tanh(g)·u: 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))).
func geluTanhMul(g, u []float32) {
	const c = 0.7978845608028654 // sqrt(2/pi)
	for i, x := range g {
		xf := float64(x)
		g[i] = float32(0.5*xf*(1+math.Tanh(c*(xf+0.044715*xf*xf*xf)))) * u[i]
	}
}
