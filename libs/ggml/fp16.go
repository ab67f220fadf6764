package ggml

import "math"

// FP32ToFP16 converts f to IEEE binary16 bits exactly as ggml's GGML_FP32_TO_FP16
// (ggml_compute_fp32_to_fp16): round to nearest even, subnormals kept, overflow to ±Inf,
// signed zero kept, and every NaN mapped to sign|0x7E00 (the payload is dropped).
func FP32ToFP16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a > 0x7f800000: // NaN
		return sign | 0x7e00
	case a >= 0x477ff000: // ≥ 65520 rounds to Inf (65520 is the tie between 65504 and 2^16)
		return sign | 0x7c00
	case a >= 0x38800000: // normal binary16 result (|f| ≥ 2^-14)
		a -= (127 - 15) << 23
		return sign | uint16((a+0xfff+(a>>13)&1)>>13)
	}
	// Subnormal or zero result: q = |f| / 2^-24 rounded to nearest even.
	e := a >> 23
	if e < 102 { // |f| < 2^-25: rounds to zero
		return sign
	}
	m := a&0x7fffff | 0x800000
	s := 126 - e // 14..24
	q := m >> s
	rem := m & (1<<s - 1)
	half := uint32(1) << (s - 1)
	if rem > half || rem == half && q&1 == 1 {
		q++
	}
	return sign | uint16(q)
}

// fp16Table holds the float32 value of every binary16 bit pattern.
var fp16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = math.Float32frombits(fp16ToFP32Bits(uint16(h)))
	}
	return &t
}()

// fp16ToFP32Bits widens binary16 to binary32 exactly. NaNs keep their payload and come back
// quiet, as ggml's multiply-based conversion does on x86-64 and arm64.
func fp16ToFP32Bits(h uint16) uint32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		if man != 0 {
			return sign | 0x7fc00000 | man<<13
		}
		return sign | 0x7f800000
	case exp != 0:
		return sign | (exp+127-15)<<23 | man<<13
	case man == 0:
		return sign
	}
	// Subnormal: normalize the mantissa.
	e := uint32(127 - 15 + 1)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return sign | e<<23 | (man&0x3ff)<<13
}

// FP16ToFP32 converts IEEE binary16 bits to float32 (exact).
func FP16ToFP32(h uint16) float32 { return fp16Table[h] }

// FP32ToBF16 converts f to bfloat16 bits as ggml_compute_fp32_to_bf16: round to nearest even
// without flushing subnormals; a NaN keeps its upper bits and is forced quiet (|0x40).
func FP32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// BF16ToFP32 converts bfloat16 bits to float32 (exact).
func BF16ToFP32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// FP32ToFP16Row converts src to binary16 into dst; dst must be at least as long as src.
func FP32ToFP16Row(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = FP32ToFP16(v)
	}
}

// FP16ToFP32Row converts binary16 values in src to float32 into dst; dst must be at least as long as src.
func FP16ToFP32Row(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = fp16Table[h]
	}
}

// FP32ToBF16Row converts src to bfloat16 into dst; dst must be at least as long as src.
func FP32ToBF16Row(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = FP32ToBF16(v)
	}
}

// BF16ToFP32Row converts bfloat16 values in src to float32 into dst; dst must be at least as long as src.
func BF16ToFP32Row(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
}
