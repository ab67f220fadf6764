// Decoder-layer kernels. Compiled by NVRTC with --fmad=false, so that elementwise float32
// expressions round as libs/transformer's Go code does. Matrices are row-major.

typedef unsigned long long idx_t;
#define FULL 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ double warp_sum_d(double v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
	return v;
}
__device__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
	return v;
}
__device__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
	return v;
}

// rms_norm: y[r] = w·(x[r]·rsqrt(mean(x[r]²)+eps)) for rows of n values, as transformer's
// rmsNormRow (mean accumulated in float64, held in float32 before eps). One block of 256
// threads per row (rows looped over the grid).
extern "C" __global__ void rms_norm(float *y, const float *x, const float *w, int rows, int n, double eps) {
	__shared__ double part[8];
	for (int r = blockIdx.x; r < rows; r += gridDim.x) {
		const float *xr = x + (idx_t)r * n;
		double s = 0;
		for (int i = threadIdx.x; i < n; i += blockDim.x) s += (double)xr[i] * (double)xr[i];
		s = warp_sum_d(s);
		if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
		__syncthreads();
		double t = 0;
		for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += part[i];
		__syncthreads();
		float mean = (float)(t / (double)n);
		float inv = (float)(1.0 / sqrt((double)mean + eps));
		float *yr = y + (idx_t)r * n;
		for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv);
	}
}

// add_bias: y[r][c] += b[c].
extern "C" __global__ void add_bias(float *y, const float *b, long long rows, int n) {
	long long total = rows * n;
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x)
		y[i] += b[i % n];
}

// add: y = a + b elementwise (the residual stream).
extern "C" __global__ void add(float *y, const float *a, const float *b, long long n) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
		y[i] = a[i] + b[i];
}

// silu_mul: g = silu(g)·u, as transformer's siluMulRange: x / (1 + e^−x) · u.
extern "C" __global__ void silu_mul(float *g, const float *u, long long n) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
		float x = g[i];
		g[i] = x / (1.0f + expf(-x)) * u[i];
	}
}

// norm_rope: for each row r (position r % seq) and head of x (rows × heads·hd), the optional
// per-head RMSNorm with weight nw (Qwen3; nw null for none), then the rotation of pairs
// (i, i+half), i < half, with cos/sin tables of seq×half values. One warp per head; blocks of
// 128 threads, rows looped over the grid.
extern "C" __global__ void norm_rope(float *x, int rows, int seq, int heads, int hd, const float *nw, double eps,
                                     const float *cosT, const float *sinT, int half) {
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
	for (int r = blockIdx.x; r < rows; r += gridDim.x) {
		int pos = r % seq;
		const float *cs = cosT + (idx_t)pos * half, *sn = sinT + (idx_t)pos * half;
		for (int h = warp; h < heads; h += warps) {
			float *v = x + (idx_t)r * heads * hd + (idx_t)h * hd;
			if (nw) {
				double s = 0;
				for (int i = lane; i < hd; i += 32) s += (double)v[i] * (double)v[i];
				s = warp_sum_d(s);
				float mean = (float)(s / (double)hd);
				float inv = (float)(1.0 / sqrt((double)mean + eps));
				for (int i = lane; i < hd; i += 32) v[i] = nw[i] * (v[i] * inv);
				__syncwarp();
			}
			for (int i = lane; i < half; i += 32) {
				float a = v[i], b = v[i + half];
				v[i] = a * cs[i] - b * sn[i];
				v[i + half] = b * cs[i] + a * sn[i];
			}
			__syncwarp();
		}
	}
}

#define AQ 8       // queries (warps) per block
#define AK 32      // keys per tile
#define AMAXT 8    // head_dim ≤ 32·AMAXT

// attention: causal grouped-query attention softmax(q·kᵀ/√hd)·v with an online softmax.
// q and out are rows × heads·hd, k and v rows × kvHeads·hd; query head h reads kv head
// h/(heads/kvHeads); window > 0 limits query i to keys j with i−window < j ≤ i. Grid:
// x = query blocks of AQ positions, y = batch·heads; one warp per query. Dynamic shared
// memory: K tile AK×(hd+1), V tile AK×hd, q AQ×hd, p AQ×AK floats.
extern "C" __global__ void attention(float *out, const float *q, const float *k, const float *v,
                                     int seq, int heads, int kvHeads, int hd, int window, float scale) {
	extern __shared__ float smem[];
	float *Ks = smem, *Vs = Ks + AK * (hd + 1), *Qs = Vs + AK * hd, *Ps = Qs + AQ * hd;
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int b = blockIdx.y / heads, h = blockIdx.y % heads, g = h / (heads / kvHeads);
	int q0 = blockIdx.x * AQ;
	int qi = q0 + warp; // this warp's query position
	bool live = qi < seq;
	int qd = heads * hd, kd = kvHeads * hd;
	idx_t base = (idx_t)b * seq;
	// q scaled as the CPU packs it: (scale·q)·k.
	for (int e = threadIdx.x; e < AQ * hd; e += blockDim.x) {
		int r = e / hd, d = e % hd;
		Qs[e] = q0 + r < seq ? scale * q[(base + q0 + r) * qd + (idx_t)h * hd + d] : 0.0f;
	}
	float m = NEG_INF, l = 0, o[AMAXT];
	for (int t = 0; t < AMAXT; t++) o[t] = 0;
	int qLast = min(seq, q0 + AQ) - 1;
	int kFirst = window > 0 ? max(0, q0 - window + 1) : 0;
	int lo = window > 0 ? qi - window + 1 : 0; // this query's first key
	for (int k0 = kFirst; k0 <= qLast; k0 += AK) {
		__syncthreads(); // the previous tile is consumed (and Qs written)
		for (int e = threadIdx.x; e < AK * hd; e += blockDim.x) {
			int j = e / hd, d = e % hd;
			bool in = k0 + j <= qLast;
			idx_t src = (base + k0 + j) * kd + (idx_t)g * hd + d;
			Ks[j * (hd + 1) + d] = in ? k[src] : 0.0f;
			Vs[j * hd + d] = in ? v[src] : 0.0f;
		}
		__syncthreads();
		int j = k0 + lane;
		bool valid = live && j <= qi && j >= lo;
		float s = NEG_INF;
		if (valid) {
			const float *qs = Qs + warp * hd, *ks = Ks + lane * (hd + 1);
			float acc = 0;
			for (int d = 0; d < hd; d++) acc += qs[d] * ks[d];
			s = acc;
		}
		float mt = warp_max(s);
		float mn = fmaxf(m, mt);
		float p = valid ? expf(s - mn) : 0.0f;
		float corr = m == NEG_INF ? 0.0f : expf(m - mn);
		if (mn == NEG_INF) corr = 1.0f; // no visible key yet: nothing to rescale
		l = l * corr + warp_sum(p);
		Ps[warp * AK + lane] = p;
		__syncwarp();
		for (int t = 0; t < AMAXT; t++) {
			int d = lane + 32 * t;
			if (d >= hd) break;
			float acc = o[t] * corr;
			for (int jj = 0; jj < AK; jj++) acc += Ps[warp * AK + jj] * Vs[jj * hd + d];
			o[t] = acc;
		}
		m = mn;
		__syncwarp();
	}
	if (live) {
		float inv = 1.0f / l;
		for (int t = 0; t < AMAXT; t++) {
			int d = lane + 32 * t;
			if (d >= hd) break;
			out[(base + qi) * qd + (idx_t)h * hd + d] = o[t] * inv;
		}
	}
}

// attn_pack: the attention's GEMM layout of a chunk of whole sequences. The plain layout is
// rows × groups·width (rows = sequences·seq); the packed one holds, per sequence b and group
// g, the seq × width block of g's columns: packed[((b·groups + g)·seq + i)·width + e] =
// scale·plain[(b·seq + i)·groups·width + g·width + e]. For q, groups are the kv heads and width
// the r = heads/kvHeads query heads of a group (so a group's queries are seq·r rows of hd, query
// head hh of position i in row i·r+hh); for k and v, width is hd. unpack = 1 goes back (packed
// src into plain dst, scale ignored).
extern "C" __global__ void attn_pack(float *dst, const float *src, long long rows, int seq, int groups, int width, float scale, int unpack) {
	long long total = rows * groups * width;
	for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
		long long u = t / width;
		int e = (int)(t % width), i = (int)(u % seq);
		long long v = u / seq;
		int g = (int)(v % groups);
		long long plain = ((v / groups * seq + i) * groups + g) * width + e;
		if (unpack)
			dst[plain] = src[t];
		else
			dst[t] = scale * src[plain];
	}
}

// attn_softmax: row ρ of the scores s (rows of seq keys; query position i = (ρ/r) % seq)
// becomes softmax over its visible keys lo ≤ j ≤ i (lo = i−window+1 with a window, else 0),
// as transformer's softmaxRow: max, e^(x−max) summed in float32, times 1/sum; every other key
// up to the end of i's query block of qb positions (what the p·v GEMM reads) is set to 0 (the
// scores GEMM may not have written it). One warp per row.
extern "C" __global__ void attn_softmax(float *s, long long rows, int seq, int r, int window, int qb) {
	int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
	for (long long row = (long long)blockIdx.x * warps + (threadIdx.x >> 5); row < rows; row += (long long)gridDim.x * warps) {
		float *x = s + row * seq;
		int i = (int)((row / r) % seq);
		int lo = window > 0 ? max(0, i - window + 1) : 0;
		float m = NEG_INF;
		for (int j = lo + lane; j <= i; j += 32) m = fmaxf(m, x[j]);
		m = warp_max(m);
		float sum = 0;
		for (int j = lo + lane; j <= i; j += 32) {
			float e = expf(x[j] - m);
			x[j] = e;
			sum += e;
		}
		float inv = 1.0f / warp_sum(sum);
		int end = min(seq, (i / qb + 1) * qb);
		for (int j = lane; j < end; j += 32) x[j] = (j >= lo && j <= i) ? x[j] * inv : 0.0f;
	}
}

// nll: out[r] = log Σ exp(logits[r]) − logits[r][target[r]] (natural log), the max taken
// first and the sum in float64, as transformer's NLL. One block of 256 threads per row (rows
// looped over the grid).
extern "C" __global__ void nll(double *out, const float *logits, const int *target, int rows, int vocab) {
	__shared__ float pm[8];
	__shared__ double ps[8];
	int warps = blockDim.x >> 5;
	for (int r = blockIdx.x; r < rows; r += gridDim.x) {
		const float *x = logits + (idx_t)r * vocab;
		float m = NEG_INF;
		for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, x[i]);
		m = warp_max(m);
		if ((threadIdx.x & 31) == 0) pm[threadIdx.x >> 5] = m;
		__syncthreads();
		m = pm[0];
		for (int i = 1; i < warps; i++) m = fmaxf(m, pm[i]);
		double s = 0;
		for (int i = threadIdx.x; i < vocab; i += blockDim.x) s += exp((double)(x[i] - m));
		s = warp_sum_d(s);
		if ((threadIdx.x & 31) == 0) ps[threadIdx.x >> 5] = s;
		__syncthreads();
		if (threadIdx.x == 0) {
			double t = 0;
			for (int i = 0; i < warps; i++) t += ps[i];
			out[r] = (double)m + log(t) - (double)x[target[r]];
		}
		__syncthreads(); // pm and ps are reused by the next row
	}
}

// ---- AWQ (libs/awq's arithmetic; awq.go) ----

__device__ float warp_min(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(FULL, v, o));
	return v;
}

// f16r rounds x to the nearest half-precision value (ties to even, subnormals, overflow to
// ±Inf) and returns it as a float: libs/awq's f16, bit for bit.
__device__ float f16r(float x) {
	unsigned b = __float_as_uint(x);
	int e = (int)((b >> 23) & 0xffu) - 127;
	if (e == 128) return x; // Inf or NaN
	if (e >= -14) {
		b += 0x0fffu + ((b >> 13) & 1u);
		b &= ~0x1fffu;
		if ((int)((b >> 23) & 0xffu) - 127 > 15) return copysignf(__int_as_float(0x7f800000), x);
		return __uint_as_float(b);
	}
	return (float)(rint((double)x * 16777216.0) / 16777216.0);
}

// half_bits: the IEEE half bit pattern of x rounded to nearest (ties to even), values beyond
// ±65504 saturated.
__device__ unsigned short half_bits(float x) {
	float h = f16r(fminf(fmaxf(x, -65504.0f), 65504.0f));
	unsigned b = __float_as_uint(h), sign = (b >> 16) & 0x8000u;
	float a = fabsf(h);
	if (a < 6.103515625e-05f) // subnormal or zero: a multiple of 2^-24
		return (unsigned short)(sign | (unsigned)(a * 16777216.0f));
	return (unsigned short)(sign | ((((b >> 23) & 0xffu) - 112u) << 10) | ((b >> 13) & 0x3ffu));
}

// half_value: the value of the IEEE half bit pattern h.
__device__ float half_value(unsigned short h) {
	unsigned sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
	if (e == 31) return __uint_as_float(sign | 0x7f800000u | (m << 13)); // Inf or NaN
	if (e == 0) return copysignf((float)m / 16777216.0f, __uint_as_float(sign | 0x3f800000u));
	return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

// to_half: dst = half_bits(src) (the AWQ grid's half-precision products, Options.AWQHalf).
extern "C" __global__ void to_half(unsigned short *dst, const float *src, long long n) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
		dst[i] = half_bits(src[i]);
}

// silu_mul_half: g = half(silu(g)·u) on half bit patterns: the MLP's hidden in the AWQ half
// grid, from gate and up products that cuBLAS rounded to half (as fp16 forwards have them).
extern "C" __global__ void silu_mul_half(unsigned short *g, const unsigned short *u, long long n) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
		float x = half_value(g[i]);
		g[i] = half_bits(x / (1.0f + expf(-x)) * half_value(u[i]));
	}
}

// half2_bits: half_bits(lo) | half_bits(hi) << 16 for finite |lo|, |hi| ≤ 65504, in one
// instruction where the device has it (the same rounding: to nearest, ties to even).
__device__ unsigned half2_bits(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	unsigned r;
	asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
	return r;
#else
	return half_bits(lo) | (unsigned)half_bits(hi) << 16;
#endif
}

#ifdef __CUDA_ARCH__
// mma16816: d += a·b on the tensor cores, a a 16×16 half tile (row major), b 16×8 (column
// major), d float32, each spread over the warp as PTX's mma.m16n8k16 lays it out: lane
// (g, t) = (lane/4, lane%4) holds a[g][2t..2t+1], a[g+8][2t..], a[g][2t+8..], a[g+8][2t+8..]
// (two halves a register, the lower column in the low bits), b[2t..2t+1][g] and b[2t+8..][g],
// and d[g][2t..2t+1], d[g+8][2t..2t+1]. A warp-wide operation: every lane calls it.
__device__ void mma16816(float *d, const unsigned *a, const unsigned *b) {
#if __CUDA_ARCH__ >= 800
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
	             : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
	__trap(); // the Go side launches flash_attention on compute capability 8.0 and later only
#endif
}

// ldsm4: PTX's ldmatrix.x4 (.trans when trans): lane ℓ gives the shared address of row ℓ%8 of
// 8×8 half matrix ℓ/8 (16 bytes, 16-byte aligned); register i gets matrix i's mma fragment,
// elements (ℓ/4, 2(ℓ%4)..2(ℓ%4)+1), or (2(ℓ%4)..2(ℓ%4)+1, ℓ/4) transposed. Warp-wide.
__device__ void ldsm4(unsigned *r, const unsigned short *row, bool trans) {
#if __CUDA_ARCH__ >= 800
	unsigned a;
	asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(row));
	if (trans)
		asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
		             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
	else
		asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
		             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#else
	__trap(); // as mma16816
#endif
}

// cp_async16: PTX's cp.async of 16 bytes from global src to shared dst, asynchronous until a
// cp_async_wait_prior of a later commit; zeros instead when !in (src is then not read).
__device__ void cp_async16(void *dst, const void *src, bool in) {
#if __CUDA_ARCH__ >= 800
	unsigned a;
	asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(dst));
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(a), "l"(src), "r"(in ? 16 : 0));
#else
	__trap(); // as mma16816
#endif
}

// cp_async_commit closes this thread's group of cp_async16 copies issued since the last one.
__device__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
	asm volatile("cp.async.commit_group;");
#endif
}

// cp_async_wait_prior waits for this thread's committed groups but the last one.
__device__ void cp_async_wait_prior() {
#if __CUDA_ARCH__ >= 800
	asm volatile("cp.async.wait_group 1;" ::: "memory");
#endif
}
#endif

#define FM 2                 // 16-row m-tiles per warp
#define FQ (64 * FM)         // queries per flash_attention block: 4 warps of 16·FM
#define FK 64                // keys per tile
#define FMAXD 128            // head_dim ≤ FMAXD, a multiple of 16
#define FKS (FMAXD + 8)      // halves per row of the q, K and V tiles (rows 4 banks apart)
#define FTILE (FK * FKS)     // halves per K or V tile

// flash_attention: the attention of the AWQ grid's half-precision mode (Options.AWQHalf), as
// llm-awq's fp16 forward computes it: q, k and v in half, the scores q·k accumulated in float32
// on the tensor cores, an online softmax in float32 (no scores in memory), the probabilities
// rounded to half for p·v, float32 accumulators; causal, grouped-query, window as in attention.
// q, k, v: half bit patterns in the plain layouts (rows × heads·hd, rows × kvHeads·hd); out:
// float32 rows × heads·hd. Grid: x = query blocks of FQ, y = batch·heads; 128 threads, warp w
// the block's queries 16·FM·w.. in FM m-tiles of 16 rows (each K and V fragment read from
// shared memory serves FM tiles' products).
//
// The softmax works in base 2 on the raw scores: exp(scale·(s − m)) = 2^(s·c − m·c) with
// c = scale·log2(e), one fused multiply-add and one exp2 a score. Only tiles that cross the
// diagonal or the window's edge for some row of the warp are masked; a warp skips the tiles
// none of its rows sees.
//
// Dynamic shared memory (FQ·FKS + 4·FTILE halves): the block's q rows, then two stages of a K
// and a V tile: the next tile's copies (cp.async) are in flight while this one is computed,
// and no tile passes through registers.
//
// flash_attention_128 is the same for heads of 128 known when compiled (HD): no run-time
// bounds or divisions inside the unrolled loops, which made it 1.5x faster on an H100
// (BenchmarkAttention: 1.57 ms against 2.43 ms).
template <int HD>
__device__ void flash_body(float *out, const unsigned short *q, const unsigned short *k, const unsigned short *v, int seq,
                           int heads, int kvHeads, int hdArg, int window, float scale) {
	const int hd = HD > 0 ? HD : hdArg;
	extern __shared__ float smem[];
	unsigned short *Qs = (unsigned short *)smem, *tiles = Qs + FQ * FKS; // stage st: K at 2·st·FTILE, V after it
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
	int b = blockIdx.y / heads, h = blockIdx.y % heads, g = h / (heads / kvHeads);
	int q0 = blockIdx.x * FQ, qd = heads * hd, kd = kvHeads * hd, ks = hd / 16, cpr = hd / 8; // 16-byte pieces a row
	idx_t base = (idx_t)b * seq;
	int w0 = q0 + warp * 16 * FM, wLast = w0 + 16 * FM - 1; // the warp's rows; m-tile i's lane rows w0+16i+gid, +8
	const float c2 = scale * 1.4426950408889634f;           // scale·log2(e)
	int qLast = min(seq, q0 + FQ) - 1;
	int kFirst = window > 0 ? max(0, q0 - window + 1) : 0;
	// The block's q rows (past the sequence: zeros) go with the first tile's copies.
	for (int e = threadIdx.x; e < FQ * cpr; e += 128) {
		int j = e / cpr;
		bool in = q0 + j < seq;
		idx_t src = in ? (base + q0 + j) * qd + (idx_t)h * hd + 8 * (e % cpr) : 0;
		cp_async16(Qs + j * FKS + 8 * (e % cpr), q + src, in);
	}
	// load issues the copies of the tile of keys k0.. into stage st and commits them; keys past
	// the block's last query are zeros (masked, and v's zeros keep 0·v finite).
	auto load = [&](int st, int k0) {
		unsigned short *Kd = tiles + 2 * st * FTILE, *Vd = Kd + FTILE;
		for (int e = threadIdx.x; e < FK * cpr; e += 128) {
			int j = e / cpr;
			bool in = k0 + j <= qLast;
			idx_t src = in ? (base + k0 + j) * kd + (idx_t)g * hd + 8 * (e % cpr) : 0;
			cp_async16(Kd + j * FKS + 8 * (e % cpr), k + src, in);
			cp_async16(Vd + j * FKS + 8 * (e % cpr), v + src, in);
		}
		cp_async_commit();
	};
	load(0, kFirst);
	float o[FM][FMAXD / 8][4], m[FM][2], l[FM][2]; // per m-tile: row maxima of the raw scores, sums
#pragma unroll
	for (int i = 0; i < FM; i++) {
#pragma unroll
		for (int n = 0; n < FMAXD / 8; n++) o[i][n][0] = o[i][n][1] = o[i][n][2] = o[i][n][3] = 0.0f;
		m[i][0] = m[i][1] = NEG_INF;
		l[i][0] = l[i][1] = 0.0f;
	}
	for (int k0 = kFirst, st = 0; k0 <= qLast; k0 += FK, st ^= 1) {
		if (k0 + FK <= qLast)
			load(st ^ 1, k0 + FK); // the stage the previous tile used: every warp is done with it
		else
			cp_async_commit(); // an empty group: the wait below leaves one group in flight either way
		cp_async_wait_prior(); // this thread's copies of this tile (and of q) have landed
		__syncthreads();       // and every thread's
		// The warp's rows see some key of the tile (warp-uniform; else it only keeps the barriers).
		if (k0 <= wLast && (window == 0 || k0 + FK - 1 >= w0 - window + 1)) {
			const unsigned short *Ks = tiles + 2 * st * FTILE, *Vs = Ks + FTILE;
			// s = q·kᵀ, m-tile i's 16 queries × FK keys in s[i]: n-tile n holds keys k0+8n..k0+8n+7.
			float s[FM][FK / 8][4];
#pragma unroll
			for (int i = 0; i < FM; i++)
#pragma unroll
				for (int n = 0; n < FK / 8; n++) s[i][n][0] = s[i][n][1] = s[i][n][2] = s[i][n][3] = 0.0f;
#pragma unroll
			for (int t = 0; t < FMAXD / 16; t++)
				if (t < ks) {
					// q's A fragments of columns 16t..16t+15: matrices (rows 0-7, 8-15) × (columns 0-7, 8-15).
					unsigned qa[FM][4];
#pragma unroll
					for (int i = 0; i < FM; i++)
						ldsm4(qa[i], Qs + (w0 - q0 + 16 * i + (lane & 7) + 8 * ((lane >> 3) & 1)) * FKS + 16 * t + 8 * (lane >> 4), false);
					// kᵀ's B fragments of n-tiles n and n+1 at once: matrices k[8n..][16t..],
					// k[8n..][16t+8..], k[8n+8..][16t..], k[8n+8..][16t+8..].
#pragma unroll
					for (int n = 0; n < FK / 8; n += 2) {
						unsigned bb[4];
						ldsm4(bb, Ks + (8 * n + 8 * (lane >> 4) + (lane & 7)) * FKS + 8 * ((lane >> 3) & 1) + 16 * t, false);
#pragma unroll
						for (int i = 0; i < FM; i++) {
							mma16816(s[i][n], qa[i], bb);
							mma16816(s[i][n + 1], qa[i], bb + 2);
						}
					}
				}
			bool mask = k0 + FK - 1 > w0 || (window > 0 && k0 < wLast - window + 1);
#pragma unroll
			for (int i = 0; i < FM; i++) {
				int r0 = w0 + 16 * i + gid, r1 = r0 + 8;
				if (mask) {
					int lo0 = window > 0 ? r0 - window + 1 : 0, lo1 = window > 0 ? r1 - window + 1 : 0;
#pragma unroll
					for (int n = 0; n < FK / 8; n++)
#pragma unroll
						for (int e = 0; e < 2; e++) {
							int j = k0 + 8 * n + 2 * tig + e;
							if (!(j <= r0 && j >= lo0)) s[i][n][e] = NEG_INF;
							if (!(j <= r1 && j >= lo1)) s[i][n][2 + e] = NEG_INF;
						}
				}
				// The rows' maxima over the quad of lanes that shares them.
				float mx0 = m[i][0], mx1 = m[i][1];
#pragma unroll
				for (int n = 0; n < FK / 8; n++) {
					mx0 = fmaxf(mx0, fmaxf(s[i][n][0], s[i][n][1]));
					mx1 = fmaxf(mx1, fmaxf(s[i][n][2], s[i][n][3]));
				}
				mx0 = fmaxf(mx0, __shfl_xor_sync(FULL, mx0, 1));
				mx0 = fmaxf(mx0, __shfl_xor_sync(FULL, mx0, 2));
				mx1 = fmaxf(mx1, __shfl_xor_sync(FULL, mx1, 1));
				mx1 = fmaxf(mx1, __shfl_xor_sync(FULL, mx1, 2));
				// A row without a visible key yet (a window's first tiles, a row past the diagonal)
				// keeps o = l = 0: any finite offset does, and masked scores give 2^−∞ = 0.
				float b0 = mx0 == NEG_INF ? 0.0f : mx0 * c2, b1 = mx1 == NEG_INF ? 0.0f : mx1 * c2;
				float a0 = exp2f(m[i][0] * c2 - b0), a1 = exp2f(m[i][1] * c2 - b1); // 0 while m = −∞
				m[i][0] = mx0;
				m[i][1] = mx1;
				float p0 = 0.0f, p1 = 0.0f;
#pragma unroll
				for (int n = 0; n < FK / 8; n++)
#pragma unroll
					for (int e = 0; e < 2; e++) {
						s[i][n][e] = exp2f(fmaf(s[i][n][e], c2, -b0));
						s[i][n][2 + e] = exp2f(fmaf(s[i][n][2 + e], c2, -b1));
						p0 += s[i][n][e];
						p1 += s[i][n][2 + e];
					}
				l[i][0] = l[i][0] * a0 + p0; // this lane's columns only: the quad's sums are added at the end
				l[i][1] = l[i][1] * a1 + p1;
#pragma unroll
				for (int n = 0; n < FMAXD / 8; n++) {
					o[i][n][0] *= a0;
					o[i][n][1] *= a0;
					o[i][n][2] *= a1;
					o[i][n][3] *= a1;
				}
			}
			// o += p·v: 16 keys a step; score tiles 2kk and 2kk+1 are p's A fragment as they lie.
#pragma unroll
			for (int kk = 0; kk < FK / 16; kk++) {
				unsigned pa[FM][4];
#pragma unroll
				for (int i = 0; i < FM; i++) {
					pa[i][0] = half2_bits(s[i][2 * kk][0], s[i][2 * kk][1]);
					pa[i][1] = half2_bits(s[i][2 * kk][2], s[i][2 * kk][3]);
					pa[i][2] = half2_bits(s[i][2 * kk + 1][0], s[i][2 * kk + 1][1]);
					pa[i][3] = half2_bits(s[i][2 * kk + 1][2], s[i][2 * kk + 1][3]);
				}
				// v's B fragments of n-tiles n and n+1, transposed from v[16kk..][8n..],
				// v[16kk+8..][8n..], v[16kk..][8n+8..], v[16kk+8..][8n+8..].
				const unsigned short *vr = Vs + (16 * kk + 8 * ((lane >> 3) & 1) + (lane & 7)) * FKS + 8 * (lane >> 4);
#pragma unroll
				for (int n = 0; n < FMAXD / 8; n += 2)
					if (n < hd / 8) {
						unsigned bb[4];
						ldsm4(bb, vr + 8 * n, true);
#pragma unroll
						for (int i = 0; i < FM; i++) {
							mma16816(o[i][n], pa[i], bb);
							mma16816(o[i][n + 1], pa[i], bb + 2);
						}
					}
			}
		}
		__syncthreads(); // every warp is done with stage st before the next turn's copies reuse it
	}
#pragma unroll
	for (int i = 0; i < FM; i++) {
		int r0 = w0 + 16 * i + gid, r1 = r0 + 8;
		float l0 = l[i][0], l1 = l[i][1];
		l0 += __shfl_xor_sync(FULL, l0, 1);
		l0 += __shfl_xor_sync(FULL, l0, 2);
		l1 += __shfl_xor_sync(FULL, l1, 1);
		l1 += __shfl_xor_sync(FULL, l1, 2);
		float i0 = 1.0f / l0, i1 = 1.0f / l1;
#pragma unroll
		for (int n = 0; n < FMAXD / 8; n++) {
			int c = h * hd + 8 * n + 2 * tig;
			if (n < hd / 8 && r0 < seq) {
				out[(base + r0) * qd + c] = o[i][n][0] * i0;
				out[(base + r0) * qd + c + 1] = o[i][n][1] * i0;
			}
			if (n < hd / 8 && r1 < seq) {
				out[(base + r1) * qd + c] = o[i][n][2] * i1;
				out[(base + r1) * qd + c + 1] = o[i][n][3] * i1;
			}
		}
	}
}

extern "C" __global__ void flash_attention(float *out, const unsigned short *q, const unsigned short *k,
                                           const unsigned short *v, int seq, int heads, int kvHeads, int hd, int window, float scale) {
	flash_body<0>(out, q, k, v, seq, heads, kvHeads, hd, window, scale);
}

extern "C" __global__ void flash_attention_128(float *out, const unsigned short *q, const unsigned short *k,
                                               const unsigned short *v, int seq, int heads, int kvHeads, int hd, int window,
                                               float scale) {
	flash_body<128>(out, q, k, v, seq, heads, kvHeads, hd, window, scale);
}

// awq_params: libs/awq's quantizer.params of a group whose max and min are mx and mn.
__device__ void awq_params(float mx, float mn, float maxInt, float eps, float *scale, float *zero) {
	float s = f16r(fmaxf(f16r(mx - mn), eps) / maxInt);
	*scale = s;
	*zero = fminf(fmaxf(-rintf(f16r(mn / s)), 0.0f), maxInt);
}

// awq_fake: the pseudo-quantized half value of v (quantizer.code, then quantizer.fake).
__device__ float awq_fake(float v, float scale, float zero, float maxInt) {
	float code = fminf(fmaxf(rintf(f16r(v / scale)) + zero, 0.0f), maxInt);
	return f16r((code - zero) * scale);
}

// abs_sum_cols: out[c] = Σ_t |x[t][c]| in float64, t in order (libs/awq's sumAbs, bit for
// bit). One thread per column.
extern "C" __global__ void abs_sum_cols(double *out, const float *x, long long rows, int cols) {
	for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
		double s = 0;
		for (long long t = 0; t < rows; t++) s += fabs((double)x[t * cols + c]);
		out[c] = s;
	}
}

// awq_scaled_quant: dst = Q(f16(f16(w)·s))/s per row-group of gs columns, in half precision
// (libs/awq's scaledQuant). One warp per row-group.
extern "C" __global__ void awq_scaled_quant(float *dst, const float *w, const float *s, int rows, int cols, int gs,
                                            float maxInt, float eps) {
	int lane = threadIdx.x & 31;
	long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
	int ng = cols / gs;
	long long total = (long long)rows * ng;
	for (long long rg = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; rg < total; rg += warps) {
		long long r = rg / ng;
		int g = (int)(rg % ng);
		const float *wr = w + r * cols + (idx_t)g * gs, *sg = s + (idx_t)g * gs;
		float *dr = dst + r * cols + (idx_t)g * gs;
		float mx = NEG_INF, mn = -NEG_INF;
		for (int i = lane; i < gs; i += 32) {
			float v = f16r(f16r(wr[i]) * sg[i]);
			dr[i] = v;
			mx = fmaxf(mx, v);
			mn = fminf(mn, v);
		}
		mx = warp_max(mx);
		mn = warp_min(mn);
		float scale, zero;
		awq_params(mx, mn, maxInt, eps, &scale, &zero);
		for (int i = lane; i < gs; i += 32) dr[i] = f16r(awq_fake(dr[i], scale, zero, maxInt) / sg[i]);
	}
}

#define SQ_THREADS 256

// add_block_sum adds the sum of the block's threads' s (warps in order) to part[blockIdx.x].
__device__ void add_block_sum(double *part, double s) {
	__shared__ double ps[SQ_THREADS / 32];
	s = warp_sum_d(s);
	if ((threadIdx.x & 31) == 0) ps[threadIdx.x >> 5] = s;
	__syncthreads();
	if (threadIdx.x == 0) {
		double t = 0;
		for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += ps[i];
		part[blockIdx.x] += t;
	}
}

// sq_diff_sum: part[blockIdx.x] += Σ (a[i] − b[i])² over the block's share of i < n, in
// float64. The grid size must be the same for every call that adds into part (the sum's
// order depends on it only, so the result is deterministic); blocks of SQ_THREADS.
extern "C" __global__ void sq_diff_sum(double *part, const float *a, const float *b, long long n) {
	double s = 0;
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
		double d = (double)a[i] - (double)b[i];
		s += d * d;
	}
	add_block_sum(part, s);
}

// sub: y = a − b.
extern "C" __global__ void sub(float *y, const float *a, const float *b, long long n) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
		y[i] = a[i] - b[i];
}

// dot_sum: part[blockIdx.x] += Σ a[i]·b[i] over the block's share of i < n, in float64, on
// sq_diff_sum's grid (same rules).
extern "C" __global__ void dot_sum(double *part, const float *a, const float *b, long long n) {
	double s = 0;
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
		s += (double)a[i] * (double)b[i];
	add_block_sum(part, s);
}

// gather_rows: out[i] = x[first + i·step] (rows of cols values), divided elementwise by s
// unless s is null (the clipping search's sampled tokens).
extern "C" __global__ void gather_rows(float *out, const float *x, const float *s, long long n, int cols, long long first,
                                       long long step) {
	long long total = n * cols;
	for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
		long long i = e / cols;
		int c = (int)(e % cols);
		float v = x[(first + i * step) * cols + c];
		out[e] = s ? v / s[c] : v;
	}
}

// block_max / block_min over a block of at most 256 threads (red: 8 floats of shared
// memory); every thread gets the result.
__device__ float block_max(float v, float *red) {
	v = warp_max(v);
	if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
	__syncthreads();
	float m = red[0];
	for (int i = 1; i < (int)((blockDim.x + 31) >> 5); i++) m = fmaxf(m, red[i]);
	__syncthreads();
	return m;
}
__device__ float block_min(float v, float *red) {
	v = warp_min(v);
	if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
	__syncthreads();
	float m = red[0];
	for (int i = 1; i < (int)((blockDim.x + 31) >> 5); i++) m = fminf(m, red[i]);
	__syncthreads();
	return m;
}

#define CLIP_MAX_GS 256

#define CLIP_BATCH 16

// awq_clip_search: libs/awq's searchClipGram for row blockIdx.x and column group blockIdx.y
// of w (rows×cols), with Gt the transposed float32 Gram matrices (groups × gs × gs, thread j
// reading its row of G as column j of Gt: coalesced, the same values) of n sampled tokens:
// for each bound m = f16(max|w|·(1 − i/clipGrid)), i < shrinks, the error dᵀ·G·d / n of
// d = Q(clamp(w, ±m)) − w, each row of G·d summed in column order and dᵀ·(G·d) in row order in
// float64 as the CPU does; the least error's bound (the first on ties) goes to
// best[row·groups + group]. The bounds go CLIP_BATCH at a time: G is read once per batch, each
// thread keeps a sum per bound, and the errors' sums run one bound per thread; every sum keeps
// the CPU's order, so the bits are the CPU's. Blocks of gs threads (gs a multiple of 32,
// ≤ CLIP_MAX_GS).
extern "C" __global__ void awq_clip_search(float *best, const float *w, const float *Gt, int cols, int gs, int shrinks,
                                           int clipGrid, float maxInt, float eps, double n) {
	__shared__ float red[CLIP_MAX_GS / 32];
	// dsh[b][k]: bound b's d, then d·(G·d); the odd row stride keeps the error sums' reads
	// (one bound per thread) on distinct banks.
	__shared__ double dsh[CLIP_BATCH][CLIP_MAX_GS + 1];
	__shared__ double err[CLIP_BATCH];
	__shared__ float bound[CLIP_BATCH];
	int j = threadIdx.x, g = blockIdx.y, ng = cols / gs;
	long long r = blockIdx.x;
	float wj = f16r(w[r * cols + (idx_t)g * gs + j]);
	float maxAbs = block_max(fabsf(wj), red);
	const float *Gj = Gt + (idx_t)g * gs * gs + j;
	double minErr = 1e9;
	float bestM = maxAbs;
	for (int i0 = 0; i0 < shrinks; i0 += CLIP_BATCH) {
		int nb = min(CLIP_BATCH, shrinks - i0);
		double d[CLIP_BATCH], s[CLIP_BATCH];
#pragma unroll
		for (int b = 0; b < CLIP_BATCH; b++) {
			d[b] = 0;
			s[b] = 0;
			if (b < nb) {
				float m = f16r(maxAbs * (float)(1.0 - (double)(i0 + b) / (double)clipGrid));
				float c = fminf(fmaxf(wj, -m), m);
				float mx = block_max(c, red), mn = block_min(c, red);
				float scale, zero;
				awq_params(mx, mn, maxInt, eps, &scale, &zero);
				d[b] = (double)awq_fake(c, scale, zero, maxInt) - (double)wj;
				dsh[b][j] = d[b];
				if (j == 0) bound[b] = m;
			}
		}
		__syncthreads();
		for (int k = 0; k < gs; k++) {
			double gk = (double)Gj[(idx_t)k * gs];
#pragma unroll
			for (int b = 0; b < CLIP_BATCH; b++)
				if (b < nb) s[b] += gk * dsh[b][k];
		}
		__syncthreads();
		// A zero d adds a zero (the CPU skips it): the sum is the same.
#pragma unroll
		for (int b = 0; b < CLIP_BATCH; b++)
			if (b < nb) dsh[b][j] = d[b] * s[b];
		__syncthreads();
		if (j < nb) {
			double e = 0;
			for (int k = 0; k < gs; k++) e += dsh[j][k];
			err[j] = e / n;
		}
		__syncthreads();
		if (j == 0) {
			for (int b = 0; b < nb; b++) {
				if (err[b] < minErr) {
					minErr = err[b];
					bestM = bound[b];
				}
			}
		}
		__syncthreads();
	}
	if (j == 0) best[r * ng + g] = bestM;
}
