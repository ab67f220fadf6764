// GPTQ kernels. Compiled by NVRTC with --fmad=false: the quantizer and the error feedback
// round every float32 operation as libs/gptq (Go) does, so codes differ from the CPU only
// where summation order differs.
//
// Matrices are row-major. 2D kernels take x over columns and loop rows over the y grid.

#define FULL 0xffffffffu

// 64-bit element index (NVRTC has no standard headers, so no size_t).
typedef unsigned long long idx_t;

// ---------------------------------------------------------------------------------------
// Hessian

// sum[i][j] += tmp[i][j] on the upper triangle (j >= i), the part SSYRK wrote.
extern "C" __global__ void hess_accum(double *sum, const float *tmp, int n) {
	int j = blockIdx.x * blockDim.x + threadIdx.x;
	for (int i = blockIdx.y; i < n; i += gridDim.y) {
		if (j >= i && j < n) sum[(idx_t)i * n + j] += (double)tmp[(idx_t)i * n + j];
	}
}

// sum[i][j] += other[i][j] on the upper triangle: gptq.Hessian.Merge's float64 additions.
extern "C" __global__ void hess_merge(double *sum, const double *other, int n) {
	int j = blockIdx.x * blockDim.x + threadIdx.x;
	for (int i = blockIdx.y; i < n; i += gridDim.y) {
		if (j >= i && j < n) sum[(idx_t)i * n + j] += other[(idx_t)i * n + j];
	}
}

// diag[i] = f * sum[i][i].
extern "C" __global__ void hess_diag(double *diag, const double *sum, double f, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) diag[i] = f * sum[(idx_t)i * n + i];
}

// a = float32(J·P·H·Pᵀ·J + add·I) with H = f·sum (upper triangle read), P the act-order
// permutation (row p of P·H·Pᵀ is H's row perm[p]) and J the exchange matrix; a zero
// diagonal (dead column) becomes 1 before add. The exchange makes the lower Cholesky factor
// of a give the upper factor of the inverse (see factor.go).
extern "C" __global__ void hess_build(float *a, const double *sum, const int *perm, double f, double add, int n) {
	int j = blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= n) return;
	int pj = perm[n - 1 - j];
	for (int i = blockIdx.y; i < n; i += gridDim.y) {
		int pi = perm[n - 1 - i];
		int r = min(pi, pj), c = max(pi, pj);
		double h = f * sum[(idx_t)r * n + c];
		if (i == j) {
			if (h == 0) h = 1;
			a[(idx_t)i * n + j] = (float)(h + add);
		} else {
			a[(idx_t)i * n + j] = (float)h;
		}
	}
}

// ---------------------------------------------------------------------------------------
// Cholesky and inverse

// chol_inv_leaf factors the nb×nb block a (lower triangle read, leading dimension ld) as
// L·Lᵀ and inverts L, in float64 like libs/gptq's cholInvLeaf and in the same summation
// order; l and x receive float32(L) and float32(L⁻¹) with zero upper triangles. work holds
// 2·nb·nb doubles. On a non-positive pivot it sets *bad and stops. One block of ≥ nb threads.
extern "C" __global__ void chol_inv_leaf(const float *a, float *l, float *x, int nb, int ld, double *work, int *bad) {
	double *L = work, *X = work + nb * nb;
	int t = threadIdx.x, T = blockDim.x;
	for (int e = t; e < nb * nb; e += T) {
		int i = e / nb, j = e % nb;
		L[e] = j <= i ? (double)a[(idx_t)i * ld + j] : 0.0;
		X[e] = 0.0;
	}
	__syncthreads();
	// Right-looking: after step j, L[i][k] for k > j holds a[i][k] − Σ_{m≤j} L[i][m]·L[k][m],
	// accumulated in the order of the CPU's left-looking loop.
	for (int j = 0; j < nb; j++) {
		double s = L[j * nb + j];
		if (!(s > 0) || isinf(s)) { // uniform: every thread read the same s
			if (t == 0) *bad = 1;
			return;
		}
		double d = sqrt(s);
		__syncthreads();
		if (t == 0) L[j * nb + j] = d;
		for (int i = j + 1 + t; i < nb; i += T) L[i * nb + j] /= d;
		__syncthreads();
		int m = nb - j - 1;
		for (int e = t; e < m * m; e += T) {
			int i = j + 1 + e / m, k = j + 1 + e % m;
			if (k <= i) L[i * nb + k] -= L[i * nb + j] * L[k * nb + j];
		}
		__syncthreads();
	}
	// X = L⁻¹ by forward substitution, one column per thread.
	for (int j = t; j < nb; j += T) {
		X[j * nb + j] = 1 / L[j * nb + j];
		for (int i = j + 1; i < nb; i++) {
			double s = 0;
			for (int k = j; k < i; k++) s += L[i * nb + k] * X[k * nb + j];
			X[i * nb + j] = -s / L[i * nb + i];
		}
	}
	__syncthreads();
	for (int e = t; e < nb * nb; e += T) {
		int i = e / nb, j = e % nb;
		l[(idx_t)i * ld + j] = (float)L[e];
		x[(idx_t)i * ld + j] = (float)X[e];
	}
}

// Sets *bad if any of the n values is NaN or infinite.
extern "C" __global__ void check_finite(const float *v, long long n, int *bad) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	for (; i < n; i += (long long)gridDim.x * blockDim.x) {
		if (!isfinite(v[i])) {
			*bad = 1;
			return;
		}
	}
}

// u[i][j] = x[n−1−i][n−1−j] for j ≥ i, 0 below: U = J·M⁻¹·J.
extern "C" __global__ void flip_upper(float *u, const float *x, int n) {
	int j = blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= n) return;
	for (int i = blockIdx.y; i < n; i += gridDim.y) {
		u[(idx_t)i * n + j] = j >= i ? x[(idx_t)(n - 1 - i) * n + (n - 1 - j)] : 0.0f;
	}
}

// ---------------------------------------------------------------------------------------
// Weights

// dst[r][p] = src[r][perm[p]].
extern "C" __global__ void gather_cols(float *dst, const float *src, const int *perm, int rows, int n) {
	int p = blockIdx.x * blockDim.x + threadIdx.x;
	if (p >= n) return;
	int c = perm[p];
	for (int r = blockIdx.y; r < rows; r += gridDim.y) dst[(idx_t)r * n + p] = src[(idx_t)r * n + c];
}

// dst[r][perm[p]] = src[r][p] (codes back to the original column order).
extern "C" __global__ void scatter_codes(unsigned char *dst, const unsigned char *src, const int *perm, int rows, int n) {
	int p = blockIdx.x * blockDim.x + threadIdx.x;
	if (p >= n) return;
	int c = perm[p];
	for (int r = blockIdx.y; r < rows; r += gridDim.y) dst[(idx_t)r * n + c] = src[(idx_t)r * n + p];
}

// w[r][cols[k]] = 0 for k < ncols.
extern "C" __global__ void zero_cols(float *w, const int *cols, int ncols, int rows, int n) {
	int r = blockIdx.x * blockDim.x + threadIdx.x;
	if (r >= rows) return;
	for (int k = 0; k < ncols; k++) w[(idx_t)r * n + cols[k]] = 0;
}

// ---------------------------------------------------------------------------------------
// Quantizer (libs/gptq quantizer.go, operation by operation in float32)

__device__ void grid_params(float xmin, float xmax, float maxq, int sym, int v1, float *scale, float *zero) {
	if (sym) {
		xmax = fmaxf(fabsf(xmin), xmax);
		if (xmin < 0) xmin = -xmax;
	}
	if (xmin == 0 && xmax == 0) {
		xmin = -1;
		xmax = 1;
	}
	float s = (xmax - xmin) / maxq;
	if (sym) {
		*scale = s;
		*zero = (maxq + 1) / 2;
		return;
	}
	float z = rintf(-xmin / s);
	if (z == 0 && v1) {
		s = xmax / (maxq - 1);
		z = 1;
	}
	*scale = s;
	*zero = z;
}

// find_params computes grids from columns of w (rows×ld): group y of the launch covers
// columns [c0 + y·gs, min(c0 + (y+1)·gs, cend)) and is stored as grid g0 + y
// (scale/zero[(g0+y)·rows + r]). One warp per row.
extern "C" __global__ void find_params(float *scale, float *zero, const float *w, int ld, int rows,
		int c0, int gs, int cend, int g0, float maxq, int sym, int v1) {
	int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int lane = threadIdx.x & 31;
	if (r >= rows) return;
	int a = c0 + blockIdx.y * gs, b = min(a + gs, cend);
	float mn = 0, mx = 0; // the range always includes 0
	for (int c = a + lane; c < b; c += 32) {
		float v = w[(idx_t)r * ld + c];
		mn = fminf(mn, v);
		mx = fmaxf(mx, v);
	}
	for (int o = 16; o > 0; o >>= 1) {
		mn = fminf(mn, __shfl_xor_sync(FULL, mn, o));
		mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, o));
	}
	if (lane == 0) {
		idx_t g = (idx_t)(g0 + blockIdx.y) * rows + r;
		grid_params(mn, mx, maxq, sym, v1, &scale[g], &zero[g]);
	}
}

// gptq_block quantizes columns [i1, i1+count) (count ≤ 128) of the permuted weight w
// (rows×n) with error feedback inside the block, as libs/gptq's Factor.Quantize does for one
// row: one warp per row, lane l holding columns l, l+32, l+64, l+96 of the block in
// registers. It writes the codes (processing order), the scaled errors err (rows×count) for
// the trailing update, and adds the row's loss to losses[r]. grid[p] is the grid index of
// processing position p.
extern "C" __global__ void gptq_block(const float *w, const float *u, int n, unsigned char *codes, float *err,
		const float *scale, const float *zero, const int *grid, double *losses, int rows, int i1, int count, float maxq) {
	int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
	int lane = threadIdx.x & 31;
	if (r >= rows) return;
	float wr[4], er[4];
#pragma unroll
	for (int s = 0; s < 4; s++) {
		int c = s * 32 + lane;
		wr[s] = c < count ? w[(idx_t)r * n + i1 + c] : 0.0f;
		er[s] = 0;
	}
	double loss = 0;
#pragma unroll
	for (int s = 0; s < 4; s++) {
		for (int src = 0; src < 32; src++) {
			int i = s * 32 + src;
			if (i >= count) break;
			float wv = __shfl_sync(FULL, wr[s], src);
			idx_t g = (idx_t)grid[i1 + i] * rows + r;
			float sc = scale[g], z = zero[g];
			float c = fminf(fmaxf(rintf(wv / sc) + z, 0.0f), maxq);
			float q = sc * (c - z);
			const float *urow = u + (idx_t)(i1 + i) * n + i1; // U[i1+i, i1:]
			float d = urow[i];
			float diff = wv - q;
			loss += (double)(diff * diff / (d * d));
			float e = diff / d;
			if (lane == src) {
				codes[(idx_t)r * n + i1 + i] = (unsigned char)c;
				er[s] = e;
			}
#pragma unroll
			for (int t = 0; t < 4; t++) {
				int j = t * 32 + lane;
				if (j > i && j < count) wr[t] -= e * urow[j];
			}
		}
	}
#pragma unroll
	for (int s = 0; s < 4; s++) {
		int c = s * 32 + lane;
		if (c < count) err[(idx_t)r * count + c] = er[s];
	}
	if (lane == 0) losses[r] += loss;
}
