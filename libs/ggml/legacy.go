package ggml

import (
	"encoding/binary"
	"math"
)

// Legacy 32-element block types, ported from quantize_row_q{4_0,4_1,5_0,5_1,8_0}_ref and the
// matching dequantize_row_* of ggml-quants.c. Products that feed an addition are wrapped in
// float32() so Go never fuses them into FMA (which would change the rounding).

const qk = 32

func le16(b []byte, v uint16) { binary.LittleEndian.PutUint16(b, v) }

func fp16At(b []byte) float32 { return fp16Table[binary.LittleEndian.Uint16(b)] }

// absMax returns the element with the largest magnitude (the first one on ties) as
// `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` starting from +0.
func absMax(x *[qk]float32) float32 {
	var amax, max float32
	for _, v := range x {
		if av := abs32(v); amax < av {
			amax = av
			max = v
		}
	}
	return max
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// minMax scans with strict comparisons from FLT_MAX / -FLT_MAX.
func minMax(x *[qk]float32) (min, max float32) {
	min, max = math.MaxFloat32, -math.MaxFloat32
	for i := 0; i < qk; i += 4 { // unrolled: same order, fewer loop branches
		v0, v1, v2, v3 := x[i], x[i+1], x[i+2], x[i+3]
		if v0 < min {
			min = v0
		}
		if v0 > max {
			max = v0
		}
		if v1 < min {
			min = v1
		}
		if v1 > max {
			max = v1
		}
		if v2 < min {
			min = v2
		}
		if v2 > max {
			max = v2
		}
		if v3 < min {
			min = v3
		}
		if v3 > max {
			max = v3
		}
	}
	return min, max
}

func quantizeQ4_0Go(dst []byte, src []float32) {
	for len(src) >= qk && len(dst) >= 18 {
		x := (*[qk]float32)(src)
		y := (*[18]byte)(dst)
		d := absMax(x) / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		le16(y[0:], FP32ToFP16(d))
		for j := 0; j < qk/2; j++ {
			xi0 := uint8(cvtt(float32(x[j]*id) + 8.5))
			xi1 := uint8(cvtt(float32(x[j+qk/2]*id) + 8.5))
			y[2+j] = min8s(15, xi0) | min8s(15, xi1)<<4
		}
		src, dst = src[qk:], dst[18:]
	}
}

// min8s is MIN(m, (int8_t)v) stored back into a uint8_t: the comparison is signed.
func min8s(m int8, v uint8) uint8 {
	if int8(v) < m {
		return v
	}
	return uint8(m)
}

func quantizeQ4_1Go(dst []byte, src []float32) {
	for len(src) >= qk && len(dst) >= 20 {
		x := (*[qk]float32)(src)
		y := (*[20]byte)(dst)
		min, max := minMax(x)
		d := (max - min) / 15
		var id float32
		if d != 0 {
			id = 1 / d
		}
		le16(y[0:], FP32ToFP16(d))
		le16(y[2:], FP32ToFP16(min))
		for j := 0; j < qk/2; j++ {
			xi0 := uint8(cvtt(float32((x[j]-min)*id) + 0.5))
			xi1 := uint8(cvtt(float32((x[j+qk/2]-min)*id) + 0.5))
			y[4+j] = min8s(15, xi0) | min8s(15, xi1)<<4
		}
		src, dst = src[qk:], dst[20:]
	}
}

func quantizeQ5_0Go(dst []byte, src []float32) {
	for len(src) >= qk && len(dst) >= 22 {
		x := (*[qk]float32)(src)
		y := (*[22]byte)(dst)
		d := absMax(x) / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		le16(y[0:], FP32ToFP16(d))
		var qh uint32
		for j := 0; j < qk/2; j++ {
			xi0 := min8s(31, uint8(cvtt(float32(x[j]*id)+16.5)))
			xi1 := min8s(31, uint8(cvtt(float32(x[j+qk/2]*id)+16.5)))
			y[6+j] = xi0&0x0f | (xi1&0x0f)<<4
			qh |= uint32(xi0&0x10) >> 4 << j
			qh |= uint32(xi1&0x10) >> 4 << (j + qk/2)
		}
		binary.LittleEndian.PutUint32(y[2:], qh)
		src, dst = src[qk:], dst[22:]
	}
}

func quantizeQ5_1Go(dst []byte, src []float32) {
	for len(src) >= qk && len(dst) >= 24 {
		x := (*[qk]float32)(src)
		y := (*[24]byte)(dst)
		min, max := minMax(x)
		d := (max - min) / 31
		var id float32
		if d != 0 {
			id = 1 / d
		}
		le16(y[0:], FP32ToFP16(d))
		le16(y[2:], FP32ToFP16(min))
		var qh uint32
		for j := 0; j < qk/2; j++ {
			// (uint8_t)(float): truncate toward zero through a 32-bit integer, as x86-64 does.
			xi0 := uint8(cvtt(float32((x[j]-min)*id) + 0.5))
			xi1 := uint8(cvtt(float32((x[j+qk/2]-min)*id) + 0.5))
			y[8+j] = xi0&0x0f | (xi1&0x0f)<<4
			qh |= uint32(xi0&0x10) >> 4 << j
			qh |= uint32(xi1&0x10) >> 4 << (j + qk/2)
		}
		binary.LittleEndian.PutUint32(y[4:], qh)
		src, dst = src[qk:], dst[24:]
	}
}

func quantizeQ8_0Go(dst []byte, src []float32) {
	for len(src) >= qk && len(dst) >= 34 {
		x := (*[qk]float32)(src)
		y := (*[34]byte)(dst)
		var amax float32
		for _, v := range x {
			// MAX(a, b) is a > b ? a : b (matters only for NaN).
			if av := abs32(v); !(amax > av) {
				amax = av
			}
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		le16(y[0:], FP32ToFP16(d))
		for j, v := range x {
			y[2+j] = uint8(roundf(float32(v * id)))
		}
		src, dst = src[qk:], dst[34:]
	}
}

// roundf is C's roundf (half away from zero) followed by the x86-64 conversion to int32.
func roundf(v float32) int32 {
	if !(v > -2147483648 && v < 2147483648) { // NaN, ±Inf or out of range
		return math.MinInt32
	}
	// Round |v| in float64, where the +0.5 is exact, then restore the sign without a branch.
	b := math.Float32bits(v)
	t := int32(float64(math.Float32frombits(b&^(1<<31))) + 0.5)
	s := int32(b) >> 31
	return t ^ s - s
}

// cvtt converts like x86-64's cvttss2si, which C's float-to-int casts compile to: truncation
// toward zero, and 0x80000000 for NaN and values out of int32 range. Go leaves the latter
// implementation-defined (arm64 saturates), so they are handled here.
func cvtt(v float32) int32 {
	if v >= -2147483648 && v < 2147483648 {
		return int32(v)
	}
	return math.MinInt32
}

func dequantizeQ4_0(dst []float32, src []byte) {
	for len(src) >= 18 && len(dst) >= qk {
		x := (*[18]byte)(src)
		y := (*[qk]float32)(dst)
		d := fp16At(x[0:])
		for j := 0; j < qk/2; j++ {
			y[j] = float32(int32(x[2+j]&0x0f)-8) * d
			y[j+qk/2] = float32(int32(x[2+j]>>4)-8) * d
		}
		src, dst = src[18:], dst[qk:]
	}
}

func dequantizeQ4_1(dst []float32, src []byte) {
	for len(src) >= 20 && len(dst) >= qk {
		x := (*[20]byte)(src)
		y := (*[qk]float32)(dst)
		d, m := fp16At(x[0:]), fp16At(x[2:])
		for j := 0; j < qk/2; j++ {
			y[j] = float32(float32(x[4+j]&0x0f)*d) + m
			y[j+qk/2] = float32(float32(x[4+j]>>4)*d) + m
		}
		src, dst = src[20:], dst[qk:]
	}
}

func dequantizeQ5_0(dst []float32, src []byte) {
	for len(src) >= 22 && len(dst) >= qk {
		x := (*[22]byte)(src)
		y := (*[qk]float32)(dst)
		d := fp16At(x[0:])
		qh := binary.LittleEndian.Uint32(x[2:])
		for j := 0; j < qk/2; j++ {
			h0 := uint8(qh>>j<<4) & 0x10
			h1 := uint8(qh>>(j+12)) & 0x10
			y[j] = float32(int32(x[6+j]&0x0f|h0)-16) * d
			y[j+qk/2] = float32(int32(x[6+j]>>4|h1)-16) * d
		}
		src, dst = src[22:], dst[qk:]
	}
}

func dequantizeQ5_1(dst []float32, src []byte) {
	for len(src) >= 24 && len(dst) >= qk {
		x := (*[24]byte)(src)
		y := (*[qk]float32)(dst)
		d, m := fp16At(x[0:]), fp16At(x[2:])
		qh := binary.LittleEndian.Uint32(x[4:])
		for j := 0; j < qk/2; j++ {
			h0 := uint8(qh>>j<<4) & 0x10
			h1 := uint8(qh>>(j+12)) & 0x10
			y[j] = float32(float32(x[8+j]&0x0f|h0)*d) + m
			y[j+qk/2] = float32(float32(x[8+j]>>4|h1)*d) + m
		}
		src, dst = src[24:], dst[qk:]
	}
}

func dequantizeQ8_0(dst []float32, src []byte) {
	for len(src) >= 34 && len(dst) >= qk {
		x := (*[34]byte)(src)
		y := (*[qk]float32)(dst)
		d := fp16At(x[0:])
		for j := range y {
			y[j] = float32(int8(x[2+j])) * d
		}
		src, dst = src[34:], dst[qk:]
	}
}
