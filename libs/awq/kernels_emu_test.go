package awq

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/x448/float16"
)

// TestGPUKernelsMatchHost checks, without a GPU, that the AWQ kernels of the GPU's Arithmetic
// (libs/cuda/llamacuda/kernels.cu: awq_scaled_quant, awq_clip_search, abs_sum_cols,
// sq_diff_sum, gather_rows, dot_sum, to_half, silu_mul_half) compute what this package's host arithmetic computes: the source is
// compiled by the host's C++ compiler under a CUDA emulation (testdata/cudaemu.cpp: one thread
// per CUDA thread, barriers for __syncthreads and warp shuffles) and run on random layers,
// group sizes 32 to 256, 3, 4 and 8 bits, half-precision ties and subnormals. Expected: the
// scaled pseudo-quantized weights (scaledQuant), the clipping bounds on the same Gram matrices
// (searchClipGram), the channel sums (sumAbs), the sampled tokens (sampleTokens) and the half
// conversion (x448/float16) bit for bit; the squared-error and dot-product partials' totals
// within 1e-12 of the sequential sums; silu·up of halves within one half ulp. Skipped without g++ or
// with -short.
func TestGPUKernelsMatchHost(t *testing.T) {
	dir := buildEmulator(t)
	for _, tc := range []struct {
		rows, cols, gs, tokens, bits, first, step int
		scale                                     float64 // of the weights
		clip                                      Config  // MaxShrink and ClipGrid (0: defaults, 10 bounds)
	}{
		{8, 256, 128, 40, 4, 1, 3, 0.05, Config{}},
		{9, 192, 64, 33, 4, 0, 2, 1, Config{}},
		{5, 64, 32, 20, 3, 2, 5, 1e-4, Config{}},
		{2, 512, 256, 10, 8, 0, 1, 0.02, Config{}},
		{4, 128, 128, 12, 4, 0, 4, 2e-6, Config{}},                             // subnormal halves
		{6, 256, 128, 30, 4, 0, 2, 0.05, Config{MaxShrink: 0.8, ClipGrid: 25}}, // 20 bounds: two of the kernel's batches
	} {
		cfg := Config{Bits: tc.bits, GroupSize: tc.gs, MaxShrink: tc.clip.MaxShrink, ClipGrid: tc.clip.ClipGrid}
		t.Run(fmt.Sprintf("%dx%d_g%d_%dbit_%dbounds", tc.rows, tc.cols, tc.gs, tc.bits, ClipShrinks(mustDefaults(t, cfg))), func(t *testing.T) {
			emulateKernels(t, dir, tc.rows, tc.cols, tc.tokens, tc.first, tc.step, tc.scale, cfg)
		})
	}
}

// TestGPUFlashAttentionMatchesHost checks, without a GPU, the AWQ half grid's attention
// (kernels.cu flash_attention: tensor-core mma fragments, the online softmax, the causal mask,
// grouped-query heads, a sliding window, ragged tiles) under the CUDA emulation, its mma
// emulated as PTX lays the fragments out, against attention in float64 on the same half q, k
// and v. The kernel rounds the probabilities to half for p·v (relative error ≤ 2⁻¹¹ each), so
// each output is within 1e-3·max|v| of the exact value.
func TestGPUFlashAttentionMatchesHost(t *testing.T) {
	dir := buildEmulator(t)
	for _, tc := range []struct{ batch, seq, heads, kv, hd, window int }{
		{2, 100, 4, 2, 64, 0},   // two query blocks, a ragged last key tile
		{1, 130, 2, 1, 128, 0},  // the largest head, three tiles
		{1, 90, 4, 4, 32, 20},   // a window that starts inside a tile
		{3, 37, 2, 1, 16, 0},    // one ragged block
		{1, 300, 2, 1, 64, 150}, // tiles inside the window, across its edge and the diagonal
		{1, 200, 2, 1, 32, 127}, // a tile whose last key is one past a warp's first query
		{1, 260, 2, 1, 128, 90}, // flash_attention_128: a window, tiles a warp skips, a ragged block
	} {
		// Tile copies landing as late and as early as the device may land them: a missing wait
		// or barrier reads a stale or a half-written tile in one of the two.
		for _, async := range []string{"late", "eager"} {
			t.Run(fmt.Sprintf("b%d_s%d_h%d_kv%d_d%d_w%d_%s", tc.batch, tc.seq, tc.heads, tc.kv, tc.hd, tc.window, async), func(t *testing.T) {
				emulateFlash(t, dir, async, tc.batch, tc.seq, tc.heads, tc.kv, tc.hd, tc.window)
			})
		}
	}
}

func emulateFlash(t *testing.T, dir, async string, batch, seq, heads, kv, hd, window int) {
	rng := rand.New(rand.NewPCG(uint64(seq), uint64(hd)))
	rows := batch * seq
	halves := func(n int, sd float64) ([]uint16, []float64) {
		h, f := make([]uint16, n), make([]float64, n)
		for i := range h {
			v := float16.Fromfloat32(float32(rng.NormFloat64() * sd))
			h[i], f[i] = v.Bits(), float64(v.Float32())
		}
		return h, f
	}
	qh, q := halves(rows*heads*hd, 1.5)
	kh, k := halves(rows*kv*hd, 1.5)
	vh, v := halves(rows*kv*hd, 1)
	scale := float32(1 / math.Sqrt(float64(hd)))
	params := fmt.Sprintf("%d %d %d %d %d %d %s\n", batch, seq, heads, kv, hd, window, strconv.FormatFloat(float64(scale), 'x', -1, 32))
	if err := os.WriteFile(filepath.Join(dir, "attn.txt"), []byte(params), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string][]uint16{"q.bin": qh, "k.bin": kh, "v.bin": vh} {
		writeLE(t, filepath.Join(dir, name), h)
	}
	runEmulator(t, dir, "CUDAEMU_ASYNC="+async, "attention")
	got := readLE[float32](t, filepath.Join(dir, "attn.out"), rows*heads*hd)
	var vmax float64
	for _, x := range v {
		vmax = max(vmax, math.Abs(x))
	}
	bad, worst := 0, 0.0
	p := make([]float64, seq)
	for b := range batch {
		for h := range heads {
			g := h / (heads / kv)
			for i := range seq {
				lo := 0
				if window > 0 {
					lo = max(0, i-window+1)
				}
				m := math.Inf(-1)
				for j := lo; j <= i; j++ {
					var s float64
					for d := range hd {
						s += q[((b*seq+i)*heads+h)*hd+d] * k[((b*seq+j)*kv+g)*hd+d]
					}
					p[j] = s * float64(scale)
					m = max(m, p[j])
				}
				var l float64
				for j := lo; j <= i; j++ {
					p[j] = math.Exp(p[j] - m)
					l += p[j]
				}
				for d := range hd {
					var o float64
					for j := lo; j <= i; j++ {
						o += p[j] * v[((b*seq+j)*kv+g)*hd+d]
					}
					e := math.Abs(float64(got[((b*seq+i)*heads+h)*hd+d]) - o/l)
					worst = max(worst, e)
					if !(e <= 1e-3*vmax) {
						if bad < 3 {
							t.Errorf("sequence %d head %d query %d [%d] = %v, want %v", b, h, i, d, got[((b*seq+i)*heads+h)*hd+d], o/l)
						}
						bad++
					}
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d outputs beyond 1e-3·max|v| (%g)", bad, rows*heads*hd, vmax)
	}
	t.Logf("max |Δ| %.2e (max|v| %.2f)", worst, vmax)
}

// buildEmulator compiles kernels.cu with testdata/cudaemu.cpp into dir/cudaemu (skipping
// the test with -short or without g++) and returns dir.
func buildEmulator(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("compiles the CUDA kernels for the host (seconds)")
	}
	cxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("no g++")
	}
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("..", "cuda", "llamacuda", "kernels.cu"))
	if err != nil {
		t.Fatal(err)
	}
	// The attention kernels' dynamic shared memory, as static arrays of the emulation.
	const dyn = "extern __shared__ float smem[];"
	if strings.Count(string(src), dyn) != 2 {
		t.Fatalf("kernels.cu has not 2 kernels with %q", dyn)
	}
	emu, err := os.ReadFile(filepath.Join("testdata", "cudaemu.cpp"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"kernels.cu":  []byte(strings.ReplaceAll(string(src), dyn, "static float smem[1 << 16];")),
		"cudaemu.cpp": emu,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := exec.Command(cxx, "-std=c++20", "-O1", "-pthread", "-o", "cudaemu", "cudaemu.cpp")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("compiling kernels.cu for the host: %v\n%s", err, out)
	}
	return dir
}

// runEmulator runs buildEmulator's program in dir with args, in the environment with env
// ("NAME=value" or "") added.
func runEmulator(t *testing.T, dir, env string, args ...string) {
	t.Helper()
	run := exec.Command("./cudaemu", args...)
	run.Dir = dir
	if env != "" {
		run.Env = append(os.Environ(), env)
	}
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("emulated kernels %v: %v\n%s", args, err, out)
	}
}

func mustDefaults(t *testing.T, c Config) Config {
	t.Helper()
	c, err := c.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func emulateKernels(t *testing.T, dir string, rows, cols, tokens, first, step int, scale float64, cfg Config) {
	cfg = mustDefaults(t, cfg)
	gs, bits := cfg.GroupSize, cfg.Bits
	rng := rand.New(rand.NewPCG(uint64(rows), uint64(cols)))
	w := make([]float32, rows*cols)
	for i := range w {
		switch {
		case i%53 == 0:
			w[i] = 0
		case i%17 == 0:
			w[i] = f16(float32(rng.NormFloat64() * scale)) // exact halves: more ties
		default:
			w[i] = float32(rng.NormFloat64() * scale)
		}
	}
	s := make([]float32, cols)
	for i := range s {
		s[i] = f16(float32(math.Exp(rng.NormFloat64())))
	}
	x := make([]float32, tokens*cols)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	xs := sampleTokens(x[first*cols:], tokens-first, cols, step, s)
	n := len(xs) / cols
	G := gram(xs, n, cols, gs)
	maxInt, eps := QuantizerConstants(bits)
	hex := func(v float32) string { return strconv.FormatFloat(float64(v), 'x', -1, 32) }
	params := fmt.Sprintf("%d %d %d %d %d %d %s %s %d %d %d\n", rows, cols, gs, tokens, ClipShrinks(cfg), cfg.ClipGrid,
		hex(maxInt), hex(eps), n, first, step)
	if err := os.WriteFile(filepath.Join(dir, "params.txt"), []byte(params), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string][]float32{"w.bin": w, "s.bin": s, "x.bin": x, "g.bin": G} {
		writeLE(t, filepath.Join(dir, name), v)
	}
	runEmulator(t, dir, "")

	q := newQuantizer(bits)
	scaled := make([]float32, rows*cols)
	scaledQuant(q, w, scaled, rows, cols, gs, s)
	sameBits(t, "awq_scaled_quant vs scaledQuant", readLE[float32](t, filepath.Join(dir, "scaled.out"), len(scaled)), scaled)
	clip := searchClipGram(&Linear{Name: "l", Rows: rows, Cols: cols, Weight: w}, G, n, cfg)
	sameBits(t, "awq_clip_search vs searchClipGram", readLE[float32](t, filepath.Join(dir, "clip.out"), len(clip)), clip)
	sums := sumAbs(x, tokens, cols)
	sameBits(t, "abs_sum_cols vs sumAbs", readLE[float64](t, filepath.Join(dir, "abs.out"), len(sums)), sums)
	sameBits(t, "gather_rows vs sampleTokens", readLE[float32](t, filepath.Join(dir, "gather.out"), len(xs)), xs)
	plain := sampleTokens(x[first*cols:], tokens-first, cols, step, nil)
	sameBits(t, "gather_rows (no scales) vs sampleTokens", readLE[float32](t, filepath.Join(dir, "gather-unscaled.out"), len(plain)), plain)

	var want float64
	for i := range min(tokens, rows) * cols {
		d := float64(x[i]) - float64(w[i])
		want += d * d
	}
	parts := readLE[float64](t, filepath.Join(dir, "sqdiff.out"), 3)
	got := (parts[0] + parts[1] + parts[2]) / 2 // two calls added into the same partials
	if rel := math.Abs(got-want) / want; !(rel <= 1e-12) {
		t.Errorf("sq_diff_sum: %v, sequential sum %v (rel %.2e)", got, want, rel)
	}

	nn := min(tokens, rows) * cols
	var dot, mag float64
	for i := range nn {
		dot += float64(x[i]) * float64(w[i])
		mag += math.Abs(float64(x[i]) * float64(w[i]))
	}
	parts = readLE[float64](t, filepath.Join(dir, "dot.out"), 3)
	if got := (parts[0] + parts[1] + parts[2]) / 2; !(math.Abs(got-dot) <= 1e-12*mag) {
		t.Errorf("dot_sum: %v, sequential sum %v (Σ|x·w| %v)", got, dot, mag)
	}
	half := readLE[uint16](t, filepath.Join(dir, "half.out"), rows*cols)
	for i, v := range w {
		if want := float16.Fromfloat32(v).Bits(); half[i] != want {
			t.Fatalf("to_half(%g) = %#04x, want %#04x", v, half[i], want)
		}
	}
	// silu·up of half values rounded to half: within one half ulp (expf and Go's exp may
	// differ in the last float32 bit).
	silu := readLE[uint16](t, filepath.Join(dir, "silu.out"), nn)
	for i := range nn {
		g, u := float16.Fromfloat32(x[i]).Float32(), float16.Fromfloat32(w[i]).Float32()
		want := float16.Fromfloat32(g / (1 + float32(math.Exp(float64(-g)))) * u).Bits()
		if d := int(silu[i]) - int(want); d < -1 || d > 1 {
			t.Fatalf("silu_mul_half(%g, %g) = %#04x, want %#04x", g, u, silu[i], want)
		}
	}
}

func writeLE[T uint16 | float32 | float64](t *testing.T, path string, v []T) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := binary.Write(f, binary.LittleEndian, v); err != nil {
		t.Fatal(err)
	}
}

func readLE[T uint16 | float32 | float64](t *testing.T, path string, n int) []T {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]T, n)
	if _, err := binary.Decode(b, binary.LittleEndian, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// sameBits reports the values of got that differ from want in any bit.
func sameBits[T float32 | float64](t *testing.T, what string, got, want []T) {
	t.Helper()
	bad := 0
	for i := range want {
		if bitsOf(got[i]) != bitsOf(want[i]) {
			if bad < 3 {
				t.Errorf("%s: [%d] = %v, want %v", what, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(want))
	}
}

func bitsOf[T float32 | float64](v T) uint64 {
	switch v := any(v).(type) {
	case float32:
		return uint64(math.Float32bits(v))
	default:
		return math.Float64bits(v.(float64))
	}
}
