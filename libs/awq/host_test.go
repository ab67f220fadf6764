package awq

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// hostInputs returns a rows×cols weight of N(0, 0.02²) values and cols half-precision scales in
// [0.5, 1.5).
func hostInputs(rows, cols int) (w, s []float32) {
	r := rand.New(rand.NewPCG(1, 2))
	w = make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.02)
	}
	s = make([]float32, cols)
	for i := range s {
		s[i] = f16(float32(0.5 + r.Float64()))
	}
	return w, s
}

// TestHostStepsIndependentOfCores: the host steps that run on every core (duo scaling's weight
// means, column scaling, folding into the previous linear, quantization) give the same bits with
// one goroutine and with several.
func TestHostStepsIndependentOfCores(t *testing.T) {
	rows, cols, gs := 64, 4096, 128 // 32 column groups, 64 rows: 4 goroutines each
	w, s := hostInputs(rows, cols)
	run := func(procs int) ([]float64, []float32, []float32, *Result) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		l := &Linear{Name: "a", Rows: rows, Cols: cols, Weight: slices.Clone(w)}
		mean := weightMean([]*Linear{l, l}, gs)
		if err := ScaleColumns(l, s); err != nil {
			t.Fatal(err)
		}
		prev := &Linear{Name: "b", Rows: cols, Cols: rows, Weight: slices.Clone(w), Bias: slices.Clone(s)}
		if err := FoldIntoLinear(prev, s); err != nil {
			t.Fatal(err)
		}
		q, err := Quantize(l.Weight, rows, cols, Config{Bits: 4, GroupSize: gs})
		if err != nil {
			t.Fatal(err)
		}
		return mean, l.Weight, prev.Weight, q
	}
	m1, w1, p1, q1 := run(1)
	m4, w4, p4, q4 := run(4)
	if !slices.Equal(m1, m4) || !slices.Equal(w1, w4) || !slices.Equal(p1, p4) ||
		!slices.Equal(q1.QWeight, q4.QWeight) || !slices.Equal(q1.Scales, q4.Scales) || !slices.Equal(q1.Zeros, q4.Zeros) {
		t.Fatal("the host steps differ between 1 and 4 goroutines")
	}
}

// BenchmarkHostSteps times the steps FinishLayer and duo scaling's candidates run on the host
// for a Llama-3-8B gate_proj (14336×4096, group 128): the weight means of duo scaling, the
// scaling of the columns and the quantization. They are elementwise or per row and run on
// every core, so that a GPU worker's host does not hold the device up.
func BenchmarkHostSteps(b *testing.B) {
	rows, cols := 14336, 4096
	w, s := hostInputs(rows, cols)
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

// TestQuantizeNonFinite: a NaN or infinite weight fails Quantize with ErrNonFinite naming the
// first one in row-major order, whichever goroutine finds it.
func TestQuantizeNonFinite(t *testing.T) {
	const rows, cols = 64, 256
	for _, tc := range []struct {
		bad  map[int]float32
		want string
	}{
		{map[int]float32{2*cols + 5: float32(math.NaN())}, "weight [2][5] = NaN"},
		{map[int]float32{60*cols + 1: float32(math.Inf(-1)), 40 * cols: float32(math.Inf(1))}, "weight [40][0] = +Inf"},
	} {
		w, _ := hostInputs(rows, cols)
		for i, v := range tc.bad {
			w[i] = v
		}
		_, err := Quantize(w, rows, cols, Config{Bits: 4, GroupSize: 128})
		if !errors.Is(err, ErrNonFinite) || !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("Quantize = %v, want ErrNonFinite naming %q", err, tc.want)
		}
	}
}
