// A host emulation of CUDA for kernels_emu_test.go: kernels.cu (libs/cuda/llamacuda, written
// to kernels.cu beside this file with its one dynamic shared array given a size) compiled by a
// C++ compiler, each CUDA thread a std::thread, one block at a time; warp shuffles and
// __syncthreads are barriers. x86-64 without -march has no FMA, as the kernels' --fmad=false.
// It runs the AWQ kernels on the inputs the test writes (*.bin, params.txt) and writes
// their outputs (*.out) for the test to compare with package awq's arithmetic; with the
// argument "attention", the half-precision grid's flash_attention (attn.txt; flash_attention_128
// for heads of 128). The tensor cores' mma16816 and ldmatrix's ldsm4 are emulated through the
// warp's slots, like the shuffles; cp.async's copies land as late or as early as the device may
// land them (CUDAEMU_ASYNC).
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
	unsigned x = 1, y = 1, z = 1;
};
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
std::barrier<> *blockBar;
std::vector<std::unique_ptr<std::barrier<>>> warpBars;
#define __global__
#define __device__ inline
#define __shared__ static
#define __syncthreads() blockBar->arrive_and_wait()
#define __syncwarp() warpBars[threadIdx.x >> 5]->arrive_and_wait()
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static double slotD[1024];
static float slotF[1024];
template <typename T> T *slots();
template <> double *slots<double>() { return slotD; }
template <> float *slots<float>() { return slotF; }
template <typename T> T __shfl_xor_sync(unsigned, T v, int o) {
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	slots<T>()[threadIdx.x] = v;
	warpBars[w]->arrive_and_wait();
	T r = slots<T>()[(w << 5) | (lane ^ o)];
	warpBars[w]->arrive_and_wait();
	return r;
}
using std::exp;
using std::max;
using std::min;
using std::fabs;
using std::log;
using std::rint;
using std::sqrt;
// mma16816 as PTX's mma.m16n8k16 (row.col, f32 += f16·f16): the warp's fragments gathered
// through slots, each lane's four sums in float over k in order.
inline float half_value(unsigned short h);
static unsigned mmaA[1024][4], mmaB[1024][2];
static void mma16816(float *d, const unsigned *a, const unsigned *b) {
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, base = w << 5;
	memcpy(mmaA[threadIdx.x], a, sizeof mmaA[0]);
	memcpy(mmaB[threadIdx.x], b, sizeof mmaB[0]);
	warpBars[w]->arrive_and_wait();
	auto half = [](unsigned reg, int hi) { return half_value((unsigned short)(hi ? reg >> 16 : reg)); };
	// A[r][c] lies in lane (r%8)·4 + (c%8)/2, register (r≥8) + 2(c≥8), half c%2; B[k][n] in
	// lane n·4 + (k%8)/2, register k≥8, half k%2.
	auto A = [&](int r, int c) { return half(mmaA[base + (r % 8) * 4 + (c % 8) / 2][(r >= 8) + 2 * (c >= 8)], c & 1); };
	auto B = [&](int k, int n) { return half(mmaB[base + n * 4 + (k % 8) / 2][k >= 8], k & 1); };
	int g = lane >> 2, t = lane & 3;
	for (int i = 0; i < 4; i++) {
		int r = g + 8 * (i >= 2), n = 2 * t + (i & 1);
		float acc = d[i];
		for (int k = 0; k < 16; k++) acc += A(r, k) * B(k, n);
		d[i] = acc;
	}
	warpBars[w]->arrive_and_wait();
}
// ldsm4 as PTX's ldmatrix.x4: the lanes' row addresses gathered through slots.
static const unsigned short *ldsmRow[1024];
static void ldsm4(unsigned *r, const unsigned short *row, bool trans) {
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, base = w << 5;
	ldsmRow[threadIdx.x] = row;
	warpBars[w]->arrive_and_wait();
	// Matrix i's row ρ is lane 8i+ρ's address; lane ℓ gets (ℓ/4, 2(ℓ%4)+e), or (2(ℓ%4)+e, ℓ/4).
	for (int i = 0; i < 4; i++) {
		unsigned short e[2];
		for (int h = 0; h < 2; h++)
			e[h] = trans ? ldsmRow[base + 8 * i + 2 * (lane & 3) + h][lane >> 2] : ldsmRow[base + 8 * i + (lane >> 2)][2 * (lane & 3) + h];
		r[i] = e[0] | (unsigned)e[1] << 16;
	}
	warpBars[w]->arrive_and_wait();
}
// cp.async: each thread's 16-byte copies wait in groups and land at cp_async_wait_prior (the
// latest a device may land them), or at once with CUDAEMU_ASYNC=eager (the earliest): a kernel
// correct under both waits and synchronizes where it must.
struct asyncCopy {
	void *dst;
	const void *src;
	bool in;
	void land() const {
		if (in)
			memcpy(dst, src, 16);
		else
			memset(dst, 0, 16);
	}
};
static bool asyncEager = getenv("CUDAEMU_ASYNC") && !strcmp(getenv("CUDAEMU_ASYNC"), "eager");
thread_local std::vector<asyncCopy> asyncOpen;
thread_local std::vector<std::vector<asyncCopy>> asyncGroups;
static void cp_async16(void *dst, const void *src, bool in) {
	if (asyncEager)
		asyncCopy{dst, src, in}.land();
	else
		asyncOpen.push_back({dst, src, in});
}
static void cp_async_commit() {
	asyncGroups.push_back(std::move(asyncOpen));
	asyncOpen.clear();
}
static void cp_async_wait_prior() {
	while (asyncGroups.size() > 1) {
		for (auto &c : asyncGroups.front()) c.land();
		asyncGroups.erase(asyncGroups.begin());
	}
}
#include "kernels.cu"

// launch runs f as grid × block threads (block.x a multiple of 32, ≤ 1024), block by block.
static void launch(dim3 grid, dim3 block, std::function<void()> f) {
	gridDim = grid;
	blockDim = block;
	for (unsigned by = 0; by < grid.y; by++)
		for (unsigned bx = 0; bx < grid.x; bx++) {
			std::barrier<> bb(block.x);
			blockBar = &bb;
			warpBars.clear();
			for (unsigned w = 0; w < block.x / 32; w++) warpBars.emplace_back(new std::barrier<>(32));
			std::vector<std::thread> ts;
			for (unsigned t = 0; t < block.x; t++)
				ts.emplace_back([=] {
					threadIdx.x = t;
					blockIdx.x = bx;
					blockIdx.y = by;
					f();
				});
			for (auto &t : ts) t.join();
		}
}

template <typename T> static std::vector<T> rd(const char *p, size_t n) {
	std::vector<T> v(n);
	FILE *f = fopen(p, "rb");
	if (!f || fread(v.data(), sizeof(T), n, f) != n) {
		perror(p);
		exit(1);
	}
	fclose(f);
	return v;
}
template <typename T> static void wr(const char *p, const std::vector<T> &v) {
	FILE *f = fopen(p, "wb");
	if (!f || fwrite(v.data(), sizeof(T), v.size(), f) != v.size()) {
		perror(p);
		exit(1);
	}
	fclose(f);
}

// attention: flash_attention on attn.txt's shape (batch seq heads kvHeads hd window scale) and
// the half bit patterns in q.bin, k.bin, v.bin; the output to attn.out.
static int attention() {
	FILE *pf = fopen("attn.txt", "r");
	int batch, seq, heads, kv, hd, window;
	float scale;
	if (!pf || fscanf(pf, "%d %d %d %d %d %d %a", &batch, &seq, &heads, &kv, &hd, &window, &scale) != 7) {
		fprintf(stderr, "bad attn.txt\n");
		return 1;
	}
	size_t rows = (size_t)batch * seq;
	auto q = rd<unsigned short>("q.bin", rows * heads * hd);
	auto k = rd<unsigned short>("k.bin", rows * kv * hd);
	auto v = rd<unsigned short>("v.bin", rows * kv * hd);
	std::vector<float> out(rows * heads * hd);
	auto flash = hd == 128 ? flash_attention_128 : flash_attention; // as the Go side picks
	launch({(unsigned)((seq + FQ - 1) / FQ), (unsigned)(batch * heads)}, {128},
	       [&] { flash(out.data(), q.data(), k.data(), v.data(), seq, heads, kv, hd, window, scale); });
	wr("attn.out", out);
	return 0;
}

int main(int argc, char **argv) {
	if (argc > 1 && !strcmp(argv[1], "attention")) return attention();
	FILE *pf = fopen("params.txt", "r");
	int rows, cols, gs, tokens, shrinks, clipGrid, nS, first, step;
	float maxInt, eps;
	if (!pf || fscanf(pf, "%d %d %d %d %d %d %a %a %d %d %d", &rows, &cols, &gs, &tokens, &shrinks, &clipGrid, &maxInt, &eps,
	                  &nS, &first, &step) != 11) {
		fprintf(stderr, "bad params.txt\n");
		return 1;
	}
	auto w = rd<float>("w.bin", (size_t)rows * cols);
	auto s = rd<float>("s.bin", cols);
	auto x = rd<float>("x.bin", (size_t)tokens * cols);
	auto G = rd<float>("g.bin", (size_t)cols * gs);
	int ng = cols / gs;
	// A small grid, so that the grid-stride loops take several turns.
	std::vector<float> sq((size_t)rows * cols);
	launch({(unsigned)std::min((rows * ng + 7) / 8, 2)}, {256},
	       [&] { awq_scaled_quant(sq.data(), w.data(), s.data(), rows, cols, gs, maxInt, eps); });
	wr("scaled.out", sq);
	std::vector<float> best((size_t)rows * ng);
	launch({(unsigned)rows, (unsigned)ng}, {(unsigned)gs},
	       [&] { awq_clip_search(best.data(), w.data(), G.data(), cols, gs, shrinks, clipGrid, maxInt, eps, (double)nS); });
	wr("clip.out", best);
	std::vector<double> abs((size_t)cols);
	launch({1}, {64}, [&] { abs_sum_cols(abs.data(), x.data(), tokens, cols); });
	wr("abs.out", abs);
	// Two calls adding into the same 3 partials: the sum of x − w over their common prefix, twice.
	long long n = std::min((long long)tokens * cols, (long long)rows * cols);
	std::vector<double> part(3, 0.0);
	for (int i = 0; i < 2; i++) launch({3}, {256}, [&] { sq_diff_sum(part.data(), x.data(), w.data(), n); });
	wr("sqdiff.out", part);
	long long gn = (tokens - first + step - 1) / step;
	std::vector<float> g1(gn * cols), g2(gn * cols);
	launch({2}, {256}, [&] { gather_rows(g1.data(), x.data(), s.data(), gn, cols, first, step); });
	launch({2}, {256}, [&] { gather_rows(g2.data(), x.data(), nullptr, gn, cols, first, step); });
	wr("gather.out", g1);
	wr("gather-unscaled.out", g2);
	// gramLosses' dot_sum, as sq_diff_sum; the half grid's to_half and silu_mul_half.
	std::vector<double> dot(3, 0.0);
	for (int i = 0; i < 2; i++) launch({3}, {256}, [&] { dot_sum(dot.data(), x.data(), w.data(), n); });
	wr("dot.out", dot);
	std::vector<unsigned short> hw((size_t)rows * cols), hx(n);
	launch({2}, {256}, [&] { to_half(hw.data(), w.data(), (long long)hw.size()); });
	wr("half.out", hw);
	launch({2}, {256}, [&] { to_half(hx.data(), x.data(), n); });
	launch({2}, {256}, [&] { silu_mul_half(hx.data(), hw.data(), n); });
	wr("silu.out", hx);
	return 0;
}
