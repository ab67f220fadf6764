//go:build !purego

#include "textflag.h"

// Kernels for the k-quant sub-block fits (see kquants_amd64.go), in SSE2 (four lanes, the
// *Lanes4 functions, run on lanes 0..3 or 4..7) and AVX2 (eight lanes, *Lanes8), plus the SSE2
// final requantization. Each fit runs one of ggml-quants.c's make_*_quants on several sub-blocks
// at once, one per SIMD lane: lane k only ever sees the values of sub-block k, in the order the
// C loop visits them, and every operation is the lane-wise form of the C one (MULPS = MULSS per
// lane, and so on), so each lane computes exactly what the scalar code computes. Data-dependent
// branches of the C code become lane masks; a lane whose branch is not taken keeps its values.

#define BCAST(imm, X) MOVL $imm, AX; MOVD AX, X; PSHUFD $0, X, X

// Memory operands of SSE arithmetic must be 16-byte aligned and Go does not align these
// structures, so all memory is accessed with MOVUPS.

// Field offsets of qkx2Lanes (kquants_amd64.go; TestLaneLayout checks them). The lane
// structures hold eight lanes per row (32 bytes).
#define QX_X 0
#define QX_W 1024
#define QX_FL 2048
#define QX_NUMS 3072
#define QX_SCALE 3200
#define QX_THEMIN 3232
#define QX_ISCALEL 3264
#define QX_MINL 3296
#define QX_DEGEN 3328
#define QX_BEST 3360
#define QX_MIN 3392
#define QX_MAX 3424
#define QX_SUMW 3456
#define QX_SUMX 3488
#define QX_MIN0 3520

// NEARESTCLAMP(v): v = float(MAX(0, MIN(nmax, nearest_int(v)))) with nearest_int's
// 1.5*2^23 trick on the bits (X15 = 12582912f, X14 = 0x007fffff, X13 = 0x00400000). The
// clamp runs on the (exact) float of the integer: X12 = float(nmax), X9 = +0.
#define NEARESTCLAMP(v) \
	ADDPS X15, v; ANDPS X14, v; PSUBL X13, v; CVTPL2PS v, v; MINPS X12, v; MAXPS X9, v

// BLEND(m, new, off, t, u): field at off(DI) = m ? new : field. Clobbers t, u.
#define BLEND(m, new, off, t, u) \
	MOVUPS off(DI), u; MOVAPS m, t; ANDNPS u, t; MOVAPS new, u; ANDPS m, u; ORPS t, u; MOVUPS u, off(DI)

// BESTDIFF: X5 = scale*L + min - x for the row at DX, L from iscale X7 and min X0, scale X10.
#define BESTDIFF \
	MOVUPS QX_X(DI)(DX*1), X5; SUBPS X0, X5; MULPS X7, X5; NEARESTCLAMP(X5); \
	MULPS X10, X5; ADDPS X0, X5; MOVUPS QX_X(DI)(DX*1), X6; SUBPS X6, X5

// ERRDIFF: X5 = this_scale*Laux + this_min - x for the row at DX (X10 this_scale, X4 this_min).
#define ERRDIFF \
	MOVUPS QX_FL(DI)(DX*1), X5; MULPS X10, X5; ADDPS X4, X5; MOVUPS QX_X(DI)(DX*1), X6; SUBPS X6, X5

// BESTACC: X1 += w*X5, next row; flags for JLT (more rows).
#define BESTACC \
	MOVUPS QX_W(DI)(DX*1), X6; MULPS X6, X5; ADDPS X5, X1; ADDQ $32, DX; CMPQ DX, CX

// func qkx2Lanes4(s *qkx2Lanes, lane, n, nstep int, nmax int32, mad bool)
//
// make_qkx2_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad) for
// lanes lane..lane+3 of s.x/s.w (n rows of 8 lanes; lane is 0 or 4). s.nums[is] holds rmin + rdelta*is + nmax. Results per
// lane: scale, theMin, and the iscale and min that produced the final L (iscaleL, minL), so
// that L = MAX(0, MIN(nmax, nearest_int(iscaleL*(x - minL)))); degen marks lanes with
// max == min (L = 0, scale 0, theMin = -min0).
TEXT ·qkx2Lanes4(SB), NOSPLIT, $0-37
	MOVQ s+0(FP), DI
	LEAQ QX_NUMS(DI), R11
	MOVQ lane+8(FP), AX
	LEAQ (DI)(AX*4), DI
	MOVQ n+16(FP), CX
	SHLQ $5, CX
	MOVQ nstep+24(FP), R8
	MOVL nmax+32(FP), AX
	MOVD AX, X12
	PSHUFD $0, X12, X12
	CVTPL2PS X12, X12
	MOVBQZX mad+36(FP), R9
	BCAST(0x4b400000, X15)
	BCAST(0x007fffff, X14)
	BCAST(0x00400000, X13)
	XORPS X9, X9
	PCMPEQL X2, X2
	PSRLL $1, X2

	// min, max, sum_w, sum_x
	MOVUPS QX_X(DI), X0
	MOVAPS X0, X1
	MOVUPS QX_W(DI), X3
	MOVAPS X3, X4
	MULPS X0, X4
	MOVQ $32, DX

initloop:
	CMPQ DX, CX
	JGE initdone
	MOVUPS QX_X(DI)(DX*1), X5
	MOVAPS X5, X6
	MINPS X0, X6 // x < min ? x : min
	MOVAPS X6, X0
	MOVAPS X5, X6
	MAXPS X1, X6 // x > max ? x : max
	MOVAPS X6, X1
	MOVUPS QX_W(DI)(DX*1), X6
	ADDPS X6, X3
	MULPS X5, X6
	ADDPS X6, X4
	ADDQ $32, DX
	JMP initloop

initdone:
	MOVUPS X3, QX_SUMW(DI)
	MOVUPS X4, QX_SUMX(DI)
	MOVAPS X9, X5
	MINPS X0, X5 // if (min > 0) min = 0: 0 < min ? 0 : min
	MOVAPS X5, X0
	MOVUPS X0, QX_MIN0(DI)
	MOVUPS X0, QX_MIN(DI)
	MOVUPS X0, QX_MINL(DI)
	MOVUPS X1, QX_MAX(DI)
	MOVAPS X1, X5
	CMPPS X0, X5, $0
	MOVUPS X5, QX_DEGEN(DI)

	// iscale = nmax/(max - min); scale = 1/iscale; best_error with the first L.
	SUBPS X0, X1
	MOVAPS X12, X7
	DIVPS X1, X7
	MOVUPS X7, QX_ISCALEL(DI)
	BCAST(0x3f800000, X10)
	DIVPS X7, X10
	MOVUPS X10, QX_SCALE(DI)
	XORPS X1, X1
	XORQ DX, DX
	TESTQ R9, R9
	JNZ bestmad

bestsq:
	BESTDIFF
	MULPS X5, X5
	BESTACC
	JLT bestsq
	JMP bestdone

bestmad:
	BESTDIFF
	ANDPS X2, X5
	BESTACC
	JLT bestmad

bestdone:
	MOVUPS X1, QX_BEST(DI)

	XORQ R10, R10

trial:
	CMPQ R10, R8
	JGT end
	// iscale = (rmin + rdelta*is + nmax)/(max - min)
	MOVUPS QX_MIN(DI), X0
	MOVSS (R11)(R10*4), X7
	SHUFPS $0, X7, X7
	MOVUPS QX_MAX(DI), X6
	SUBPS X0, X6
	DIVPS X6, X7
	XORPS X1, X1
	XORPS X2, X2
	XORPS X3, X3
	XORQ DX, DX

sumloop:
	MOVUPS QX_X(DI)(DX*1), X4
	MOVAPS X4, X5
	SUBPS X0, X5
	MULPS X7, X5
	NEARESTCLAMP(X5)
	MOVUPS X5, QX_FL(DI)(DX*1)
	MOVUPS QX_W(DI)(DX*1), X6
	MULPS X5, X6 // w*l
	ADDPS X6, X1
	MOVAPS X6, X8
	MULPS X5, X8 // w*l*l
	ADDPS X8, X2
	MULPS X4, X6 // w*l*x
	ADDPS X6, X3
	ADDQ $32, DX
	CMPQ DX, CX
	JLT sumloop

	// D = sum_w*sum_l2 - sum_l*sum_l; lanes with D > 0 go on.
	MOVUPS QX_SUMW(DI), X8
	MULPS X2, X8
	MOVAPS X1, X4
	MULPS X1, X4
	SUBPS X4, X8
	MOVAPS X9, X11
	CMPPS X8, X11, $1 // 0 < D
	MOVMSKPS X11, AX
	TESTL AX, AX
	JZ next
	// this_scale = (sum_w*sum_xl - sum_x*sum_l)/D; this_min = (sum_l2*sum_x - sum_l*sum_xl)/D
	MOVUPS QX_SUMW(DI), X10
	MULPS X3, X10
	MOVUPS QX_SUMX(DI), X4
	MULPS X1, X4
	SUBPS X4, X10
	DIVPS X8, X10
	MOVUPS QX_SUMX(DI), X4
	MULPS X2, X4
	MOVAPS X1, X5
	MULPS X3, X5
	SUBPS X5, X4
	DIVPS X8, X4
	// if (this_min > 0) { this_min = 0; this_scale = sum_xl/sum_l2; }
	MOVAPS X9, X5
	CMPPS X4, X5, $1 // 0 < this_min
	MOVAPS X5, X6
	ANDNPS X4, X6
	MOVAPS X6, X4
	MOVAPS X3, X6
	DIVPS X2, X6
	ANDPS X5, X6
	ANDNPS X10, X5
	ORPS X6, X5
	MOVAPS X5, X10

	// cur_error
	PCMPEQL X2, X2
	PSRLL $1, X2
	XORPS X1, X1
	XORQ DX, DX
	TESTQ R9, R9
	JNZ errmad

errsq:
	ERRDIFF
	MULPS X5, X5
	BESTACC
	JLT errsq
	JMP errdone

errmad:
	ERRDIFF
	ANDPS X2, X5
	BESTACC
	JLT errmad

errdone:

	// if (cur_error < best_error): take this trial.
	MOVUPS QX_BEST(DI), X6
	MOVAPS X1, X5
	CMPPS X6, X5, $1
	ANDPS X11, X5
	MOVMSKPS X5, AX
	TESTL AX, AX
	JZ next
	BLEND(X5, X1, QX_BEST, X6, X8)
	BLEND(X5, X10, QX_SCALE, X6, X8)
	BLEND(X5, X7, QX_ISCALEL, X6, X8)
	BLEND(X5, X0, QX_MINL, X6, X8)
	BLEND(X5, X4, QX_MIN, X6, X8)

next:
	INCQ R10
	JMP trial

end:
	// the_min = -min
	MOVUPS QX_MIN(DI), X0
	PCMPEQL X1, X1
	PSLLL $31, X1
	XORPS X1, X0
	MOVUPS X0, QX_THEMIN(DI)
	RET

// Field offsets of qxLanes and q3Lanes (TestLaneLayout).
#define QS_X 0
#define QS_W 512
#define QS_WX 1024
#define QS_L 1536
#define QS_NUMS 2048
#define QS_SCALE 2128
#define QS_ISCALEL 2160
#define QS_ZERO 2192

// NEARESTCLAMPS(v): v = float(MAX(lo, MIN(hi, nearest_int(v)))), X12 = hi, X11 = lo (floats).
#define NEARESTCLAMPS(v) \
	ADDPS X15, v; ANDPS X14, v; PSUBL X13, v; CVTPL2PS v, v; MINPS X12, v; MAXPS X11, v

// XBLEND(m, new, old, t): old = m ? new : old, bitwise. Clobbers t.
#define XBLEND(m, new, old, t) \
	MOVAPS old, t; XORPS new, t; ANDPS m, t; XORPS t, old

// SIGNEDMAX16 scans the 16 rows at DI like `if (ax > amax) { amax = ax; max = x; }` from
// amax = max = 0, leaving amax in X0 and max in X1, and stores w = x*x and wx = w*x. Uses
// X2 (set to 0x7fffffff), X4..X7, DX.
#define SIGNEDMAX16(loop) \
	XORPS X0, X0; XORPS X1, X1; PCMPEQL X2, X2; PSRLL $1, X2; XORQ DX, DX; \
loop: \
	MOVUPS QS_X(DI)(DX*1), X4; MOVAPS X4, X5; ANDPS X2, X5; \
	MOVAPS X0, X6; CMPPS X5, X6, $1; \
	MOVAPS X5, X7; MAXPS X0, X7; MOVAPS X7, X0; \
	XBLEND(X6, X4, X1, X7); \
	MOVAPS X4, X5; MULPS X4, X5; MOVUPS X5, QS_W(DI)(DX*1); \
	MULPS X4, X5; MOVUPS X5, QS_WX(DI)(DX*1); \
	ADDQ $32, DX; CMPQ DX, $512; JLT loop

// QXSUMS(loop): with iscale in X7, for the 16 rows: l = MAX(lo, MIN(hi, nearest_int(iscale*x)));
// X2 = sum of w*x*l, X3 = sum of w*l*l, in row order; l is stored at QS_L.
#define QXSUMS(loop) \
	XORPS X2, X2; XORPS X3, X3; XORQ DX, DX; \
loop: \
	MOVUPS QS_X(DI)(DX*1), X5; MULPS X7, X5; NEARESTCLAMPS(X5); \
	MOVUPS X5, QS_L(DI)(DX*1); \
	MOVUPS QS_WX(DI)(DX*1), X6; MULPS X5, X6; ADDPS X6, X2; \
	MOVUPS QS_W(DI)(DX*1), X6; MULPS X5, X6; MULPS X5, X6; ADDPS X6, X3; \
	ADDQ $32, DX; CMPQ DX, $512; JLT loop

// func qxLanes4(s *qxLanes, lane int, lo, hi, eps float32)
//
// make_qx_quants(16, nmax, x, L, rmse_type = 1, qw = NULL) for lanes lane..lane+3; lo = -nmax,
// hi = nmax-1, s.nums holds -(nmax + 0.1f*is) for is = -9..9 without 0. Results per lane: the
// returned scale, and iscaleL with L = nmax + MAX(lo, MIN(hi, nearest_int(iscaleL*x))); zero
// marks lanes with max |x| < eps (L = 0, scale 0).
TEXT ·qxLanes4(SB), NOSPLIT, $0-28
	MOVQ s+0(FP), DI
	LEAQ QS_NUMS(DI), R11
	MOVQ lane+8(FP), AX
	LEAQ (DI)(AX*4), DI
	MOVSS lo+16(FP), X11
	SHUFPS $0, X11, X11
	MOVSS hi+20(FP), X12
	SHUFPS $0, X12, X12
	BCAST(0x4b400000, X15)
	BCAST(0x007fffff, X14)
	BCAST(0x00400000, X13)
	XORPS X9, X9
	SIGNEDMAX16(qxmax)
	MOVSS eps+24(FP), X5
	SHUFPS $0, X5, X5
	CMPPS X5, X0, $1 // amax < eps
	MOVUPS X0, QS_ZERO(DI)

	// iscale = -nmax/max; first L and sums; scale = suml2 ? sumlx/suml2 : 0; best = scale*sumlx
	MOVAPS X11, X7
	DIVPS X1, X7
	MOVAPS X7, X0
	QXSUMS(qxfirst)
	MOVAPS X2, X8
	DIVPS X3, X8
	MOVAPS X3, X6
	CMPPS X9, X6, $4 // suml2 != 0 (NaN included)
	ANDPS X6, X8
	MOVAPS X8, X10
	MULPS X2, X10
	XORQ R10, R10

qxtrial:
	// iscale = -(nmax + 0.1f*is)/max
	MOVSS (R11)(R10*4), X7
	SHUFPS $0, X7, X7
	DIVPS X1, X7
	QXSUMS(qxsum)
	// if (suml2 > 0 && sumlx*sumlx > best*suml2)
	MOVAPS X9, X4
	CMPPS X3, X4, $1
	MOVAPS X2, X5
	MULPS X2, X5
	MOVAPS X10, X6
	MULPS X3, X6
	CMPPS X5, X6, $1
	ANDPS X6, X4
	MOVMSKPS X4, AX
	TESTL AX, AX
	JZ qxnext
	// scale = sumlx/suml2; best = scale*sumlx
	MOVAPS X2, X5
	DIVPS X3, X5
	MOVAPS X5, X6
	MULPS X2, X6
	XBLEND(X4, X5, X8, X2)
	XBLEND(X4, X6, X10, X2)
	XBLEND(X4, X7, X0, X2)

qxnext:
	INCQ R10
	CMPQ R10, $18
	JLT qxtrial
	MOVUPS X8, QS_SCALE(DI)
	MOVUPS X0, QS_ISCALEL(DI)
	RET

// func q3Lanes4(s *qxLanes, lane int, lo, hi, eps float32)
//
// make_q3_quants(16, nmax, x, L, do_rmse = true) for lanes lane..lane+3; lo = -nmax, hi = nmax-1.
// Results per lane: the returned scale and L (as floats, before the final += nmax) at s.L;
// zero marks lanes with max |x| < eps (L = 0, scale 0).
TEXT ·q3Lanes4(SB), NOSPLIT, $0-28
	MOVQ s+0(FP), DI
	LEAQ QS_NUMS(DI), R11
	MOVQ lane+8(FP), AX
	LEAQ (DI)(AX*4), DI
	MOVSS lo+16(FP), X11
	SHUFPS $0, X11, X11
	MOVSS hi+20(FP), X12
	SHUFPS $0, X12, X12
	BCAST(0x4b400000, X15)
	BCAST(0x007fffff, X14)
	BCAST(0x00400000, X13)
	XORPS X9, X9
	SIGNEDMAX16(q3max)
	MOVSS eps+24(FP), X5
	SHUFPS $0, X5, X5
	CMPPS X5, X0, $1
	MOVUPS X0, QS_ZERO(DI)
	MOVAPS X11, X7
	DIVPS X1, X7
	QXSUMS(q3first)
	XORQ R10, R10

q3pass:
	XORPS X0, X0 // lanes changed in this pass
	XORQ DX, DX

q3row:
	// slx = sumlx - w*x*L; on only if slx > 0
	MOVUPS QS_L(DI)(DX*1), X4
	MOVUPS QS_WX(DI)(DX*1), X5
	MULPS X4, X5
	MOVAPS X2, X6
	SUBPS X5, X6
	MOVAPS X9, X7
	CMPPS X6, X7, $1
	MOVMSKPS X7, AX
	TESTL AX, AX
	JZ q3next
	// sl2 = suml2 - w*L*L; new_l = MAX(lo, MIN(hi, nearest_int(x*sl2/slx)))
	MOVUPS QS_W(DI)(DX*1), X8
	MULPS X4, X8
	MULPS X4, X8
	MOVAPS X3, X10
	SUBPS X8, X10
	MOVUPS QS_X(DI)(DX*1), X8
	MULPS X10, X8
	DIVPS X6, X8
	NEARESTCLAMPS(X8)
	MOVAPS X8, X5
	CMPPS X4, X5, $4 // new_l != L
	ANDPS X5, X7
	MOVMSKPS X7, AX
	TESTL AX, AX
	JZ q3next
	// slx += w*x*new_l; sl2 += w*new_l*new_l
	MOVUPS QS_WX(DI)(DX*1), X5
	MULPS X8, X5
	ADDPS X5, X6
	MOVUPS QS_W(DI)(DX*1), X5
	MULPS X8, X5
	MULPS X8, X5
	ADDPS X5, X10
	// if (sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2)
	MOVAPS X9, X5
	CMPPS X10, X5, $1
	ANDPS X5, X7
	MOVAPS X6, X5
	MULPS X6, X5
	MULPS X3, X5
	MOVAPS X2, X1
	MULPS X2, X1
	MULPS X10, X1
	CMPPS X5, X1, $1
	ANDPS X1, X7
	MOVMSKPS X7, AX
	TESTL AX, AX
	JZ q3next
	XBLEND(X7, X8, X4, X1)
	MOVUPS X4, QS_L(DI)(DX*1)
	XBLEND(X7, X6, X2, X1)
	XBLEND(X7, X10, X3, X1)
	ORPS X7, X0

q3next:
	ADDQ $32, DX
	CMPQ DX, $512
	JLT q3row
	MOVMSKPS X0, AX
	TESTL AX, AX
	JZ q3done
	INCQ R10
	CMPQ R10, $5
	JLT q3pass

q3done:
	// scale = suml2 > 0 ? sumlx/suml2 : 0
	MOVAPS X9, X4
	CMPPS X3, X4, $1
	DIVPS X3, X2
	ANDPS X4, X2
	MOVUPS X2, QS_SCALE(DI)
	RET

// ---- AVX2: the same kernels on eight lanes (YMM registers). In Go's VEX syntax the
// operands are reversed from Intel's: VSUBPS a, b, d is d = b - a, VMINPS a, b, d is
// d = b < a ? b : a, VCMPPS $p, a, b, d is d = b <p> a, VANDNPS a, b, d is d = ~b & a,
// VBLENDVPS m, a, b, d is d = m ? a : b. VEX memory operands need no alignment.

#define VBCAST(imm, Y, X) MOVL $imm, AX; MOVD AX, X; VPBROADCASTD X, Y

// VNEARESTCLAMP(v, hi, lo): v = float(MAX(lo, MIN(hi, nearest_int(v)))).
#define VNEARESTCLAMP(v, hi, lo) \
	VADDPS Y15, v, v; VANDPS Y14, v, v; VPSUBD Y13, v, v; VCVTDQ2PS v, v; VMINPS hi, v, v; VMAXPS lo, v, v

// VBESTDIFF: Y5 = scale*L + min - x for the row at DX (iscale Y7, min Y0, scale Y10).
#define VBESTDIFF \
	VMOVUPS QX_X(DI)(DX*1), Y6; VSUBPS Y0, Y6, Y5; VMULPS Y7, Y5, Y5; VNEARESTCLAMP(Y5, Y12, Y9); \
	VMULPS Y10, Y5, Y5; VADDPS Y0, Y5, Y5; VSUBPS Y6, Y5, Y5

// VERRDIFF: Y5 = this_scale*Laux + this_min - x for the row at DX (Y10 this_scale, Y4 this_min).
#define VERRDIFF \
	VMOVUPS QX_FL(DI)(DX*1), Y5; VMULPS Y10, Y5, Y5; VADDPS Y4, Y5, Y5; VSUBPS QX_X(DI)(DX*1), Y5, Y5

// VACC: Y1 += w*Y5, next row; flags for JLT (more rows).
#define VACC \
	VMULPS QX_W(DI)(DX*1), Y5, Y5; VADDPS Y5, Y1, Y1; ADDQ $32, DX; CMPQ DX, CX

// VSTOREBLEND(m, new, off): field at off(DI) = m ? new : field. Clobbers Y11.
#define VSTOREBLEND(m, new, off) \
	VMOVUPS off(DI), Y11; VBLENDVPS m, new, Y11, Y11; VMOVUPS Y11, off(DI)

// func qkx2Lanes8(s *qkx2Lanes, n, nstep int, nmax int32, mad bool)
//
// qkx2Lanes4 on all eight lanes.
TEXT ·qkx2Lanes8(SB), NOSPLIT, $0-29
	MOVQ s+0(FP), DI
	MOVQ n+8(FP), CX
	SHLQ $5, CX
	MOVQ nstep+16(FP), R8
	MOVL nmax+24(FP), AX
	MOVD AX, X12
	VPBROADCASTD X12, Y12
	VCVTDQ2PS Y12, Y12
	MOVBQZX mad+28(FP), R9
	VBCAST(0x4b400000, Y15, X15)
	VBCAST(0x007fffff, Y14, X14)
	VBCAST(0x00400000, Y13, X13)
	VXORPS Y9, Y9, Y9
	VPCMPEQD Y2, Y2, Y2
	VPSRLD $1, Y2, Y2

	// min, max, sum_w, sum_x
	VMOVUPS QX_X(DI), Y0
	VMOVAPS Y0, Y1
	VMOVUPS QX_W(DI), Y3
	VMULPS Y0, Y3, Y4
	MOVQ $32, DX

vinitloop:
	CMPQ DX, CX
	JGE vinitdone
	VMOVUPS QX_X(DI)(DX*1), Y5
	VMINPS Y0, Y5, Y0 // x < min ? x : min
	VMAXPS Y1, Y5, Y1 // x > max ? x : max
	VMOVUPS QX_W(DI)(DX*1), Y6
	VADDPS Y6, Y3, Y3
	VMULPS Y5, Y6, Y6
	VADDPS Y6, Y4, Y4
	ADDQ $32, DX
	JMP vinitloop

vinitdone:
	VMOVUPS Y3, QX_SUMW(DI)
	VMOVUPS Y4, QX_SUMX(DI)
	VMINPS Y0, Y9, Y0 // if (min > 0) min = 0: 0 < min ? 0 : min
	VMOVUPS Y0, QX_MIN0(DI)
	VMOVUPS Y0, QX_MIN(DI)
	VMOVUPS Y0, QX_MINL(DI)
	VMOVUPS Y1, QX_MAX(DI)
	VCMPPS $0, Y0, Y1, Y5
	VMOVUPS Y5, QX_DEGEN(DI)

	// iscale = nmax/(max - min); scale = 1/iscale; best_error with the first L.
	VSUBPS Y0, Y1, Y1
	VDIVPS Y1, Y12, Y7
	VMOVUPS Y7, QX_ISCALEL(DI)
	VBCAST(0x3f800000, Y10, X10)
	VDIVPS Y7, Y10, Y10
	VMOVUPS Y10, QX_SCALE(DI)
	VXORPS Y1, Y1, Y1
	XORQ DX, DX
	TESTQ R9, R9
	JNZ vbestmad

vbestsq:
	VBESTDIFF
	VMULPS Y5, Y5, Y5
	VACC
	JLT vbestsq
	JMP vbestdone

vbestmad:
	VBESTDIFF
	VANDPS Y2, Y5, Y5
	VACC
	JLT vbestmad

vbestdone:
	VMOVUPS Y1, QX_BEST(DI)
	XORQ R10, R10

vtrial:
	CMPQ R10, R8
	JGT vend
	// iscale = (rmin + rdelta*is + nmax)/(max - min)
	VMOVUPS QX_MIN(DI), Y0
	VBROADCASTSS QX_NUMS(DI)(R10*4), Y7
	VMOVUPS QX_MAX(DI), Y6
	VSUBPS Y0, Y6, Y6
	VDIVPS Y6, Y7, Y7
	VXORPS Y1, Y1, Y1 // sum_l
	VXORPS Y8, Y8, Y8 // sum_l2
	VXORPS Y3, Y3, Y3 // sum_xl
	XORQ DX, DX

vsumloop:
	VMOVUPS QX_X(DI)(DX*1), Y4
	VSUBPS Y0, Y4, Y5
	VMULPS Y7, Y5, Y5
	VNEARESTCLAMP(Y5, Y12, Y9)
	VMOVUPS Y5, QX_FL(DI)(DX*1)
	VMULPS QX_W(DI)(DX*1), Y5, Y6 // w*l
	VADDPS Y6, Y1, Y1
	VMULPS Y5, Y6, Y11 // w*l*l
	VADDPS Y11, Y8, Y8
	VMULPS Y4, Y6, Y6 // w*l*x
	VADDPS Y6, Y3, Y3
	ADDQ $32, DX
	CMPQ DX, CX
	JLT vsumloop

	// D = sum_w*sum_l2 - sum_l*sum_l; lanes with D > 0 go on.
	VMULPS QX_SUMW(DI), Y8, Y11
	VMULPS Y1, Y1, Y4
	VSUBPS Y4, Y11, Y11
	VCMPPS $1, Y11, Y9, Y6 // 0 < D
	VMOVMSKPS Y6, AX
	TESTL AX, AX
	JZ vnext
	// this_scale = (sum_w*sum_xl - sum_x*sum_l)/D; this_min = (sum_l2*sum_x - sum_l*sum_xl)/D
	VMULPS QX_SUMW(DI), Y3, Y10
	VMULPS QX_SUMX(DI), Y1, Y4
	VSUBPS Y4, Y10, Y10
	VDIVPS Y11, Y10, Y10
	VMULPS QX_SUMX(DI), Y8, Y4
	VMULPS Y3, Y1, Y5
	VSUBPS Y5, Y4, Y4
	VDIVPS Y11, Y4, Y4
	// if (this_min > 0) { this_min = 0; this_scale = sum_xl/sum_l2; }
	VCMPPS $1, Y4, Y9, Y5 // 0 < this_min
	VANDNPS Y4, Y5, Y4
	VDIVPS Y8, Y3, Y11
	VBLENDVPS Y5, Y11, Y10, Y10

	// cur_error
	VXORPS Y1, Y1, Y1
	XORQ DX, DX
	TESTQ R9, R9
	JNZ verrmad

verrsq:
	VERRDIFF
	VMULPS Y5, Y5, Y5
	VACC
	JLT verrsq
	JMP verrdone

verrmad:
	VERRDIFF
	VANDPS Y2, Y5, Y5
	VACC
	JLT verrmad

verrdone:
	// if (cur_error < best_error): take this trial.
	VCMPPS $1, QX_BEST(DI), Y1, Y5
	VANDPS Y6, Y5, Y5
	VMOVMSKPS Y5, AX
	TESTL AX, AX
	JZ vnext
	VSTOREBLEND(Y5, Y1, QX_BEST)
	VSTOREBLEND(Y5, Y10, QX_SCALE)
	VSTOREBLEND(Y5, Y7, QX_ISCALEL)
	VSTOREBLEND(Y5, Y0, QX_MINL)
	VSTOREBLEND(Y5, Y4, QX_MIN)

vnext:
	INCQ R10
	JMP vtrial

vend:
	// the_min = -min
	VMOVUPS QX_MIN(DI), Y0
	VPCMPEQD Y1, Y1, Y1
	VPSLLD $31, Y1, Y1
	VXORPS Y1, Y0, Y0
	VMOVUPS Y0, QX_THEMIN(DI)
	VZEROUPPER
	RET

// VSIGNEDMAX16: SIGNEDMAX16 on eight lanes: amax Y0, max Y1; stores w and wx. Uses Y2, Y4..Y6.
#define VSIGNEDMAX16(loop) \
	VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VPCMPEQD Y2, Y2, Y2; VPSRLD $1, Y2, Y2; XORQ DX, DX; \
loop: \
	VMOVUPS QS_X(DI)(DX*1), Y4; VANDPS Y2, Y4, Y5; \
	VCMPPS $1, Y5, Y0, Y6; VMAXPS Y0, Y5, Y0; VBLENDVPS Y6, Y4, Y1, Y1; \
	VMULPS Y4, Y4, Y5; VMOVUPS Y5, QS_W(DI)(DX*1); \
	VMULPS Y4, Y5, Y5; VMOVUPS Y5, QS_WX(DI)(DX*1); \
	ADDQ $32, DX; CMPQ DX, $512; JLT loop

// VQXSUMS: QXSUMS on eight lanes: iscale Y7; Y3 = sum of w*x*l, Y8 = sum of w*l*l; l stored.
#define VQXSUMS(loop) \
	VXORPS Y3, Y3, Y3; VXORPS Y8, Y8, Y8; XORQ DX, DX; \
loop: \
	VMULPS QS_X(DI)(DX*1), Y7, Y5; VNEARESTCLAMP(Y5, Y12, Y11); \
	VMOVUPS Y5, QS_L(DI)(DX*1); \
	VMULPS QS_WX(DI)(DX*1), Y5, Y6; VADDPS Y6, Y3, Y3; \
	VMULPS QS_W(DI)(DX*1), Y5, Y6; VMULPS Y5, Y6, Y6; VADDPS Y6, Y8, Y8; \
	ADDQ $32, DX; CMPQ DX, $512; JLT loop

// func qxLanes8(s *qxLanes, lo, hi, eps float32)
TEXT ·qxLanes8(SB), NOSPLIT, $0-20
	MOVQ s+0(FP), DI
	VBROADCASTSS lo+8(FP), Y11
	VBROADCASTSS hi+12(FP), Y12
	VBCAST(0x4b400000, Y15, X15)
	VBCAST(0x007fffff, Y14, X14)
	VBCAST(0x00400000, Y13, X13)
	VXORPS Y9, Y9, Y9
	VSIGNEDMAX16(vqxmax)
	VBROADCASTSS eps+16(FP), Y5
	VCMPPS $1, Y5, Y0, Y5 // amax < eps
	VMOVUPS Y5, QS_ZERO(DI)

	// iscale = -nmax/max; first L and sums; scale = suml2 ? sumlx/suml2 : 0; best = scale*sumlx
	VDIVPS Y1, Y11, Y7
	VMOVAPS Y7, Y0
	VQXSUMS(vqxfirst)
	VDIVPS Y8, Y3, Y10
	VCMPPS $4, Y9, Y8, Y6 // suml2 != 0 (NaN included)
	VANDPS Y6, Y10, Y10
	VMULPS Y3, Y10, Y4
	XORQ R10, R10

vqxtrial:
	// iscale = -(nmax + 0.1f*is)/max
	VBROADCASTSS QS_NUMS(DI)(R10*4), Y7
	VDIVPS Y1, Y7, Y7
	VQXSUMS(vqxsum)
	// if (suml2 > 0 && sumlx*sumlx > best*suml2)
	VCMPPS $1, Y8, Y9, Y5
	VMULPS Y3, Y3, Y6
	VMULPS Y8, Y4, Y2
	VCMPPS $1, Y6, Y2, Y2
	VANDPS Y2, Y5, Y5
	VMOVMSKPS Y5, AX
	TESTL AX, AX
	JZ vqxnext
	// scale = sumlx/suml2; best = scale*sumlx
	VDIVPS Y8, Y3, Y6
	VMULPS Y3, Y6, Y2
	VBLENDVPS Y5, Y6, Y10, Y10
	VBLENDVPS Y5, Y2, Y4, Y4
	VBLENDVPS Y5, Y7, Y0, Y0

vqxnext:
	INCQ R10
	CMPQ R10, $18
	JLT vqxtrial
	VMOVUPS Y10, QS_SCALE(DI)
	VMOVUPS Y0, QS_ISCALEL(DI)
	VZEROUPPER
	RET

// func q3Lanes8(s *qxLanes, lo, hi, eps float32)
TEXT ·q3Lanes8(SB), NOSPLIT, $0-20
	MOVQ s+0(FP), DI
	VBROADCASTSS lo+8(FP), Y11
	VBROADCASTSS hi+12(FP), Y12
	VBCAST(0x4b400000, Y15, X15)
	VBCAST(0x007fffff, Y14, X14)
	VBCAST(0x00400000, Y13, X13)
	VXORPS Y9, Y9, Y9
	VSIGNEDMAX16(vq3max)
	VBROADCASTSS eps+16(FP), Y5
	VCMPPS $1, Y5, Y0, Y5
	VMOVUPS Y5, QS_ZERO(DI)
	VDIVPS Y1, Y11, Y7
	VQXSUMS(vq3first)
	XORQ R10, R10

vq3pass:
	VXORPS Y0, Y0, Y0 // lanes changed in this pass
	XORQ DX, DX

vq3row:
	// slx = sumlx - w*x*L; on only if slx > 0
	VMOVUPS QS_L(DI)(DX*1), Y4
	VMULPS QS_WX(DI)(DX*1), Y4, Y5
	VSUBPS Y5, Y3, Y6
	VCMPPS $1, Y6, Y9, Y7
	VMOVMSKPS Y7, AX
	TESTL AX, AX
	JZ vq3next
	// sl2 = suml2 - w*L*L; new_l = MAX(lo, MIN(hi, nearest_int(x*sl2/slx)))
	VMULPS QS_W(DI)(DX*1), Y4, Y5
	VMULPS Y4, Y5, Y5
	VSUBPS Y5, Y8, Y10
	VMULPS QS_X(DI)(DX*1), Y10, Y5
	VDIVPS Y6, Y5, Y5
	VNEARESTCLAMP(Y5, Y12, Y11)
	VCMPPS $4, Y4, Y5, Y1 // new_l != L
	VANDPS Y1, Y7, Y7
	VMOVMSKPS Y7, AX
	TESTL AX, AX
	JZ vq3next
	// slx += w*x*new_l; sl2 += w*new_l*new_l
	VMULPS QS_WX(DI)(DX*1), Y5, Y1
	VADDPS Y1, Y6, Y6
	VMULPS QS_W(DI)(DX*1), Y5, Y1
	VMULPS Y5, Y1, Y1
	VADDPS Y1, Y10, Y10
	// if (sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2)
	VCMPPS $1, Y10, Y9, Y1
	VANDPS Y1, Y7, Y7
	VMULPS Y6, Y6, Y1
	VMULPS Y8, Y1, Y1
	VMULPS Y3, Y3, Y2
	VMULPS Y10, Y2, Y2
	VCMPPS $1, Y1, Y2, Y2
	VANDPS Y2, Y7, Y7
	VMOVMSKPS Y7, AX
	TESTL AX, AX
	JZ vq3next
	VBLENDVPS Y7, Y5, Y4, Y4
	VMOVUPS Y4, QS_L(DI)(DX*1)
	VBLENDVPS Y7, Y6, Y3, Y3
	VBLENDVPS Y7, Y10, Y8, Y8
	VORPS Y7, Y0, Y0

vq3next:
	ADDQ $32, DX
	CMPQ DX, $512
	JLT vq3row
	VMOVMSKPS Y0, AX
	TESTL AX, AX
	JZ vq3done
	INCQ R10
	CMPQ R10, $5
	JLT vq3pass

vq3done:
	// scale = suml2 > 0 ? sumlx/suml2 : 0
	VCMPPS $1, Y8, Y9, Y4
	VDIVPS Y8, Y3, Y3
	VANDPS Y4, Y3, Y3
	VMOVUPS Y3, QS_SCALE(DI)
	VZEROUPPER
	RET

// RQ4(off, r): r = int32 of MAX(lo, MIN(hi, nearest_int((x + dm)/dd))) + off for the four
// values at off(SI); X7 = dd, X8 = dm.
#define RQ4(o, r) \
	MOVUPS o(SI), r; ADDPS X8, r; DIVPS X7, r; NEARESTCLAMPS(r); ADDPS X10, r; CVTTPS2PL r, r

// func requantK(L *byte, x *float32, dd, dm *float32, nsub, sublen int, lo, hi, off float32)
//
// The final requantization of the k-quants, sub-block by sub-block: for each of the nsub
// sub-blocks j of sublen values (a multiple of 16) whose dd[j] is not zero (C: if (!d) continue),
// L = (uint8)(MAX(lo, MIN(hi, nearest_int((x + dm[j])/dd[j]))) + off). Sub-blocks with
// dd[j] == 0 keep their L. For C's x/d, pass dm = -0: x + -0 is x for every x, NaNs included.
TEXT ·requantK(SB), NOSPLIT, $0-60
	MOVQ L+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ dd+16(FP), R8
	MOVQ dm+24(FP), R9
	MOVQ nsub+32(FP), CX
	MOVQ sublen+40(FP), R10
	MOVSS lo+48(FP), X11
	SHUFPS $0, X11, X11
	MOVSS hi+52(FP), X12
	SHUFPS $0, X12, X12
	MOVSS off+56(FP), X10
	SHUFPS $0, X10, X10
	BCAST(0x4b400000, X15)
	BCAST(0x007fffff, X14)
	BCAST(0x00400000, X13)
	XORPS X9, X9
	XORQ BX, BX

rqsub:
	CMPQ BX, CX
	JGE rqdone
	MOVSS (R8)(BX*4), X7
	UCOMISS X9, X7
	JNE rqgo
	JPS rqgo
	// dd == 0: keep L
	LEAQ (SI)(R10*4), SI
	ADDQ R10, DI
	INCQ BX
	JMP rqsub

rqgo:
	SHUFPS $0, X7, X7
	MOVSS (R9)(BX*4), X8
	SHUFPS $0, X8, X8
	MOVQ R10, DX

rq16:
	RQ4(0, X0)
	RQ4(16, X1)
	RQ4(32, X2)
	RQ4(48, X3)
	PACKSSLW X1, X0
	PACKSSLW X3, X2
	PACKUSWB X2, X0
	MOVOU X0, (DI)
	ADDQ $64, SI
	ADDQ $16, DI
	SUBQ $16, DX
	JGT rq16
	INCQ BX
	JMP rqsub

rqdone:
	RET
