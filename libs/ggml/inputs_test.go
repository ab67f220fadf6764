package ggml

import (
	"encoding/binary"
	"math"
	"os"
	"testing"
)

// Deterministic test inputs shared by the golden tests and the reference generator (see
// testdata/README.md). Only integer arithmetic, exact float64 operations (products by powers
// of two, Ldexp) and float64→float32 rounding are used, so the inputs are the same on every
// architecture; their SHA-256s are also recorded in testdata/golden.json.

type rng struct{ s uint64 }

// next is splitmix64.
func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// uniform returns a float64 in [0, 1).
func (r *rng) uniform() float64 { return float64(float64(r.next()>>11) * 0x1p-53) }

// intn returns an int in [lo, hi].
func (r *rng) intn(lo, hi int) int { return lo + int(r.next()%uint64(hi-lo+1)) }

// normal returns an approximately standard normal value (Irwin–Hall with 4 uniforms; the
// sum of the four is exact because each is a multiple of 2^-53 below 1).
func (r *rng) normal() float64 {
	s := r.uniform() + r.uniform() + r.uniform() + r.uniform()
	return (s - 2) * 1.7320508075688772
}

func (r *rng) sign() float64 {
	if r.next()&1 == 0 {
		return 1
	}
	return -1
}

// logUniform returns ±(1+u)·2^e with e uniform in [e0, e1].
func (r *rng) logUniform(e0, e1 int) float64 {
	return r.sign() * math.Ldexp(1+float64(r.uniform()), r.intn(e0, e1))
}

type family struct {
	name string
	x    []float32
	// noRaw: only hashes are recorded for this family (large inputs).
	noRaw bool
}

var negZero = float32(math.Copysign(0, -1))

func goldenFamilies() []family {
	const sb = QK_K
	var fams []family
	add := func(name string, n int, noRaw bool, gen func(r *rng, x []float32)) {
		r := &rng{s: uint64(len(fams)+1) * 0x1234567}
		x := make([]float32, n)
		gen(r, x)
		fams = append(fams, family{name, x, noRaw})
	}
	weights := func(r *rng, x []float32, sigma float64) {
		for i := range x {
			v := r.normal() * sigma
			if r.next()%256 == 0 {
				v *= 5 + float64(20*r.uniform())
			}
			x[i] = float32(v)
		}
	}
	add("normal_w", 64*sb, false, func(r *rng, x []float32) { weights(r, x, 0.02) })
	add("normal_1", 32*sb, false, func(r *rng, x []float32) {
		for i := range x {
			x[i] = float32(r.normal())
		}
	})
	add("mean_shift", 16*sb, false, func(r *rng, x []float32) {
		for g := 0; g < len(x); g += 32 {
			off := float64(4*r.uniform()) - 2
			for i := g; i < g+32; i++ {
				x[i] = float32(float64(r.normal()*0.5) + off)
			}
		}
	})
	add("zeros", 2*sb, false, func(r *rng, x []float32) {})
	add("negzeros", 4*sb, false, func(r *rng, x []float32) {
		for i := range x {
			if i < 2*sb || r.next()&1 == 0 {
				x[i] = negZero
			}
		}
	})
	add("zero_sub", 16*sb, false, func(r *rng, x []float32) {
		weights(r, x, 0.05)
		for g := 0; g < len(x); g += 16 {
			switch r.intn(0, 5) {
			case 0:
				clear(x[g : g+16])
			case 1:
				for i := g; i < g+16; i++ {
					x[i] = negZero
				}
			case 2:
				for i := g; i < g+16; i++ {
					x[i] = float32(r.sign()) * 0
				}
			}
		}
	})
	add("outlier", 16*sb, false, func(r *rng, x []float32) {
		for b := 0; b < len(x); b += sb {
			if b/sb%2 == 1 {
				for i := b; i < b+sb; i++ {
					x[i] = float32(r.normal() * 1e-4)
				}
			}
			a := r.logUniform(-10, 10)
			x[b+r.intn(0, sb-1)] = float32(a)
			if b/sb%4 == 3 { // the same magnitude with both signs: the first one wins
				x[b+r.intn(0, sb-1)] = float32(-a)
			}
			for g := b; g < b+sb; g += 32 { // and one outlier per legacy block
				x[g+r.intn(0, 31)] = float32(r.logUniform(-6, 6))
			}
		}
	})
	add("constant", 16*sb, false, func(r *rng, x []float32) {
		consts := []float64{1, -1, 0.1, -0.1, 1e-3, -3.5, 7, 0.5, 1e-5, 65504, -1e-7}
		for g := 0; g < len(x); g += 32 {
			c := consts[r.intn(0, len(consts)-1)]
			if g/sb%4 == 0 { // whole super-block constant
				c = consts[g/sb/4%len(consts)]
			}
			for i := g; i < g+32; i++ {
				x[i] = float32(c)
			}
		}
	})
	add("ties", 32*sb, false, func(r *rng, x []float32) {
		for g := 0; g < len(x); g += 32 {
			s := math.Ldexp(1, r.intn(-4, 4))
			kind := r.intn(0, 3)
			for i := g; i < g+32; i++ {
				switch kind {
				case 0:
					x[i] = float32(s * (float64(r.intn(-8, 7)) + 0.5))
				case 1:
					x[i] = float32(s * (float64(r.intn(-127, 126)) + 0.5))
				case 2:
					x[i] = float32(s * float64(r.intn(-16, 16)))
				default:
					x[i] = float32(s * float64(r.intn(-32, 32)) / 4)
				}
			}
			switch kind { // pin the block maximum so the scales are exact
			case 0:
				x[g+r.intn(0, 31)] = float32(-8 * s)
			case 1:
				x[g+r.intn(0, 31)] = float32(127 * s)
			case 2:
				x[g+r.intn(0, 31)] = float32(-16 * s)
			}
		}
	})
	add("tiny", 16*sb, false, func(r *rng, x []float32) {
		for b := 0; b < len(x); b += sb {
			for i := b; i < b+sb; i++ {
				switch b / sb % 4 {
				case 0: // around GROUP_MAX_EPS
					x[i] = float32(r.logUniform(-56, -46))
				case 1: // fp16 scales underflow
					x[i] = float32(r.logUniform(-30, -24))
				case 2: // float32 subnormals
					x[i] = float32(r.logUniform(-149, -127))
				default:
					x[i] = float32(r.normal() * 1e-7)
				}
			}
		}
	})
	add("huge", 8*sb, false, func(r *rng, x []float32) {
		for i := range x {
			x[i] = float32(r.logUniform(10, 30))
		}
	})
	add("extreme", 4*sb, false, func(r *rng, x []float32) {
		for i := range x {
			x[i] = float32(r.logUniform(60, 127))
		}
	})
	add("logrange", 32*sb, false, func(r *rng, x []float32) {
		for i := range x {
			x[i] = float32(r.logUniform(-20, 7))
		}
	})
	add("mixed_scale", 16*sb, false, func(r *rng, x []float32) {
		for g := 0; g < len(x); g += 16 {
			sigma := math.Abs(r.logUniform(-14, 4))
			for i := g; i < g+16; i++ {
				x[i] = float32(r.normal() * sigma)
			}
		}
	})
	add("big", 1024*sb, true, func(r *rng, x []float32) { weights(r, x, 0.02) })
	return fams
}

// TestWriteGoldenInputs writes the inputs for the reference generator when
// GGML_GOLDEN_INPUTS names an output file (see testdata/README.md).
func TestWriteGoldenInputs(t *testing.T) {
	path := os.Getenv("GGML_GOLDEN_INPUTS")
	if path == "" {
		t.Skip("GGML_GOLDEN_INPUTS not set")
	}
	var out []byte
	for _, f := range goldenFamilies() {
		var name [32]byte
		copy(name[:], f.name)
		out = append(out, name[:]...)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(f.x)))
		for _, v := range f.x {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
