//go:build !purego

#include "textflag.h"

// SSE2 kernels for the legacy 32-element block types (see legacy_amd64.go). Every float
// operation is the lane-wise version of the scalar operation in legacy.go, in the same order,
// so the results are identical. The kernels do not write the fp16 fields: they store the
// float32 d (and min) of block b in d[b] (m[b]) and the caller converts them. A kernel returns
// early, at the first block holding a NaN or an Inf (or, for Q8_0, one whose 1/d overflows),
// and leaves that block to the scalar code: the selection of max/min in C depends on the order
// of the scan when NaNs are present, and C's roundf is only emulated for finite products here.

// Constants built in registers.
#define BCAST(imm, X) MOVL $imm, AX; MOVD AX, X; PSHUFD $0, X, X

// ABSLOAD8 loads the block's 32 values at SI into X0..X7 and clears their sign bits (X15 = 0x7fffffff).
#define ABSLOAD8 \
	MOVUPS 0(SI), X0; ANDPS X15, X0; \
	MOVUPS 16(SI), X1; ANDPS X15, X1; \
	MOVUPS 32(SI), X2; ANDPS X15, X2; \
	MOVUPS 48(SI), X3; ANDPS X15, X3; \
	MOVUPS 64(SI), X4; ANDPS X15, X4; \
	MOVUPS 80(SI), X5; ANDPS X15, X5; \
	MOVUPS 96(SI), X6; ANDPS X15, X6; \
	MOVUPS 112(SI), X7; ANDPS X15, X7

// NONFINITE jumps to bail unless X0..X7 are all finite: their sum times zero is NaN exactly when
// one of them is NaN or Inf (or the sum overflows, which only sends a block to the scalar code).
// Uses X8; X10 must be zero.
#define NONFINITE(bail) \
	MOVAPS X0, X8; ADDPS X1, X8; ADDPS X2, X8; ADDPS X3, X8; \
	ADDPS X4, X8; ADDPS X5, X8; ADDPS X6, X8; ADDPS X7, X8; \
	MULPS X10, X8; CMPPS X8, X8, $3; MOVMSKPS X8, DX; TESTL DX, DX; JNZ bail

// HMAX8 leaves max(X0..X7) broadcast in X0 (values without NaN). Uses X1..X7.
#define HMAX8 \
	MAXPS X1, X0; MAXPS X3, X2; MAXPS X5, X4; MAXPS X7, X6; \
	MAXPS X2, X0; MAXPS X6, X4; MAXPS X4, X0; \
	MOVHLPS X0, X1; MAXPS X1, X0; MOVAPS X0, X1; SHUFPS $0x55, X1, X1; MAXPS X1, X0; \
	SHUFPS $0, X0, X0

// MASK32 packs the lane masks X1..X8 (elements 0..31) into the 32-bit DX, bit i = element i. Uses R9.
#define MASK32 \
	PACKSSLW X2, X1; PACKSSLW X4, X3; PACKSSWB X3, X1; PMOVMSKB X1, DX; \
	PACKSSLW X6, X5; PACKSSLW X8, X7; PACKSSWB X7, X5; PMOVMSKB X5, R9; \
	SHLL $16, R9; ORL R9, DX

// FIRSTABS sets DX to the index of the first element whose |v| equals X0 (broadcast).
#define FIRSTABS \
	MOVUPS 0(SI), X1; ANDPS X15, X1; CMPPS X0, X1, $0; \
	MOVUPS 16(SI), X2; ANDPS X15, X2; CMPPS X0, X2, $0; \
	MOVUPS 32(SI), X3; ANDPS X15, X3; CMPPS X0, X3, $0; \
	MOVUPS 48(SI), X4; ANDPS X15, X4; CMPPS X0, X4, $0; \
	MOVUPS 64(SI), X5; ANDPS X15, X5; CMPPS X0, X5, $0; \
	MOVUPS 80(SI), X6; ANDPS X15, X6; CMPPS X0, X6, $0; \
	MOVUPS 96(SI), X7; ANDPS X15, X7; CMPPS X0, X7, $0; \
	MOVUPS 112(SI), X8; ANDPS X15, X8; CMPPS X0, X8, $0; \
	MASK32; BSFL DX, DX

// QUANT16(off, dst) computes the 16 bytes (uint8)(int32)(x*X2 + X14) of the elements at off(SI):
// truncation toward zero (0x80000000 for NaN and out of range) and the low byte, as C's float
// to (u)int8_t conversions compile on x86-64. Uses X3..X6 besides dst; X13 = 0x000000ff.
#define QUANT16(off, dst) \
	MOVUPS off(SI), X3; MULPS X2, X3; ADDPS X14, X3; CVTTPS2PL X3, X3; PAND X13, X3; \
	MOVUPS off+16(SI), X4; MULPS X2, X4; ADDPS X14, X4; CVTTPS2PL X4, X4; PAND X13, X4; \
	MOVUPS off+32(SI), X5; MULPS X2, X5; ADDPS X14, X5; CVTTPS2PL X5, X5; PAND X13, X5; \
	MOVUPS off+48(SI), X6; MULPS X2, X6; ADDPS X14, X6; CVTTPS2PL X6, X6; PAND X13, X6; \
	PACKSSLW X4, X3; PACKSSLW X6, X5; PACKUSWB X5, X3; MOVOU X3, dst

// QUANT16M is QUANT16 for (x - X9)*X2 + X14.
#define QUANT16M(off, dst) \
	MOVUPS off(SI), X3; SUBPS X9, X3; MULPS X2, X3; ADDPS X14, X3; CVTTPS2PL X3, X3; PAND X13, X3; \
	MOVUPS off+16(SI), X4; SUBPS X9, X4; MULPS X2, X4; ADDPS X14, X4; CVTTPS2PL X4, X4; PAND X13, X4; \
	MOVUPS off+32(SI), X5; SUBPS X9, X5; MULPS X2, X5; ADDPS X14, X5; CVTTPS2PL X5, X5; PAND X13, X5; \
	MOVUPS off+48(SI), X6; SUBPS X9, X6; MULPS X2, X6; ADDPS X14, X6; CVTTPS2PL X6, X6; PAND X13, X6; \
	PACKSSLW X4, X3; PACKSSLW X6, X5; PACKUSWB X5, X3; MOVOU X3, dst

// SMINB(r, lim, t1) sets r = MIN(lim, (int8_t)r) bytewise (signed compare); lim is clobbered.
#define SMINB(r, lim, t1) \
	MOVOU r, t1; PCMPGTB lim, t1; PAND t1, lim; PANDN r, t1; POR lim, t1; MOVOU t1, r

// ROUNDF(v, t1, t2, t3) turns the floats in v, |v| <= 2^22, into int32 roundf(v): truncate,
// then step away from zero when the fraction (exact) is at least 0.5. X15 = 0x7fffffff,
// X14 = 0.5, X12 = 1 (int32).
#define ROUNDF(v, t1, t2, t3) \
	MOVAPS v, t1; CVTTPS2PL t1, t1; CVTPL2PS t1, t2; \
	MOVAPS v, t3; SUBPS t2, t3; ANDPS X15, t3; \
	MOVAPS X14, t2; CMPPS t3, t2, $2; \
	PSRAL $31, v; POR X12, v; PAND t2, v; PADDL t1, v

// IDENT computes X2 = broadcast(d != 0 ? 1/d : 0) from the scalar d in X1. Uses X3, AX.
#define IDENT \
	MOVL $0x3f800000, AX; MOVD AX, X2; DIVSS X1, X2; \
	MOVAPS X1, X3; CMPSS X10, X3, $4; ANDPS X3, X2; SHUFPS $0, X2, X2

// func q4_0Blocks(dst *byte, src *float32, nb int, d *float32) int
TEXT ·q4_0Blocks(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVQ d+24(FP), R8
	XORQ BX, BX
	PCMPEQL X15, X15
	PSRLL $1, X15
	BCAST(0x41080000, X14) // 8.5
	PCMPEQL X13, X13
	PSRLL $24, X13
	BCAST(0x0f0f0f0f, X12)
	BCAST(0xf0f0f0f0, X11)
	XORPS X10, X10

q40loop:
	CMPQ BX, CX
	JGE q40done
	ABSLOAD8
	NONFINITE(q40done)
	HMAX8
	FIRSTABS
	// max = x[first] + 0: the element itself, but +0 when every |x| is 0 (C never updates
	// max from its initial +0 then).
	MOVSS (SI)(DX*4), X1
	ADDSS X10, X1
	MOVL $0xc1000000, AX // -8
	MOVD AX, X2
	DIVSS X2, X1
	MOVSS X1, (R8)(BX*4)
	IDENT
	QUANT16(0, X7)
	QUANT16(64, X8)
	MOVOU X12, X9
	SMINB(X7, X9, X3)
	MOVOU X12, X9
	SMINB(X8, X9, X3)
	PSLLW $4, X8
	PAND X11, X8
	POR X8, X7
	MOVOU X7, 2(DI)
	ADDQ $128, SI
	ADDQ $18, DI
	INCQ BX
	JMP q40loop

q40done:
	MOVQ BX, ret+32(FP)
	RET

// func q5_0Blocks(dst *byte, src *float32, nb int, d *float32) int
TEXT ·q5_0Blocks(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVQ d+24(FP), R8
	XORQ BX, BX
	PCMPEQL X15, X15
	PSRLL $1, X15
	BCAST(0x41840000, X14) // 16.5
	PCMPEQL X13, X13
	PSRLL $24, X13
	BCAST(0x1f1f1f1f, X12)
	BCAST(0x0f0f0f0f, X11)
	XORPS X10, X10

q50loop:
	CMPQ BX, CX
	JGE q50done
	ABSLOAD8
	NONFINITE(q50done)
	HMAX8
	FIRSTABS
	MOVSS (SI)(DX*4), X1
	ADDSS X10, X1
	MOVL $0xc1800000, AX // -16
	MOVD AX, X2
	DIVSS X2, X1
	MOVSS X1, (R8)(BX*4)
	IDENT
	QUANT16(0, X7)
	QUANT16(64, X8)
	MOVOU X12, X9
	SMINB(X7, X9, X3)
	MOVOU X12, X9
	SMINB(X8, X9, X3)
	// qh: bit 4 of each byte, elements 0..15 then 16..31.
	MOVOU X7, X3
	PSLLW $3, X3
	PMOVMSKB X3, DX
	MOVOU X8, X4
	PSLLW $3, X4
	PMOVMSKB X4, R9
	SHLL $16, R9
	ORL R9, DX
	MOVL DX, 2(DI)
	PAND X11, X7
	PAND X11, X8
	PSLLW $4, X8
	POR X8, X7
	MOVOU X7, 6(DI)
	ADDQ $128, SI
	ADDQ $22, DI
	INCQ BX
	JMP q50loop

q50done:
	MOVQ BX, ret+32(FP)
	RET

// MINMAX finds min (X8) and max (X9) of X0..X7 (no NaN), broadcast; X1..X7 are clobbered.
// Signed zeros are fixed by the caller.
#define MINMAX \
	MOVAPS X0, X8; MINPS X1, X8; MINPS X2, X8; MINPS X3, X8; \
	MINPS X4, X8; MINPS X5, X8; MINPS X6, X8; MINPS X7, X8; \
	MAXPS X1, X0; MAXPS X3, X2; MAXPS X5, X4; MAXPS X7, X6; \
	MAXPS X2, X0; MAXPS X6, X4; MAXPS X4, X0; \
	MOVHLPS X0, X1; MAXPS X1, X0; MOVAPS X0, X1; SHUFPS $0x55, X1, X1; MAXPS X1, X0; \
	SHUFPS $0, X0, X0; MOVAPS X0, X9; \
	MOVHLPS X8, X1; MINPS X1, X8; MOVAPS X8, X1; SHUFPS $0x55, X1, X1; MINPS X1, X8; \
	SHUFPS $0, X8, X8

// LOAD8 loads the block's 32 values into X0..X7.
#define LOAD8 \
	MOVUPS 0(SI), X0; MOVUPS 16(SI), X1; MOVUPS 32(SI), X2; MOVUPS 48(SI), X3; \
	MOVUPS 64(SI), X4; MOVUPS 80(SI), X5; MOVUPS 96(SI), X6; MOVUPS 112(SI), X7

// func q4_1Blocks(dst *byte, src *float32, nb int, d, m *float32) int
TEXT ·q4_1Blocks(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVQ d+24(FP), R8
	MOVQ m+32(FP), R10
	XORQ BX, BX
	BCAST(0x3f000000, X14) // 0.5
	PCMPEQL X13, X13
	PSRLL $24, X13
	XORPS X10, X10

q41loop:
	CMPQ BX, CX
	JGE q41done
	LOAD8
	NONFINITE(q41done)
	MINMAX
	CALL zerofix<>(SB)
	// d = (max - min) / 15
	MOVAPS X9, X1
	SUBSS X8, X1
	MOVL $0x41700000, AX // 15
	MOVD AX, X2
	DIVSS X2, X1
	MOVSS X1, (R8)(BX*4)
	MOVSS X8, (R10)(BX*4)
	IDENT
	MOVAPS X8, X9
	QUANT16M(0, X7)
	QUANT16M(64, X8)
	BCAST(0x0f0f0f0f, X12)
	MOVOU X12, X9
	SMINB(X7, X9, X3)
	MOVOU X12, X9
	SMINB(X8, X9, X3)
	BCAST(0xf0f0f0f0, X11)
	PSLLW $4, X8
	PAND X11, X8
	POR X8, X7
	MOVOU X7, 4(DI)
	ADDQ $128, SI
	ADDQ $20, DI
	INCQ BX
	JMP q41loop

q41done:
	MOVQ BX, ret+40(FP)
	RET

// func q5_1Blocks(dst *byte, src *float32, nb int, d, m *float32) int
TEXT ·q5_1Blocks(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVQ d+24(FP), R8
	MOVQ m+32(FP), R10
	XORQ BX, BX
	BCAST(0x3f000000, X14) // 0.5
	PCMPEQL X13, X13
	PSRLL $24, X13
	XORPS X10, X10

q51loop:
	CMPQ BX, CX
	JGE q51done
	LOAD8
	NONFINITE(q51done)
	MINMAX
	CALL zerofix<>(SB)
	MOVAPS X9, X1
	SUBSS X8, X1
	MOVL $0x41f80000, AX // 31
	MOVD AX, X2
	DIVSS X2, X1
	MOVSS X1, (R8)(BX*4)
	MOVSS X8, (R10)(BX*4)
	IDENT
	MOVAPS X8, X9
	QUANT16M(0, X7)
	QUANT16M(64, X8)
	MOVOU X7, X3
	PSLLW $3, X3
	PMOVMSKB X3, DX
	MOVOU X8, X4
	PSLLW $3, X4
	PMOVMSKB X4, R9
	SHLL $16, R9
	ORL R9, DX
	MOVL DX, 4(DI)
	BCAST(0x0f0f0f0f, X11)
	PAND X11, X7
	PAND X11, X8
	PSLLW $4, X8
	POR X8, X7
	MOVOU X7, 8(DI)
	ADDQ $128, SI
	ADDQ $24, DI
	INCQ BX
	JMP q51loop

q51done:
	MOVQ BX, ret+40(FP)
	RET

// zerofix replaces a zero min (X8) or max (X9), both broadcast, by the block's first zero
// element with its sign: C scans min from FLT_MAX with `<` and max from -FLT_MAX with `>`, so
// among equal zeros the first one wins. Block at SI; X10 = 0. Clobbers X0..X7, X11, X12, DX, R9.
TEXT zerofix<>(SB), NOSPLIT|NOFRAME, $0-0
	UCOMISS X10, X8
	JEQ zfslow
	UCOMISS X10, X9
	JEQ zfslow
	RET

zfslow:
	MOVAPS X8, X11
	MOVAPS X9, X12
	MOVUPS 0(SI), X1
	CMPPS X10, X1, $0
	MOVUPS 16(SI), X2
	CMPPS X10, X2, $0
	MOVUPS 32(SI), X3
	CMPPS X10, X3, $0
	MOVUPS 48(SI), X4
	CMPPS X10, X4, $0
	MOVUPS 64(SI), X5
	CMPPS X10, X5, $0
	MOVUPS 80(SI), X6
	CMPPS X10, X6, $0
	MOVUPS 96(SI), X7
	CMPPS X10, X7, $0
	MOVUPS 112(SI), X8
	CMPPS X10, X8, $0
	MASK32
	BSFL DX, DX
	MOVSS (SI)(DX*4), X0
	SHUFPS $0, X0, X0
	MOVAPS X11, X8
	MOVAPS X12, X9
	UCOMISS X10, X11
	JNE zfmax
	MOVAPS X0, X8

zfmax:
	UCOMISS X10, X12
	JNE zfret
	MOVAPS X0, X9

zfret:
	RET

// func q8_0Blocks(dst *byte, src *float32, nb int, d *float32) int
TEXT ·q8_0Blocks(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVQ d+24(FP), R8
	XORQ BX, BX
	PCMPEQL X15, X15
	PSRLL $1, X15
	BCAST(0x3f000000, X14) // 0.5
	PCMPEQL X13, X13
	PSRLL $24, X13
	PCMPEQL X12, X12
	PSRLL $31, X12 // 1
	XORPS X10, X10

q80loop:
	CMPQ BX, CX
	JGE q80done
	ABSLOAD8
	NONFINITE(q80done)
	HMAX8
	// d = amax / 127; id = d ? 1/d : 0, left to the scalar code when 1/d overflows.
	MOVAPS X0, X1
	MOVL $0x42fe0000, AX // 127
	MOVD AX, X2
	DIVSS X2, X1
	IDENT
	MOVAPS X2, X3
	MULSS X10, X3
	UCOMISS X3, X3
	JPS q80done
	MOVSS X1, (R8)(BX*4)
	// qs[j] = (int8_t)roundf(x*id): |x*id| <= 127 here, so roundf is trunc plus the sign when
	// the (exact) fraction is at least one half.
	MOVQ $0, DX

q80half:
	MOVUPS 0(SI)(DX*1), X3
	MULPS X2, X3
	MOVUPS 16(SI)(DX*1), X4
	MULPS X2, X4
	MOVUPS 32(SI)(DX*1), X5
	MULPS X2, X5
	MOVUPS 48(SI)(DX*1), X6
	MULPS X2, X6
	ROUNDF(X3, X7, X8, X9)
	ROUNDF(X4, X7, X8, X9)
	ROUNDF(X5, X7, X8, X9)
	ROUNDF(X6, X7, X8, X9)
	PAND X13, X3
	PAND X13, X4
	PAND X13, X5
	PAND X13, X6
	PACKSSLW X4, X3
	PACKSSLW X6, X5
	PACKUSWB X5, X3
	MOVQ DX, R9
	SHRQ $2, R9
	MOVOU X3, 2(DI)(R9*1)
	ADDQ $64, DX
	CMPQ DX, $128
	JLT q80half
	ADDQ $128, SI
	ADDQ $34, DI
	INCQ BX
	JMP q80loop

q80done:
	MOVQ BX, ret+32(FP)
	RET
