package awq

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkHostSteps times the steps FinishLayer and duo scaling's candidates run on the host
// for a Llama-3-8B gate_proj (14336×4096, group 128): the weight means of duo scaling, the
// scaling of the columns and the quantization. They are elementwise or per row and run on
// every core, so that a GPU worker's host does not hold the device up.
func BenchmarkHostSteps(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	rows, cols := 14336, 4096
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.02)
	}
	s := make([]float32, cols)
	for i := range s {
		s[i] = f16(float32(0.5 + r.Float64()))
	}
	l := &Linear{Name: "mlp.gate_proj", Rows: rows, Cols: cols, Weight: w}
	cfg := Config{Bits: 4, GroupSize: 128}
	b.Run("weightMean", func(b *testing.B) {
		for range b.N {
			weightMean([]*Linear{l}, 128)
		}
	})
	b.Run("ScaleColumns", func(b *testing.B) {
		for range b.N {
			if err := ScaleColumns(l, s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Quantize", func(b *testing.B) {
		for range b.N {
			if _, err := Quantize(l.Weight, rows, cols, cfg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
