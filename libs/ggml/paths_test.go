package ggml

import (
	"bytes"
	"fmt"
	"math"
	"testing"
)

// nastyInput makes n values (a multiple of 256) that exercise the corners of the quantizers:
// every 16-element group draws one of several patterns (Gaussian at random scales, rounding
// ties, signed zeros, constants, single outliers, subnormals, huge values, wide dynamic range,
// small integers), and with withNonFinite a few groups get a NaN or an Inf.
func nastyInput(seed uint64, n int, withNonFinite bool) []float32 {
	r := &rng{s: seed}
	x := make([]float32, n)
	for g := 0; g < n; g += 16 {
		xs := x[g : g+16]
		s := math.Ldexp(1, r.intn(-12, 6))
		switch r.intn(0, 12) {
		case 0, 1, 2:
			sigma := math.Abs(r.logUniform(-16, 4))
			for i := range xs {
				xs[i] = float32(r.normal() * sigma)
			}
		case 3: // ties at multiples of s/2
			for i := range xs {
				xs[i] = float32(s * (float64(r.intn(-64, 63)) + 0.5))
			}
		case 4: // signed zeros, some groups all zero
			k := r.intn(0, 3)
			for i := range xs {
				switch {
				case k == 0:
					xs[i] = negZero
				case k == 1:
					xs[i] = 0
				case r.next()&1 == 0:
					xs[i] = float32(r.sign()) * 0
				default:
					xs[i] = float32(r.normal() * s)
				}
			}
		case 5: // constant
			c := float32(r.logUniform(-20, 20))
			for i := range xs {
				xs[i] = c
			}
		case 6: // one outlier in noise or zeros
			noise := 0.0
			if r.next()&1 == 0 {
				noise = s * 1e-3
			}
			for i := range xs {
				xs[i] = float32(r.normal() * noise)
			}
			xs[r.intn(0, 15)] = float32(r.logUniform(-10, 10))
			if r.next()&1 == 0 {
				xs[r.intn(0, 15)] = -xs[r.intn(0, 15)]
			}
		case 7: // subnormals and values around GROUP_MAX_EPS
			for i := range xs {
				xs[i] = float32(r.logUniform(-149, -40))
			}
		case 8: // huge
			for i := range xs {
				xs[i] = float32(r.logUniform(20, 127))
			}
		case 9: // everything at once
			for i := range xs {
				xs[i] = float32(r.logUniform(-149, 127))
			}
		case 10: // small integers times a power of two
			for i := range xs {
				xs[i] = float32(s * float64(r.intn(-40, 40)))
			}
		case 11: // all positive or all negative, offset (no product feeds an add: no FMA)
			off := 8.0
			if r.next()&1 == 0 {
				off = -8
			}
			for i := range xs {
				xs[i] = float32(s * (off + r.normal()))
			}
		default: // duplicated magnitudes with both signs
			a := r.logUniform(-8, 8)
			for i := range xs {
				xs[i] = float32(r.normal() * a / 4)
			}
			xs[r.intn(0, 7)] = float32(a)
			xs[r.intn(8, 15)] = float32(-a)
		}
		if withNonFinite && r.next()%16 == 0 {
			v := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)),
				math.Float32frombits(0x7fc12345), math.Float32frombits(0xff800001)}[r.intn(0, 4)]
			xs[r.intn(0, 15)] = v
		}
	}
	return x
}

// TestAcceleratedMatchesScalar compares the dispatching quantizers (SIMD where the platform has
// them) with the scalar Go ones, block by block, on the golden families and on random inputs
// built to hit rounding ties, signed zeros, overflow, underflow, NaN and Inf.
func TestAcceleratedMatchesScalar(t *testing.T) {
	inputs := map[string][]float32{}
	for _, f := range goldenFamilies() {
		if !f.noRaw {
			inputs[f.name] = f.x
		}
	}
	n := 1 << 16
	if testing.Short() {
		n = 1 << 13
	}
	for i := uint64(0); i < 4; i++ {
		inputs[fmt.Sprintf("nasty%d", i)] = nastyInput(1000+i, n, false)
		inputs[fmt.Sprintf("nonfinite%d", i)] = nastyInput(2000+i, n, true)
	}
	for _, v := range kernelVariants {
		restore := v.use()
		for _, c := range scalarQuantizers {
			for name, x := range inputs {
				t.Run(v.name+"/"+c.typ.String()+"/"+name, func(t *testing.T) {
					ts, bs := c.typ.TypeSize(), c.typ.BlockSize()
					got := make([]byte, c.typ.RowSize(int64(len(x))))
					want := make([]byte, len(got))
					c.fast(got, x)
					c.scalar(want, x)
					for b := 0; b < len(got)/ts; b++ {
						if g, w := got[b*ts:(b+1)*ts], want[b*ts:(b+1)*ts]; !bytes.Equal(g, w) {
							t.Fatalf("block %d differs:\n got %x\nwant %x\ninput %v", b, g, w, x[b*bs:(b+1)*bs])
						}
					}
				})
			}
		}
		restore()
	}
}

// kernelVariants lists the kernel sets a platform can run (each use selects one and returns a
// function restoring the default); the platform's test files add theirs.
var kernelVariants = []struct {
	name string
	use  func() (restore func())
}{{"default", func() func() { return func() {} }}}

// scalarQuantizers pairs each dispatching quantizer with its scalar Go implementation.
var scalarQuantizers = []struct {
	typ          Type
	fast, scalar func([]byte, []float32)
}{
	{Q4_0, quantizeQ4_0, quantizeQ4_0Go},
	{Q4_1, quantizeQ4_1, quantizeQ4_1Go},
	{Q5_0, quantizeQ5_0, quantizeQ5_0Go},
	{Q5_1, quantizeQ5_1, quantizeQ5_1Go},
	{Q8_0, quantizeQ8_0, quantizeQ8_0Go},
	{Q2_K, quantizeQ2K, quantizeQ2KGo},
	{Q3_K, quantizeQ3K, quantizeQ3KGo},
	{Q4_K, quantizeQ4K, quantizeQ4KGo},
	{Q5_K, quantizeQ5K, quantizeQ5KGo},
	{Q6_K, quantizeQ6K, quantizeQ6KGo},
}
