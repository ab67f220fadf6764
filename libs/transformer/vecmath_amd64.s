//go:build amd64 && !purego

#include "textflag.h"

// Vectorized e^x (Cephes expf: x = n·ln2 + r, degree-6 polynomial in r, times 2^n)
// and the loops built on it. Each function handles len &^ 15 (AVX-512) or len &^ 7
// (AVX2) elements; the Go wrappers finish the tail.

// expc holds each constant 8 times (32 bytes): AVX2 reads them as memory operands,
// AVX-512 broadcasts the first lane.
DATA expc<>+0(SB)/4, $0x42b0c0a5
DATA expc<>+4(SB)/4, $0x42b0c0a5
DATA expc<>+8(SB)/4, $0x42b0c0a5
DATA expc<>+12(SB)/4, $0x42b0c0a5
DATA expc<>+16(SB)/4, $0x42b0c0a5
DATA expc<>+20(SB)/4, $0x42b0c0a5
DATA expc<>+24(SB)/4, $0x42b0c0a5
DATA expc<>+28(SB)/4, $0x42b0c0a5
DATA expc<>+32(SB)/4, $0xc2aeac4f
DATA expc<>+36(SB)/4, $0xc2aeac4f
DATA expc<>+40(SB)/4, $0xc2aeac4f
DATA expc<>+44(SB)/4, $0xc2aeac4f
DATA expc<>+48(SB)/4, $0xc2aeac4f
DATA expc<>+52(SB)/4, $0xc2aeac4f
DATA expc<>+56(SB)/4, $0xc2aeac4f
DATA expc<>+60(SB)/4, $0xc2aeac4f
DATA expc<>+64(SB)/4, $0x3fb8aa3b
DATA expc<>+68(SB)/4, $0x3fb8aa3b
DATA expc<>+72(SB)/4, $0x3fb8aa3b
DATA expc<>+76(SB)/4, $0x3fb8aa3b
DATA expc<>+80(SB)/4, $0x3fb8aa3b
DATA expc<>+84(SB)/4, $0x3fb8aa3b
DATA expc<>+88(SB)/4, $0x3fb8aa3b
DATA expc<>+92(SB)/4, $0x3fb8aa3b
DATA expc<>+96(SB)/4, $0x3f318000
DATA expc<>+100(SB)/4, $0x3f318000
DATA expc<>+104(SB)/4, $0x3f318000
DATA expc<>+108(SB)/4, $0x3f318000
DATA expc<>+112(SB)/4, $0x3f318000
DATA expc<>+116(SB)/4, $0x3f318000
DATA expc<>+120(SB)/4, $0x3f318000
DATA expc<>+124(SB)/4, $0x3f318000
DATA expc<>+128(SB)/4, $0xb95e8083
DATA expc<>+132(SB)/4, $0xb95e8083
DATA expc<>+136(SB)/4, $0xb95e8083
DATA expc<>+140(SB)/4, $0xb95e8083
DATA expc<>+144(SB)/4, $0xb95e8083
DATA expc<>+148(SB)/4, $0xb95e8083
DATA expc<>+152(SB)/4, $0xb95e8083
DATA expc<>+156(SB)/4, $0xb95e8083
DATA expc<>+160(SB)/4, $0x39506967
DATA expc<>+164(SB)/4, $0x39506967
DATA expc<>+168(SB)/4, $0x39506967
DATA expc<>+172(SB)/4, $0x39506967
DATA expc<>+176(SB)/4, $0x39506967
DATA expc<>+180(SB)/4, $0x39506967
DATA expc<>+184(SB)/4, $0x39506967
DATA expc<>+188(SB)/4, $0x39506967
DATA expc<>+192(SB)/4, $0x3ab743ce
DATA expc<>+196(SB)/4, $0x3ab743ce
DATA expc<>+200(SB)/4, $0x3ab743ce
DATA expc<>+204(SB)/4, $0x3ab743ce
DATA expc<>+208(SB)/4, $0x3ab743ce
DATA expc<>+212(SB)/4, $0x3ab743ce
DATA expc<>+216(SB)/4, $0x3ab743ce
DATA expc<>+220(SB)/4, $0x3ab743ce
DATA expc<>+224(SB)/4, $0x3c088908
DATA expc<>+228(SB)/4, $0x3c088908
DATA expc<>+232(SB)/4, $0x3c088908
DATA expc<>+236(SB)/4, $0x3c088908
DATA expc<>+240(SB)/4, $0x3c088908
DATA expc<>+244(SB)/4, $0x3c088908
DATA expc<>+248(SB)/4, $0x3c088908
DATA expc<>+252(SB)/4, $0x3c088908
DATA expc<>+256(SB)/4, $0x3d2aa9c1
DATA expc<>+260(SB)/4, $0x3d2aa9c1
DATA expc<>+264(SB)/4, $0x3d2aa9c1
DATA expc<>+268(SB)/4, $0x3d2aa9c1
DATA expc<>+272(SB)/4, $0x3d2aa9c1
DATA expc<>+276(SB)/4, $0x3d2aa9c1
DATA expc<>+280(SB)/4, $0x3d2aa9c1
DATA expc<>+284(SB)/4, $0x3d2aa9c1
DATA expc<>+288(SB)/4, $0x3e2aaaaa
DATA expc<>+292(SB)/4, $0x3e2aaaaa
DATA expc<>+296(SB)/4, $0x3e2aaaaa
DATA expc<>+300(SB)/4, $0x3e2aaaaa
DATA expc<>+304(SB)/4, $0x3e2aaaaa
DATA expc<>+308(SB)/4, $0x3e2aaaaa
DATA expc<>+312(SB)/4, $0x3e2aaaaa
DATA expc<>+316(SB)/4, $0x3e2aaaaa
DATA expc<>+320(SB)/4, $0x3f000000
DATA expc<>+324(SB)/4, $0x3f000000
DATA expc<>+328(SB)/4, $0x3f000000
DATA expc<>+332(SB)/4, $0x3f000000
DATA expc<>+336(SB)/4, $0x3f000000
DATA expc<>+340(SB)/4, $0x3f000000
DATA expc<>+344(SB)/4, $0x3f000000
DATA expc<>+348(SB)/4, $0x3f000000
DATA expc<>+352(SB)/4, $0x3f800000
DATA expc<>+356(SB)/4, $0x3f800000
DATA expc<>+360(SB)/4, $0x3f800000
DATA expc<>+364(SB)/4, $0x3f800000
DATA expc<>+368(SB)/4, $0x3f800000
DATA expc<>+372(SB)/4, $0x3f800000
DATA expc<>+376(SB)/4, $0x3f800000
DATA expc<>+380(SB)/4, $0x3f800000
DATA expc<>+384(SB)/4, $0x0000007f
DATA expc<>+388(SB)/4, $0x0000007f
DATA expc<>+392(SB)/4, $0x0000007f
DATA expc<>+396(SB)/4, $0x0000007f
DATA expc<>+400(SB)/4, $0x0000007f
DATA expc<>+404(SB)/4, $0x0000007f
DATA expc<>+408(SB)/4, $0x0000007f
DATA expc<>+412(SB)/4, $0x0000007f
GLOBL expc<>(SB), RODATA|NOPTR, $416

#define HI 0
#define LO 32
#define LOG2E 64
#define C1 96
#define C2 128
#define P0 160
#define P1 192
#define P2 224
#define P3 256
#define P4 288
#define P5 320
#define ONE 352
#define I127 384

// AVX-512: constants in Z16..Z27.
#define LOADC512 \
	VBROADCASTSS expc<>+HI(SB), Z16 \
	VBROADCASTSS expc<>+LO(SB), Z17 \
	VBROADCASTSS expc<>+LOG2E(SB), Z18 \
	VBROADCASTSS expc<>+C1(SB), Z19 \
	VBROADCASTSS expc<>+C2(SB), Z20 \
	VBROADCASTSS expc<>+P0(SB), Z21 \
	VBROADCASTSS expc<>+P1(SB), Z22 \
	VBROADCASTSS expc<>+P2(SB), Z23 \
	VBROADCASTSS expc<>+P3(SB), Z24 \
	VBROADCASTSS expc<>+P4(SB), Z25 \
	VBROADCASTSS expc<>+P5(SB), Z26 \
	VBROADCASTSS expc<>+ONE(SB), Z27

// EXP512: Z0 = e^Z0; clobbers Z1..Z3.
#define EXP512 \
	VMINPS Z16, Z0, Z0 \
	VMAXPS Z17, Z0, Z0 \
	VMULPS Z18, Z0, Z1 \
	VRNDSCALEPS $0, Z1, Z1 \
	VFNMADD231PS Z19, Z1, Z0 \
	VFNMADD231PS Z20, Z1, Z0 \
	VMULPS Z0, Z0, Z2 \
	VMOVAPS Z21, Z3 \
	VFMADD213PS Z22, Z0, Z3 \
	VFMADD213PS Z23, Z0, Z3 \
	VFMADD213PS Z24, Z0, Z3 \
	VFMADD213PS Z25, Z0, Z3 \
	VFMADD213PS Z26, Z0, Z3 \
	VFMADD213PS Z0, Z2, Z3 \
	VADDPS Z27, Z3, Z3 \
	VSCALEFPS Z1, Z3, Z0

// HSUM512: X0 = sum of the lanes of Z30.
#define HSUM512 \
	VEXTRACTF64X4 $1, Z30, Y1 \
	VADDPS Y1, Y30, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VHADDPS X0, X0, X0 \
	VHADDPS X0, X0, X0

// EXP256: Y0 = e^Y0; clobbers Y1..Y3.
#define EXP256 \
	VMINPS expc<>+HI(SB), Y0, Y0 \
	VMAXPS expc<>+LO(SB), Y0, Y0 \
	VMULPS expc<>+LOG2E(SB), Y0, Y1 \
	VROUNDPS $0, Y1, Y1 \
	VFNMADD231PS expc<>+C1(SB), Y1, Y0 \
	VFNMADD231PS expc<>+C2(SB), Y1, Y0 \
	VMULPS Y0, Y0, Y2 \
	VMOVUPS expc<>+P0(SB), Y3 \
	VFMADD213PS expc<>+P1(SB), Y0, Y3 \
	VFMADD213PS expc<>+P2(SB), Y0, Y3 \
	VFMADD213PS expc<>+P3(SB), Y0, Y3 \
	VFMADD213PS expc<>+P4(SB), Y0, Y3 \
	VFMADD213PS expc<>+P5(SB), Y0, Y3 \
	VFMADD213PS Y0, Y2, Y3 \
	VADDPS expc<>+ONE(SB), Y3, Y3 \
	VCVTPS2DQ Y1, Y1 \
	VPADDD expc<>+I127(SB), Y1, Y1 \
	VPSLLD $23, Y1, Y1 \
	VMULPS Y1, Y3, Y0

// HSUM256: X0 = sum of the lanes of Y14.
#define HSUM256 \
	VEXTRACTF128 $1, Y14, X1 \
	VADDPS X1, X14, X0 \
	VHADDPS X0, X0, X0 \
	VHADDPS X0, X0, X0

// func expSubSumAVX512(x []float32, m float32) float32
// x[i] = e^(x[i]-m) for the first len&^15 elements; returns their sum.
TEXT ·expSubSumAVX512(SB), NOSPLIT, $0-36
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	VBROADCASTSS m+24(FP), Z31
	LOADC512
	VPXORD Z30, Z30, Z30
	SHRQ $4, CX
	JZ esd512
esl512:
	VMOVUPS (SI), Z0
	VSUBPS Z31, Z0, Z0
	EXP512
	VMOVUPS Z0, (SI)
	VADDPS Z0, Z30, Z30
	ADDQ $64, SI
	DECQ CX
	JNZ esl512
esd512:
	HSUM512
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func sumExpSubAVX512(x []float32, m float32) float32
// Returns Σ e^(x[i]-m) over the first len&^15 elements.
TEXT ·sumExpSubAVX512(SB), NOSPLIT, $0-36
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	VBROADCASTSS m+24(FP), Z31
	LOADC512
	VPXORD Z30, Z30, Z30
	SHRQ $4, CX
	JZ ssd512
ssl512:
	VMOVUPS (SI), Z0
	VSUBPS Z31, Z0, Z0
	EXP512
	VADDPS Z0, Z30, Z30
	ADDQ $64, SI
	DECQ CX
	JNZ ssl512
ssd512:
	HSUM512
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func siluMulAVX512(g, u []float32)
// g[i] = g[i]/(1+e^-g[i]) · u[i] for the first len(g)&^15 elements.
TEXT ·siluMulAVX512(SB), NOSPLIT, $0-48
	MOVQ g_base+0(FP), SI
	MOVQ g_len+8(FP), CX
	MOVQ u_base+24(FP), DI
	LOADC512
	VPXORD Z29, Z29, Z29
	SHRQ $4, CX
	JZ smd512
sml512:
	VMOVUPS (SI), Z4
	VSUBPS Z4, Z29, Z0
	EXP512
	VADDPS Z27, Z0, Z0
	VDIVPS Z0, Z4, Z4
	VMULPS (DI), Z4, Z4
	VMOVUPS Z4, (SI)
	ADDQ $64, SI
	ADDQ $64, DI
	DECQ CX
	JNZ sml512
smd512:
	VZEROUPPER
	RET

// func maxAVX512(x []float32) float32
// Max of the first len&^15 (≥ 16) elements.
TEXT ·maxAVX512(SB), NOSPLIT, $0-28
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	SHRQ $4, CX
	VMOVUPS (SI), Z30
	ADDQ $64, SI
	DECQ CX
	JZ mxd512
mxl512:
	VMAXPS (SI), Z30, Z30
	ADDQ $64, SI
	DECQ CX
	JNZ mxl512
mxd512:
	VEXTRACTF64X4 $1, Z30, Y1
	VMAXPS Y1, Y30, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func expSubSumAVX2(x []float32, m float32) float32
TEXT ·expSubSumAVX2(SB), NOSPLIT, $0-36
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	VBROADCASTSS m+24(FP), Y15
	VXORPS Y14, Y14, Y14
	SHRQ $3, CX
	JZ esd256
esl256:
	VMOVUPS (SI), Y0
	VSUBPS Y15, Y0, Y0
	EXP256
	VMOVUPS Y0, (SI)
	VADDPS Y0, Y14, Y14
	ADDQ $32, SI
	DECQ CX
	JNZ esl256
esd256:
	HSUM256
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func sumExpSubAVX2(x []float32, m float32) float32
TEXT ·sumExpSubAVX2(SB), NOSPLIT, $0-36
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	VBROADCASTSS m+24(FP), Y15
	VXORPS Y14, Y14, Y14
	SHRQ $3, CX
	JZ ssd256
ssl256:
	VMOVUPS (SI), Y0
	VSUBPS Y15, Y0, Y0
	EXP256
	VADDPS Y0, Y14, Y14
	ADDQ $32, SI
	DECQ CX
	JNZ ssl256
ssd256:
	HSUM256
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET

// func siluMulAVX2(g, u []float32)
TEXT ·siluMulAVX2(SB), NOSPLIT, $0-48
	MOVQ g_base+0(FP), SI
	MOVQ g_len+8(FP), CX
	MOVQ u_base+24(FP), DI
	VXORPS Y13, Y13, Y13
	SHRQ $3, CX
	JZ smd256
sml256:
	VMOVUPS (SI), Y4
	VSUBPS Y4, Y13, Y0
	EXP256
	VADDPS expc<>+ONE(SB), Y0, Y0
	VDIVPS Y0, Y4, Y4
	VMULPS (DI), Y4, Y4
	VMOVUPS Y4, (SI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ sml256
smd256:
	VZEROUPPER
	RET

// func maxAVX2(x []float32) float32
// Max of the first len&^7 (≥ 8) elements.
TEXT ·maxAVX2(SB), NOSPLIT, $0-28
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	SHRQ $3, CX
	VMOVUPS (SI), Y14
	ADDQ $32, SI
	DECQ CX
	JZ mxd256
mxl256:
	VMAXPS (SI), Y14, Y14
	ADDQ $32, SI
	DECQ CX
	JNZ mxl256
mxd256:
	VEXTRACTF128 $1, Y14, X1
	VMAXPS X1, X14, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET
