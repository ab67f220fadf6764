package ggml

import (
	"encoding/binary"
	"math"
	"math/bits"
	"unsafe"
)

// K-quant super-block types (QK_K = 256 elements), ported from quantize_row_q{2..6}_K_ref and
// dequantize_row_q{2..6}_K of ggml-quants.c without an importance matrix. Everything is float32
// in the C evaluation order; float32() around every product that feeds an add keeps Go from
// emitting FMA (GOAMD64=v3, arm64), which would change results.

// groupMaxEps is GROUP_MAX_EPS: groups whose max |x| is below it count as all zero.
const groupMaxEps = float32(1e-15)

// Block sizes in bytes.
const (
	q2KSize = 84
	q3KSize = 110
	q4KSize = 144
	q5KSize = 176
	q6KSize = 210
)

// nearestInt is ggml's nearest_int: round half to even via the 1.5·2^23 trick (valid for |f| ≤ 4194303).
func nearestInt(f float32) int32 {
	v := float32(f) + 12582912
	return int32(math.Float32bits(v)&0x007fffff) - 0x00400000
}

// clampI is MAX(lo, MIN(hi, v)).
func clampI(v, lo, hi int32) int32 { return max(lo, min(hi, v)) }

// makeQXQuants16 is make_qx_quants(16, nmax, x, L, rmse_type=1, qw=NULL).
func makeQXQuants16(nmax int32, x *[16]float32, L *[16]int8) float32 {
	var max, amax float32
	for _, v := range x {
		if ax := abs32(v); ax > amax {
			amax = ax
			max = v
		}
	}
	if amax < groupMaxEps {
		*L = [16]int8{}
		return 0
	}
	// The weights (w = x*x) and w*x are the same values in every trial; compute them once.
	var w, wx [16]float32
	for i, v := range x {
		w[i] = float32(v * v)
		wx[i] = float32(w[i] * v)
	}
	fnmax := float32(nmax)
	iscale := float32(-nmax) / max
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampI(nearestInt(iscale*v), -nmax, nmax-1)
		L[i] = int8(l + nmax)
		fl := float32(l)
		sumlx += float32(wx[i] * fl)
		suml2 += float32(float32(w[i]*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := int32(-9); is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fnmax + float32(0.1*float32(is))) / max
		sumlx, suml2 = 0, 0
		for i, v := range x {
			fl := float32(clampI(nearestInt(iscale*v), -nmax, nmax-1))
			sumlx += float32(wx[i] * fl)
			suml2 += float32(float32(w[i]*fl) * fl)
		}
		if suml2 > 0 && sumlx*sumlx > best*suml2 {
			for i, v := range x {
				L[i] = int8(nmax + clampI(nearestInt(iscale*v), -nmax, nmax-1))
			}
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

// makeQ3Quants16 is make_q3_quants(16, nmax, x, L, do_rmse=true).
func makeQ3Quants16(nmax int32, x *[16]float32, L *[16]int8) float32 {
	var max, amax float32
	for _, v := range x {
		if ax := abs32(v); ax > amax {
			amax = ax
			max = v
		}
	}
	if amax < groupMaxEps {
		*L = [16]int8{}
		return 0
	}
	var w, wx [16]float32
	for i, v := range x {
		w[i] = float32(v * v)
		wx[i] = float32(w[i] * v)
	}
	iscale := float32(-nmax) / max
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampI(nearestInt(iscale*v), -nmax, nmax-1)
		L[i] = int8(l)
		fl := float32(l)
		sumlx += float32(wx[i] * fl)
		suml2 += float32(float32(w[i]*fl) * fl)
	}
	for itry := 0; itry < 5; itry++ {
		nChanged := 0
		for i, v := range x {
			fL := float32(L[i])
			slx := sumlx - float32(wx[i]*fL)
			if slx > 0 {
				sl2 := suml2 - float32(float32(w[i]*fL)*fL)
				newL := clampI(nearestInt(v*sl2/slx), -nmax, nmax-1)
				if newL != int32(L[i]) {
					fn := float32(newL)
					slx += float32(wx[i] * fn)
					sl2 += float32(float32(w[i]*fn) * fn)
					if sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2 {
						L[i] = int8(newL)
						sumlx = slx
						suml2 = sl2
						nChanged++
					}
				}
			}
		}
		if nChanged == 0 {
			break
		}
	}
	for i := range L {
		L[i] += int8(nmax)
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// makeQKX2Quants is make_qkx2_quants: an asymmetric (scale, min) fit of x (16 or 32 values)
// to L in [0, nmax] minimising the weighted error; it returns the scale and -min (≥ 0, possibly -0).
// x, weights and L must have the same length, at most 32.
func makeQKX2Quants(nmax int32, x, weights []float32, L []uint8, rmin, rdelta float32, nstep int32, useMad bool) (scale, theMin float32) {
	n := len(x)
	if n == 0 || n > 32 {
		panic("ggml: makeQKX2Quants needs 1..32 values")
	}
	weights, L = weights[:n], L[:n]
	min, max := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		v := x[i]
		if v < min {
			min = v
		}
		if v > max {
			max = v
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * v)
	}
	if min > 0 {
		min = 0
	}
	if max == min {
		clear(L)
		return 0, -min
	}
	// x[i]-min as the C code recomputes it in every trial; refreshed whenever min changes.
	var xm [32]float32
	for i, v := range x {
		xm[i] = v - min
	}
	fnmax := float32(nmax)
	iscale := fnmax / (max - min)
	scale = 1 / iscale
	var bestError float32
	for i, v := range x {
		l := uint8(clampI(nearestInt(iscale*xm[i]), 0, nmax))
		L[i] = l
		diff := float32(float32(scale*float32(l))+min) - v
		if useMad {
			diff = abs32(diff)
		} else {
			diff = diff * diff
		}
		bestError += float32(weights[i] * diff)
	}
	if nstep < 1 {
		return scale, -min
	}
	var laux [32]uint8
	var fl [32]float32
	for is := int32(0); is <= nstep; is++ {
		iscale = float32(rmin+float32(rdelta*float32(is))+fnmax) / (max - min)
		var sumL, sumL2, sumXL float32
		for i, w := range weights {
			l := uint8(clampI(nearestInt(iscale*xm[i&31]), 0, nmax))
			laux[i&31] = l
			f := float32(l)
			fl[i&31] = f
			wl := float32(w * f)
			sumL += wl
			sumL2 += float32(wl * f)
			sumXL += float32(wl * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curError float32
			if useMad {
				for i, w := range weights {
					diff := float32(float32(thisScale*fl[i&31])+thisMin) - x[i]
					curError += float32(w * abs32(diff))
				}
			} else {
				for i, w := range weights {
					diff := float32(float32(thisScale*fl[i&31])+thisMin) - x[i]
					curError += float32(w * float32(diff*diff))
				}
			}
			if curError < bestError {
				copy(L, laux[:n])
				bestError = curError
				scale = thisScale
				if math.Float32bits(thisMin) != math.Float32bits(min) {
					min = thisMin
					for i, v := range x {
						xm[i] = v - min
					}
				}
			}
		}
	}
	return scale, -min
}

// getScaleMinK4 unpacks the j-th 6-bit (scale, min) pair of a Q4_K/Q5_K scale field.
func getScaleMinK4(j int, q *[12]byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0x0f | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// packQ2 stores 256 2-bit values as Q2_K/Q3_K qs: byte 32h+l holds L[128h+l+32k] at bits 2k.
// Eight bytes at a time: the values are below 4, so the shifts stay inside each byte.
func packQ2(qs *[64]byte, L *[QK_K]uint8) {
	for h := 0; h < 2; h++ {
		for c := 0; c < 32; c += 8 {
			j := 128*h + c
			put64(qs[32*h+c:], u64(L[j:])|u64(L[j+32:])<<2|u64(L[j+64:])<<4|u64(L[j+96:])<<6)
		}
	}
}

// Bytes 0..7 as a little-endian word: eight values processed side by side (SWAR).
func u64(b []byte) uint64      { return binary.LittleEndian.Uint64(b) }
func put64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }

// Byte masks for SWAR.
const (
	bytes01 = 0x0101010101010101
	bytes03 = 0x0303030303030303
	bytes0f = 0x0f0f0f0f0f0f0f0f
)

func quantizeQ2KGo(dst []byte, src []float32) {
	var (
		L            [QK_K]uint8
		weights      [16]float32
		scales, mins [16]float32
	)
	for len(src) >= QK_K && len(dst) >= q2KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q2KSize]byte)(dst)
		for j := 0; j < 16; j++ {
			xs := x[16*j : 16*j+16]
			for l, v := range xs {
				weights[l] = abs32(v)
			}
			scales[j], mins[j] = makeQKX2Quants(3, xs, weights[:], L[16*j:16*j+16], -0.5, 0.1, 15, true)
		}
		dd, dm := q2KScales(y, &scales, &mins)
		requantGo(L[:], x[:], dd[:], dm[:], 16, 0, 3, 0)
		packQ2((*[64]byte)(y[16:]), &L)
		src, dst = src[QK_K:], dst[q2KSize:]
	}
}

// q2KScales writes the scale bytes, d and dmin of the Q2_K block y from the sub-block fits and
// returns the per-sub-block divisor dd and offset dm of the final requantization,
// L = MAX(0, MIN(3, nearest_int((x + dm)/dd))); sub-blocks with dd == 0 keep the fit's L.
func q2KScales(y *[q2KSize]byte, scales, mins *[16]float32) (dd, dm [16]float32) {
	// max_scale and max_min, tracked in C while fitting (same values: strict > from 0).
	var maxScale, maxM float32
	for j := range scales {
		if scales[j] > maxScale {
			maxScale = scales[j]
		}
		if mins[j] > maxM {
			maxM = mins[j]
		}
	}
	sb := (*[16]byte)(y[0:])
	var d, dmin uint16
	if maxScale > 0 {
		iscale := 15 / maxScale
		for j := range sb {
			sb[j] = uint8(nearestInt(iscale * scales[j]))
		}
		d = FP32ToFP16(maxScale / 15)
	} else {
		*sb = [16]byte{}
		d = FP32ToFP16(0)
	}
	if maxM > 0 {
		iscale := 15 / maxM
		for j := range sb {
			sb[j] |= uint8(nearestInt(iscale*mins[j]) << 4)
		}
		dmin = FP32ToFP16(maxM / 15)
	} else {
		dmin = FP32ToFP16(0)
	}
	le16(y[80:], d)
	le16(y[82:], dmin)
	fd, fmin := fp16Table[d], fp16Table[dmin]
	for j, b := range sb {
		dd[j] = fd * float32(b&0x0f)
		dm[j] = float32(fmin * float32(b>>4))
	}
	return dd, dm
}

// requantGo is the final requantization of the k-quants in sub-blocks of n values:
// L = MAX(lo, MIN(hi, nearest_int((x + dm)/dd))) + off, or with x/dd when dm is nil; sub-blocks
// whose dd is 0 are skipped (C: if (!d) continue) and keep the L of their fit.
func requantGo[T int8 | uint8](L []T, x []float32, dd, dm []float32, n int, lo, hi, off int32) {
	for j, d := range dd {
		if d == 0 {
			continue
		}
		ls, xs := L[n*j:n*j+n], x[n*j:n*j+n]
		if dm == nil {
			for i, v := range xs {
				ls[i] = T(clampI(nearestInt(v/d), lo, hi) + off)
			}
			continue
		}
		m := dm[j]
		for i, v := range xs {
			ls[i] = T(clampI(nearestInt((v+m)/d), lo, hi) + off)
		}
	}
}

// zeroMask returns the bit mask of the zero entries of dd: the sub-blocks requantization skips.
func zeroMask(dd []float32) (keep uint32) {
	for j, d := range dd {
		if d == 0 {
			keep |= 1 << j
		}
	}
	return keep
}

func quantizeQ3KGo(dst []byte, src []float32) {
	var (
		L      [QK_K]int8
		scales [16]float32
	)
	for len(src) >= QK_K && len(dst) >= q3KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q3KSize]byte)(dst)
		for j := 0; j < 16; j++ {
			scales[j] = makeQ3Quants16(4, (*[16]float32)(x[16*j:]), (*[16]int8)(L[16*j:]))
		}
		dd := q3KScales(y, &scales)
		requantGo(L[:], x[:], dd[:], nil, 16, -4, 3, 4)
		packQ3K(y, &L)
		src, dst = src[QK_K:], dst[q3KSize:]
	}
}

// q3KScales writes the packed 6-bit scales and d of the Q3_K block y from the sub-block fits
// and returns the divisors of the final requantization, L = MAX(-4, MIN(3, nearest_int(x/dd))) + 4;
// sub-blocks with dd == 0 keep the fit's L.
func q3KScales(y *[q3KSize]byte, scales *[16]float32) (dd [16]float32) {
	var maxScale, amax float32
	for j := range scales {
		if s := abs32(scales[j]); s > amax {
			amax = s
			maxScale = scales[j]
		}
	}
	sc := (*[12]byte)(y[96:])
	*sc = [12]byte{}
	var d uint16
	if maxScale != 0 {
		iscale := -32 / maxScale
		for j := 0; j < 16; j++ {
			l := int8(nearestInt(iscale * scales[j]))
			l = int8(clampI(int32(l), -32, 31) + 32)
			if j < 8 {
				sc[j] = uint8(l) & 0x0f
			} else {
				sc[j-8] |= (uint8(l) & 0x0f) << 4
			}
			l >>= 4
			sc[j%4+8] |= uint8(l) << (2 * (j / 4))
		}
		d = FP32ToFP16(1 / iscale)
	} else {
		d = FP32ToFP16(0)
	}
	le16(y[108:], d)
	fd := fp16Table[d]
	for j := 0; j < 16; j++ {
		var s int8
		if j < 8 {
			s = int8(sc[j] & 0x0f)
		} else {
			s = int8(sc[j-8] >> 4)
		}
		s = int8(uint8(s)|(sc[8+j%4]>>(2*(j/4))&3)<<4) - 32
		dd[j] = fd * float32(s)
	}
	return dd
}

// packQ3K stores L (0..7) as Q3_K hmask (bit 2 of element e in bit e/32 of hmask[e%32]) and
// qs (bits 0..1, packed as in Q2_K), eight elements at a time.
func packQ3K(y *[q3KSize]byte, Ls *[QK_K]int8) {
	L := (*[QK_K]uint8)(unsafe.Pointer(Ls))
	hmask := y[0:32]
	qs := y[32:96]
	for c := 0; c < 32; c += 8 {
		var h uint64
		for k := 0; k < 8; k++ {
			h |= u64(L[32*k+c:]) >> 2 & bytes01 << k
		}
		put64(hmask[c:], h)
		for hh := 0; hh < 2; hh++ {
			j := 128*hh + c
			put64(qs[32*hh+c:], u64(L[j:])&bytes03|u64(L[j+32:])&bytes03<<2|
				u64(L[j+64:])&bytes03<<4|u64(L[j+96:])&bytes03<<6)
		}
	}
}

// q45KWeights sets w to make_qkx2_quants' weights for Q4_K/Q5_K: sqrt(mean of x²) + |x|.
func q45KWeights(w, x *[32]float32) {
	var sumX2 float32
	for _, v := range x {
		sumX2 += float32(v * v)
	}
	avX := float32(math.Sqrt(float64(sumX2 / 32)))
	for l, v := range x {
		w[l] = avX + abs32(v)
	}
}

// quantizeQ45KGo holds what Q4_K and Q5_K share: the sub-block fits, the packed 6-bit
// scales/mins and the requantized L (0..nmax). It returns the fp16 d and dmin.
func quantizeQ45KGo(x *[QK_K]float32, sc *[12]byte, L *[QK_K]uint8, nmax int32, rmin float32, nstep int32) (d, dmin uint16) {
	var (
		weights      [32]float32
		scales, mins [8]float32
	)
	for j := 0; j < 8; j++ {
		xs := (*[32]float32)(x[32*j:])
		q45KWeights(&weights, xs)
		scales[j], mins[j] = makeQKX2Quants(nmax, xs[:], weights[:], L[32*j:32*j+32], rmin, 0.1, nstep, false)
	}
	d, dmin, dd, dm := q45KScales(sc, &scales, &mins)
	requantGo(L[:], x[:], dd[:], dm[:], 32, 0, nmax, 0)
	return d, dmin
}

// q45KScales packs the 6-bit scales and mins of a Q4_K/Q5_K block into sc, returns the fp16 d
// and dmin, and the divisor dd and offset dm of the final requantization per sub-block,
// L = MAX(0, MIN(nmax, nearest_int((x + dm)/dd))); sub-blocks with dd == 0 keep the fit's L.
func q45KScales(sc *[12]byte, scales, mins *[8]float32) (d, dmin uint16, dd, dm [8]float32) {
	var maxScale, maxM float32
	for j := range scales {
		if scales[j] > maxScale {
			maxScale = scales[j]
		}
		if mins[j] > maxM {
			maxM = mins[j]
		}
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxM > 0 {
		invMin = 63 / maxM
	}
	for j := 0; j < 8; j++ {
		ls := uint8(nearestInt(invScale * scales[j]))
		lm := uint8(nearestInt(invMin * mins[j]))
		ls = min(63, ls)
		lm = min(63, lm)
		if j < 4 {
			sc[j] = ls
			sc[j+4] = lm
		} else {
			sc[j+4] = ls&0x0f | (lm&0x0f)<<4
			sc[j-4] |= (ls >> 4) << 6
			sc[j] |= (lm >> 4) << 6
		}
	}
	d = FP32ToFP16(maxScale / 63)
	dmin = FP32ToFP16(maxM / 63)
	fd, fmin := fp16Table[d], fp16Table[dmin]
	for j := 0; j < 8; j++ {
		s, m := getScaleMinK4(j, sc)
		dd[j] = fd * float32(s)
		dm[j] = float32(fmin * float32(m))
	}
	return d, dmin, dd, dm
}

func quantizeQ4KGo(dst []byte, src []float32) {
	var L [QK_K]uint8
	for len(src) >= QK_K && len(dst) >= q4KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q4KSize]byte)(dst)
		d, dmin := quantizeQ45KGo(x, (*[12]byte)(y[4:]), &L, 15, -1, 20)
		le16(y[0:], d)
		le16(y[2:], dmin)
		packQ4K((*[128]byte)(y[16:]), &L)
		src, dst = src[QK_K:], dst[q4KSize:]
	}
}

// packQ4K stores 256 4-bit values as Q4_K qs: byte 32c+l holds L[64c+l] | L[64c+l+32]<<4.
func packQ4K(qs *[128]byte, L *[QK_K]uint8) {
	for c := 0; c < 4; c++ {
		for l := 0; l < 32; l += 8 {
			put64(qs[32*c+l:], u64(L[64*c+l:])|u64(L[64*c+l+32:])<<4)
		}
	}
}

func quantizeQ5KGo(dst []byte, src []float32) {
	var L [QK_K]uint8
	for len(src) >= QK_K && len(dst) >= q5KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q5KSize]byte)(dst)
		d, dmin := quantizeQ45KGo(x, (*[12]byte)(y[4:]), &L, 31, -0.5, 15)
		le16(y[0:], d)
		le16(y[2:], dmin)
		packQ5K(y, &L)
		src, dst = src[QK_K:], dst[q5KSize:]
	}
}

// packQ5K stores 256 5-bit values as Q5_K qh (bit 4 of L[64c+j] at bit 2c of qh[j], of
// L[64c+32+j] at bit 2c+1) and qs (low nibbles as Q4_K), eight elements at a time.
func packQ5K(y *[q5KSize]byte, L *[QK_K]uint8) {
	qh := y[16:48]
	qs := y[48:176]
	for j := 0; j < 32; j += 8 {
		var h uint64
		for c := 0; c < 4; c++ {
			l1, l2 := u64(L[64*c+j:]), u64(L[64*c+32+j:])
			h |= l1>>4&bytes01<<(2*c) | l2>>4&bytes01<<(2*c+1)
			put64(qs[32*c+j:], l1&bytes0f|(l2&bytes0f)<<4)
		}
		put64(qh[j:], h)
	}
}

func quantizeQ6KGo(dst []byte, src []float32) {
	var (
		L      [QK_K]int8
		scales [16]float32
	)
	for len(src) >= QK_K && len(dst) >= q6KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q6KSize]byte)(dst)
		for ib := 0; ib < 16; ib++ {
			scales[ib] = makeQXQuants16(32, (*[16]float32)(x[16*ib:]), (*[16]int8)(L[16*ib:]))
		}
		if dd, ok := q6KScales(y, &scales); ok {
			requantGo(L[:], x[:], dd[:], nil, 16, -32, 31, 32)
			packQ6K(y, &L)
		}
		src, dst = src[QK_K:], dst[q6KSize:]
	}
}

// q6KScales writes the int8 scales and d of the Q6_K block y from the sub-block fits and
// returns the divisors of the final requantization, L = MAX(-32, MIN(31, nearest_int(x/dd))) + 32;
// sub-blocks with dd == 0 keep the fit's L. If every fit is (nearly) zero, the block is all
// zero bytes and ok is false: nothing else is to be written.
func q6KScales(y *[q6KSize]byte, scales *[16]float32) (dd [16]float32, ok bool) {
	var maxScale, maxAbsScale float32
	for _, s := range scales {
		if as := abs32(s); as > maxAbsScale {
			maxAbsScale = as
			maxScale = s
		}
	}
	if maxAbsScale < groupMaxEps {
		*y = [q6KSize]byte{}
		return dd, false
	}
	iscale := -128 / maxScale
	d := FP32ToFP16(1 / iscale)
	le16(y[208:], d)
	sc := (*[16]byte)(y[192:])
	for ib := range sc {
		sc[ib] = uint8(min(127, nearestInt(iscale*scales[ib])))
	}
	fd := fp16Table[d]
	for j := range dd {
		dd[j] = fd * float32(int8(sc[j]))
	}
	return dd, true
}

// packQ6K stores L (0..63) as Q6_K ql (low nibbles) and qh (high 2 bits), eight elements at
// a time.
func packQ6K(y *[q6KSize]byte, Ls *[QK_K]int8) {
	L := (*[QK_K]uint8)(unsafe.Pointer(Ls))
	ql := y[0:128]
	qh := y[128:192]
	for h := 0; h < 2; h++ {
		for l := 0; l < 32; l += 8 {
			j := 128*h + l
			q1, q2, q3, q4 := u64(L[j:]), u64(L[j+32:]), u64(L[j+64:]), u64(L[j+96:])
			put64(ql[64*h+l:], q1&bytes0f|(q3&bytes0f)<<4)
			put64(ql[64*h+l+32:], q2&bytes0f|(q4&bytes0f)<<4)
			put64(qh[32*h+l:], q1>>4&bytes03|(q2>>4&bytes03)<<2|(q3>>4&bytes03)<<4|(q4>>4&bytes03)<<6)
		}
	}
}

func dequantizeQ2K(dst []float32, src []byte) {
	for len(src) >= q2KSize && len(dst) >= QK_K {
		x := (*[q2KSize]byte)(src)
		y := (*[QK_K]float32)(dst)
		d, min := fp16At(x[80:]), fp16At(x[82:])
		for e := range y {
			h, g, l := e/128, (e%128)/32, e%32
			sc := x[e/16]
			q := x[16+32*h+l] >> (2 * g) & 3
			dl := float32(d * float32(sc&0x0f))
			ml := float32(min * float32(sc>>4))
			y[e] = float32(dl*float32(q)) - ml
		}
		src, dst = src[q2KSize:], dst[QK_K:]
	}
}

func dequantizeQ3K(dst []float32, src []byte) {
	for len(src) >= q3KSize && len(dst) >= QK_K {
		x := (*[q3KSize]byte)(src)
		y := (*[QK_K]float32)(dst)
		dAll := fp16At(x[108:])
		sc := (*[12]byte)(x[96:])
		var dl [16]float32
		for j := range dl {
			var s uint8
			if j < 8 {
				s = sc[j] & 0x0f
			} else {
				s = sc[j-8] >> 4
			}
			s |= (sc[8+j%4] >> (2 * (j / 4)) & 3) << 4
			dl[j] = dAll * float32(int32(s)-32)
		}
		for e := range y {
			h, g, l := e/128, (e%128)/32, e%32
			q := int32(x[32+32*h+l] >> (2 * g) & 3)
			if x[e%32]&(1<<(e/32)) == 0 {
				q -= 4
			}
			y[e] = dl[e/16] * float32(q)
		}
		src, dst = src[q3KSize:], dst[QK_K:]
	}
}

func dequantizeQ4K(dst []float32, src []byte) {
	for len(src) >= q4KSize && len(dst) >= QK_K {
		x := (*[q4KSize]byte)(src)
		y := (*[QK_K]float32)(dst)
		d, min := fp16At(x[0:]), fp16At(x[2:])
		sc := (*[12]byte)(x[4:])
		for c := 0; c < 4; c++ { // sub-blocks 2c (low nibbles) and 2c+1 (high nibbles)
			s1, m1 := getScaleMinK4(2*c, sc)
			s2, m2 := getScaleMinK4(2*c+1, sc)
			d1, n1 := float32(d*float32(s1)), float32(min*float32(m1))
			d2, n2 := float32(d*float32(s2)), float32(min*float32(m2))
			q := (*[32]byte)(x[16+32*c:])
			y1, y2 := (*[32]float32)(y[64*c:]), (*[32]float32)(y[64*c+32:])
			for l, b := range q {
				y1[l] = float32(d1*float32(b&0x0f)) - n1
				y2[l] = float32(d2*float32(b>>4)) - n2
			}
		}
		src, dst = src[q4KSize:], dst[QK_K:]
	}
}

func dequantizeQ5K(dst []float32, src []byte) {
	for len(src) >= q5KSize && len(dst) >= QK_K {
		x := (*[q5KSize]byte)(src)
		y := (*[QK_K]float32)(dst)
		d, min := fp16At(x[0:]), fp16At(x[2:])
		sc := (*[12]byte)(x[4:])
		for j := 0; j < 8; j++ {
			s, m := getScaleMinK4(j, sc)
			dj, mj := float32(d*float32(s)), float32(min*float32(m))
			c, shift := j/2, 4*(j%2)
			for l := 0; l < 32; l++ {
				q := x[48+32*c+l] >> shift & 0x0f
				if x[16+l]&(1<<j) != 0 {
					q += 16
				}
				y[32*j+l] = float32(dj*float32(q)) - mj
			}
		}
		src, dst = src[q5KSize:], dst[QK_K:]
	}
}

func dequantizeQ6K(dst []float32, src []byte) {
	for len(src) >= q6KSize && len(dst) >= QK_K {
		x := (*[q6KSize]byte)(src)
		y := (*[QK_K]float32)(dst)
		d := fp16At(x[208:])
		for h := 0; h < 2; h++ { // as dequantize_row_q6_K: d * scale * (q - 32)
			ql, qh, y := x[64*h:64*h+64], x[128+32*h:128+32*h+32], y[128*h:128*h+128]
			var dl [8]float32
			for k := range dl {
				dl[k] = d * float32(int8(x[192+8*h+k]))
			}
			for l := 0; l < 32; l++ {
				is := l / 16
				hb := qh[l]
				q1 := int32(ql[l]&0x0f|(hb&3)<<4) - 32
				q2 := int32(ql[l+32]&0x0f|(hb>>2&3)<<4) - 32
				q3 := int32(ql[l]>>4|(hb>>4&3)<<4) - 32
				q4 := int32(ql[l+32]>>4|(hb>>6&3)<<4) - 32
				y[l] = dl[is] * float32(q1)
				y[l+32] = dl[is+2] * float32(q2)
				y[l+64] = dl[is+4] * float32(q3)
				y[l+96] = dl[is+6] * float32(q4)
			}
		}
		src, dst = src[q6KSize:], dst[QK_K:]
	}
}

func trailingZeros(x uint32) int { return bits.TrailingZeros32(x) }
