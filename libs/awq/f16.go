package awq

import "math"

// f16 rounds x to the nearest IEEE half-precision value (ties to even, subnormals and
// overflow to ±Inf included) and returns it as a float32. A float32 operation on half
// operands followed by f16 is exactly the half-precision operation, because float32 keeps
// more than twice the 11 significant bits (this is how PyTorch evaluates fp16 tensors).
func f16(x float32) float32 {
	if h, ok := halfNormal(x); ok {
		return h
	}
	return f16Other(x)
}

// halfNormal is f16(x) where that is a few integer operations, small enough to inline into the
// quantizer's loops over every weight: |x| in [2^-14, 2^15), where rounding to nearest (ties to
// even) cannot leave the normal half range. ok is false elsewhere.
func halfNormal(x float32) (h float32, ok bool) {
	b := math.Float32bits(x)
	return math.Float32frombits((b + 0x0fff + b>>13&1) &^ 0x1fff), b>>23&0xff-113 < 29
}

// f16Other is f16 outside [2^-14, 2^15).
func f16Other(x float32) float32 {
	b := math.Float32bits(x)
	exp := int(b>>23&0xff) - 127
	switch {
	case exp == 128: // Inf or NaN
		return x
	case exp >= -14: // normal half range (or overflow)
		b += 0x0fff + (b >> 13 & 1) // round the 13 dropped bits to nearest, ties to even
		b &^= 0x1fff
		if int(b>>23&0xff)-127 > 15 {
			return float32(math.Copysign(math.Inf(1), float64(x)))
		}
		return math.Float32frombits(b)
	default: // subnormal half: a multiple of 2^-24
		return float32(math.RoundToEven(float64(x)*(1<<24)) / (1 << 24))
	}
}
