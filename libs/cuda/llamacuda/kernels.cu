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
