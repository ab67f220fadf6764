//go:build !purego

package ggml

import (
	"math"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useAVX2 selects the 8-lane AVX2 kernels; without AVX2 the SSE2 kernels do four lanes at a time.
var useAVX2 = cpu.X86.HasAVX2

// qkx2Lanes is the memory the qkx2 kernels (kquants_amd64.s) work on: eight sub-blocks of up
// to 32 values side by side, x[i][k] being value i of sub-block k. Field offsets are fixed in
// the assembly (TestLaneLayout).
type qkx2Lanes struct {
	x, w, fl [32][8]float32 // in: values and weights; fl is scratch
	nums     [32]float32    // in: rmin + rdelta*is + nmax for is = 0..nstep
	scale    [8]float32     // out: make_qkx2_quants' return value
	theMin   [8]float32     // out: *the_min
	iscaleL  [8]float32     // out: L = MAX(0, MIN(nmax, nearest_int(iscaleL*(x - minL))))
	minL     [8]float32
	degen    [8]uint32 // out: all ones where max == min (then L = 0)
	best     [8]float32
	min, max [8]float32
	sumW     [8]float32
	sumX     [8]float32
	min0     [8]float32
}

//go:noescape
func qkx2Lanes4(s *qkx2Lanes, lane, n, nstep int, nmax int32, mad bool)

//go:noescape
func qkx2Lanes8(s *qkx2Lanes, n, nstep int, nmax int32, mad bool)

// fit runs make_qkx2_quants on the eight sub-blocks in s.
func (s *qkx2Lanes) fit(n, nstep int, nmax int32, mad bool) {
	if useAVX2 {
		qkx2Lanes8(s, n, nstep, nmax, mad)
		return
	}
	qkx2Lanes4(s, 0, n, nstep, nmax, mad)
	qkx2Lanes4(s, 4, n, nstep, nmax, mad)
}

// setNums fills s.nums for make_qkx2_quants' trials: (rmin + rdelta*is) + nmax in float32.
func (s *qkx2Lanes) setNums(nmax int32, rmin, rdelta float32, nstep int) {
	for is := 0; is <= nstep; is++ {
		s.nums[is] = float32(rmin+float32(rdelta*float32(is))) + float32(nmax)
	}
}

// laneFit is what a lane kernel leaves for one sub-block: enough to rebuild its L.
type laneFit struct {
	iscale, min float32
	degen       bool
}

// qkx2L rebuilds a sub-block's L from make_qkx2_quants' final trial.
func (f laneFit) qkx2L(L []uint8, x []float32, nmax int32) {
	L = L[:len(x)]
	if f.degen {
		clear(L)
		return
	}
	for i, v := range x {
		L[i] = uint8(clampI(nearestInt(f.iscale*(v-f.min)), 0, nmax))
	}
}

// collect copies the kernel's results for the eight lanes into sub-blocks j0..j0+7.
func (s *qkx2Lanes) collect(j0 int, scales, mins []float32, fits []laneFit) {
	for k := 0; k < 8; k++ {
		if s.degen[k] != 0 {
			scales[j0+k], mins[j0+k] = 0, -s.min0[k]
			fits[j0+k] = laneFit{degen: true}
			continue
		}
		scales[j0+k], mins[j0+k] = s.scale[k], s.theMin[k]
		fits[j0+k] = laneFit{iscale: s.iscaleL[k], min: s.minL[k]}
	}
}

//go:noescape
func requantK(L *byte, x *float32, dd, dm *float32, nsub, sublen int, lo, hi, off float32)

// negZeros stands for "no dm" in requantK: x + -0 is x.
var negZeros = func() (z [16]float32) {
	for i := range z {
		z[i] = math.Float32frombits(0x80000000)
	}
	return z
}()

func quantizeQ2K(dst []byte, src []float32) {
	var (
		s            qkx2Lanes
		L            [QK_K]uint8
		scales, mins [16]float32
		fits         [16]laneFit
	)
	s.setNums(3, -0.5, 0.1, 15)
	for len(src) >= QK_K && len(dst) >= q2KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q2KSize]byte)(dst)
		for g := 0; g < 2; g++ {
			for k := 0; k < 8; k++ {
				xs := (*[16]float32)(x[16*(8*g+k):])
				for i, v := range xs {
					s.x[i][k] = v
					s.w[i][k] = abs32(v)
				}
			}
			s.fit(16, 15, 3, true)
			s.collect(8*g, scales[:], mins[:], fits[:])
		}
		dd, dm := q2KScales(y, &scales, &mins)
		requantK(&L[0], &x[0], &dd[0], &dm[0], 16, 16, 0, 3, 0)
		for keep := zeroMask(dd[:]); keep != 0; keep &= keep - 1 {
			j := trailingZeros(keep)
			fits[j].qkx2L(L[16*j:16*j+16], x[16*j:16*j+16], 3)
		}
		packQ2((*[64]byte)(y[16:]), &L)
		src, dst = src[QK_K:], dst[q2KSize:]
	}
}

// quantizeQ45K is quantizeQ45KGo with the fits done in SIMD lanes.
func quantizeQ45K(s *qkx2Lanes, x *[QK_K]float32, sc *[12]byte, L *[QK_K]uint8, nmax int32, nstep int) (d, dmin uint16) {
	var (
		scales, mins [8]float32
		fits         [8]laneFit
		w            [32]float32
	)
	for k := 0; k < 8; k++ {
		xs := (*[32]float32)(x[32*k:])
		q45KWeights(&w, xs)
		for i, v := range xs {
			s.x[i][k] = v
			s.w[i][k] = w[i]
		}
	}
	s.fit(32, nstep, nmax, false)
	s.collect(0, scales[:], mins[:], fits[:])
	d, dmin, dd, dm := q45KScales(sc, &scales, &mins)
	requantK(&L[0], &x[0], &dd[0], &dm[0], 8, 32, 0, float32(nmax), 0)
	for keep := zeroMask(dd[:]); keep != 0; keep &= keep - 1 {
		j := trailingZeros(keep)
		fits[j].qkx2L(L[32*j:32*j+32], x[32*j:32*j+32], nmax)
	}
	return d, dmin
}

func quantizeQ4K(dst []byte, src []float32) {
	var (
		s qkx2Lanes
		L [QK_K]uint8
	)
	s.setNums(15, -1, 0.1, 20)
	for len(src) >= QK_K && len(dst) >= q4KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q4KSize]byte)(dst)
		d, dmin := quantizeQ45K(&s, x, (*[12]byte)(y[4:]), &L, 15, 20)
		le16(y[0:], d)
		le16(y[2:], dmin)
		packQ4K((*[128]byte)(y[16:]), &L)
		src, dst = src[QK_K:], dst[q4KSize:]
	}
}

func quantizeQ5K(dst []byte, src []float32) {
	var (
		s qkx2Lanes
		L [QK_K]uint8
	)
	s.setNums(31, -0.5, 0.1, 15)
	for len(src) >= QK_K && len(dst) >= q5KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q5KSize]byte)(dst)
		d, dmin := quantizeQ45K(&s, x, (*[12]byte)(y[4:]), &L, 31, 15)
		le16(y[0:], d)
		le16(y[2:], dmin)
		packQ5K(y, &L)
		src, dst = src[QK_K:], dst[q5KSize:]
	}
}

// qxLanes is the memory of the qx and q3 kernels: eight sub-blocks of 16 values side by side
// (TestLaneLayout checks the offsets the assembly uses).
type qxLanes struct {
	x, w, wx [16][8]float32 // in: values; w = x*x and wx = w*x are set by the kernel
	L        [16][8]float32 // out (q3): L before the final += nmax; scratch for qx
	nums     [20]float32    // in (qx): -(nmax + 0.1f*is) for is = -9..9 without 0
	scale    [8]float32     // out: the returned scale
	iscaleL  [8]float32     // out (qx): L = nmax + MAX(-nmax, MIN(nmax-1, nearest_int(iscaleL*x)))
	zero     [8]uint32      // out: all ones where max |x| < GROUP_MAX_EPS (then L = 0)
}

//go:noescape
func qxLanes4(s *qxLanes, lane int, lo, hi, eps float32)

//go:noescape
func q3Lanes4(s *qxLanes, lane int, lo, hi, eps float32)

//go:noescape
func qxLanes8(s *qxLanes, lo, hi, eps float32)

//go:noescape
func q3Lanes8(s *qxLanes, lo, hi, eps float32)

// fitQX runs make_qx_quants(16, nmax, x, L, 1, NULL) on the eight sub-blocks in s.
func (s *qxLanes) fitQX(nmax float32) {
	if useAVX2 {
		qxLanes8(s, -nmax, nmax-1, groupMaxEps)
		return
	}
	qxLanes4(s, 0, -nmax, nmax-1, groupMaxEps)
	qxLanes4(s, 4, -nmax, nmax-1, groupMaxEps)
}

// fitQ3 runs make_q3_quants(16, nmax, x, L, true) on the eight sub-blocks in s.
func (s *qxLanes) fitQ3(nmax float32) {
	if useAVX2 {
		q3Lanes8(s, -nmax, nmax-1, groupMaxEps)
		return
	}
	q3Lanes4(s, 0, -nmax, nmax-1, groupMaxEps)
	q3Lanes4(s, 4, -nmax, nmax-1, groupMaxEps)
}

// loadLanes16 puts sub-blocks j0..j0+7 of x (16 values each) into the lanes of s.x.
func (s *qxLanes) loadLanes16(x *[QK_K]float32, j0 int) {
	for k := 0; k < 8; k++ {
		xs := (*[16]float32)(x[16*(j0+k):])
		for i, v := range xs {
			s.x[i][k] = v
		}
	}
}

func quantizeQ6K(dst []byte, src []float32) {
	const nmax = 32
	var (
		s      [2]qxLanes
		L      [QK_K]int8
		scales [16]float32
	)
	n := 0
	for is := -9; is <= 9; is++ {
		if is != 0 {
			s[0].nums[n] = -(nmax + float32(0.1*float32(is)))
			n++
		}
	}
	s[1].nums = s[0].nums
	for len(src) >= QK_K && len(dst) >= q6KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q6KSize]byte)(dst)
		for g := range s {
			s[g].loadLanes16(x, 8*g)
			s[g].fitQX(nmax)
			for k := 0; k < 8; k++ {
				scales[8*g+k] = s[g].scale[k]
				if s[g].zero[k] != 0 {
					scales[8*g+k] = 0
				}
			}
		}
		if dd, ok := q6KScales(y, &scales); ok {
			requantK((*byte)(unsafe.Pointer(&L[0])), &x[0], &dd[0], &negZeros[0], 16, 16, -nmax, nmax-1, nmax)
			for keep := zeroMask(dd[:]); keep != 0; keep &= keep - 1 {
				j := trailingZeros(keep)
				g, k := j/8, j%8
				ls := (*[16]int8)(L[16*j:])
				if s[g].zero[k] != 0 {
					*ls = [16]int8{}
					continue
				}
				for i, v := range (*[16]float32)(x[16*j:]) {
					ls[i] = int8(nmax + clampI(nearestInt(s[g].iscaleL[k]*v), -nmax, nmax-1))
				}
			}
			packQ6K(y, &L)
		}
		src, dst = src[QK_K:], dst[q6KSize:]
	}
}

func quantizeQ3K(dst []byte, src []float32) {
	const nmax = 4
	var (
		s      [2]qxLanes
		L      [QK_K]int8
		scales [16]float32
	)
	for len(src) >= QK_K && len(dst) >= q3KSize {
		x := (*[QK_K]float32)(src)
		y := (*[q3KSize]byte)(dst)
		for g := range s {
			s[g].loadLanes16(x, 8*g)
			s[g].fitQ3(nmax)
			for k := 0; k < 8; k++ {
				scales[8*g+k] = s[g].scale[k]
				if s[g].zero[k] != 0 {
					scales[8*g+k] = 0
				}
			}
		}
		dd := q3KScales(y, &scales)
		requantK((*byte)(unsafe.Pointer(&L[0])), &x[0], &dd[0], &negZeros[0], 16, 16, -nmax, nmax-1, nmax)
		for keep := zeroMask(dd[:]); keep != 0; keep &= keep - 1 {
			j := trailingZeros(keep)
			g, k := j/8, j%8
			ls := (*[16]int8)(L[16*j:])
			if s[g].zero[k] != 0 {
				*ls = [16]int8{}
				continue
			}
			for i := range ls {
				ls[i] = int8(s[g].L[i][k]) + nmax
			}
		}
		packQ3K(y, &L)
		src, dst = src[QK_K:], dst[q3KSize:]
	}
}
