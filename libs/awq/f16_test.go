package awq

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"
)

// TestF16 compares the rounding with x448/float16 (an independent IEEE implementation) on
// edge cases and random bit patterns.
func TestF16(t *testing.T) {
	vals := []float32{0, -0, 1, -1, 65504, 65519.99, 65520, -65520, 1e-5, 6.1035156e-05, 6.097e-05,
		5.9604645e-08, 2.9802322e-08, 2.98e-08, 3e-08, 1e-9, 0.1, 1.0009766, 1.00048828125, 1.000732421875,
		32767.998, -32767.998, 32768, 32784, 16383.999, 6.1035153e-05, -6.1035153e-05,
		float32(math.Inf(1)), float32(math.Inf(-1))}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		vals = append(vals, math.Float32frombits(rng.Uint32()))
	}
	for _, v := range vals {
		if math.IsNaN(float64(v)) {
			continue
		}
		want := float16.Fromfloat32(v).Float32()
		if got := f16(v); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("f16(%v) = %v, want %v", v, got, want)
		}
	}
}
