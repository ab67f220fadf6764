package transformer

import "math"

// vecMath is a set of vector loops; each handles the first len&^(lanes-1) elements and
// the wrappers below finish the tail with the scalar expf, which uses the same constants.
type vecMath struct {
	name      string
	lanes     int
	expSubSum func(x []float32, m float32) float32 // x[i] = e^(x[i]-m); returns Σ
	sumExpSub func(x []float32, m float32) float32 // Σ e^(x[i]-m)
	siluMul   func(g, u []float32)                 // g[i] = silu(g[i])·u[i]
	max       func(x []float32) float32            // needs len ≥ lanes
}

var goVecMath = &vecMath{name: "go", lanes: 1}

var vecMaths = append(archVecMath(), goVecMath)

var vm = vecMaths[0]

func (v *vecMath) split(n int) int {
	if v.lanes == 1 {
		return 0
	}
	return n &^ (v.lanes - 1)
}

// maxOf returns the largest element of a non-empty x.
func maxOf(x []float32) float32 {
	m := float32(math.Inf(-1))
	k := vm.split(len(x))
	if k > 0 {
		m = vm.max(x[:k])
	}
	for _, v := range x[k:] {
		m = max(m, v)
	}
	return m
}

// expSubSum replaces x[i] by e^(x[i]-m) and returns the sum.
func expSubSum(x []float32, m float32) float32 {
	var s float32
	k := vm.split(len(x))
	if k > 0 {
		s = vm.expSubSum(x[:k], m)
	}
	for i := k; i < len(x); i++ {
		e := expf(x[i] - m)
		x[i] = e
		s += e
	}
	return s
}

// sumExpSub returns Σ e^(x[i]-m).
func sumExpSub(x []float32, m float32) float32 {
	var s float32
	k := vm.split(len(x))
	if k > 0 {
		s = vm.sumExpSub(x[:k], m)
	}
	for _, v := range x[k:] {
		s += expf(v - m)
	}
	return s
}

// siluMulRange computes g[i] = silu(g[i])·u[i] = g[i]/(1+e^-g[i])·u[i].
func siluMulRange(g, u []float32) {
	u = u[:len(g)]
	k := vm.split(len(g))
	if k > 0 {
		vm.siluMul(g[:k], u[:k])
	}
	for i := k; i < len(g); i++ {
		x := g[i]
		g[i] = x / (1 + expf(-x)) * u[i]
	}
}
