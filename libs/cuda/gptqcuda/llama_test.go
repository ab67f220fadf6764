package gptqcuda

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/gptq"
)

// genSource makes random test data on the GPU (host generation of 128×2048 tokens of
// 14336 features would take minutes): a counter-based hash turned into normals.
const genSource = `
typedef unsigned long long u64;
__device__ u64 mix64(u64 z) {
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}
__device__ float randn(u64 seed, u64 i) {
	u64 h = mix64(mix64(seed) ^ i);
	float u1 = ((float)(h >> 40) + 1.0f) * (1.0f / 16777217.0f); // (0, 1]
	float u2 = (float)((h >> 16) & 0xffffff) * (1.0f / 16777216.0f);
	return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}
// out[i] = scale·N(0, 1)
extern "C" __global__ void randn_fill(float *out, long long n, float scale, u64 seed) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
		out[i] = scale * randn(seed, (u64)i);
}
// x[t][c] = (x[t][c] + 0.5·N(0, 1))·colscale[c]: the latent-factor part is already in x.
extern "C" __global__ void finish_inputs(float *x, const float *colscale, int cols, long long n, u64 seed) {
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
		x[i] = (x[i] + 0.5f * randn(seed, (u64)i)) * colscale[i % cols];
}
`

// generator makes libs/gptq-style correlated inputs on the GPU: x = (z·mix/4 + 0.5·noise)·scale
// per channel, with 16 latent factors z per token.
type generator struct {
	d          *cuda.Device
	b          *cuda.BLAS
	fill, fin  *cuda.Function
	cols       int
	mix, scale *cuda.Buffer
	z          *cuda.Buffer
	seed       uint64
}

const latent = 16

// llamaDiv shrinks TestLlama8B (sizes and tokens divided by it) for slow or emulated devices.
var llamaDiv = flag.Int("llama.div", 1, "divide TestLlama8B's sizes and token counts by this")

func numCPU() int { return runtime.GOMAXPROCS(0) }

func newGenerator(t testing.TB, ctx context.Context, d *cuda.Device, cols, maxTokens int, seed uint64) *generator {
	t.Helper()
	m, err := d.Module(ctx, "gen.cu", genSource)
	if err != nil {
		t.Fatal(err)
	}
	g := &generator{d: d, cols: cols, seed: seed}
	if g.fill, err = m.Function("randn_fill"); err != nil {
		t.Fatal(err)
	}
	if g.fin, err = m.Function("finish_inputs"); err != nil {
		t.Fatal(err)
	}
	if g.b, err = d.BLAS(ctx); err != nil {
		t.Fatal(err)
	}
	g.mix = g.alloc(t, ctx, latent*cols)
	g.z = g.alloc(t, ctx, latent*maxTokens)
	g.scale = g.alloc(t, ctx, cols)
	rng := rand.New(rand.NewPCG(seed, 2))
	sc := make([]float32, cols)
	for i := range sc {
		sc[i] = float32(math.Exp(rng.NormFloat64()))
	}
	if err := cuda.Upload(ctx, g.scale, 0, sc); err != nil {
		t.Fatal(err)
	}
	g.randn(t, ctx, g.mix, latent*cols, 1)
	return g
}

func (g *generator) alloc(t testing.TB, ctx context.Context, n int) *cuda.Buffer {
	b, err := cuda.Alloc[float32](ctx, g.d, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Free() })
	return b
}

func (g *generator) randn(t testing.TB, ctx context.Context, out *cuda.Buffer, n int, scale float32) {
	g.seed++
	if err := g.fill.Launch(ctx, cuda.Dim3{X: 4096}, cuda.Dim3{X: 256}, 0, out, int64(n), scale, g.seed); err != nil {
		t.Fatal(err)
	}
}

// inputs writes tokens×cols inputs into x.
func (g *generator) inputs(t testing.TB, ctx context.Context, x *cuda.Buffer, tokens int) {
	g.randn(t, ctx, g.z, latent*tokens, 1)
	if err := g.b.Gemm(ctx, false, false, tokens, g.cols, latent, 0.25, g.z.Ptr(), latent, g.mix.Ptr(), g.cols, 0, x.Ptr(), g.cols); err != nil {
		t.Fatal(err)
	}
	g.seed++
	if err := g.fin.Launch(ctx, cuda.Dim3{X: 4096}, cuda.Dim3{X: 256}, 0, x, g.scale, int32(g.cols), int64(tokens*g.cols), g.seed); err != nil {
		t.Fatal(err)
	}
}

// weight returns a rows×cols weight of N(0, 0.05²) values made on the GPU.
func (g *generator) weight(t testing.TB, ctx context.Context, rows, cols int) []float32 {
	b := g.alloc(t, ctx, rows*cols)
	g.randn(t, ctx, b, rows*cols, 0.05)
	w := make([]float32, rows*cols)
	if err := cuda.Download(ctx, w, b, 0); err != nil {
		t.Fatal(err)
	}
	b.Free()
	return w
}

func sync(t testing.TB, ctx context.Context, d *cuda.Device) {
	t.Helper()
	if err := d.Synchronize(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLlama8B is the acceptance run: the seven linears of a Llama-3-8B decoder layer (hidden
// 4096, intermediate 14336) with 128×2048 tokens of correlated random inputs. It logs the
// time of each Hessian (one per input: q/k/v, o, gate/up, down), each factorization and each
// linear's solve on the GPU; the CPU times of libs/gptq on one q_proj-sized linear with
// fewer tokens; and checks the GPU against the CPU on a medium layer.
func TestLlama8B(t *testing.T) {
	if testing.Short() {
		t.Skip("acceptance run skipped in -short mode")
	}
	d := openGPU(t)
	ctx := context.Background()
	free, total, _ := d.MemInfo(ctx)
	drv, nv, bl := cuda.Libraries()
	b, _ := d.BLAS(ctx)
	t.Logf("%v, %d/%d MiB free; libcuda %s, NVRTC %s, cuBLAS %s (version %d)", d, free>>20, total>>20, drv, nv, bl, b.Version())

	t.Run("medium vs CPU", func(t *testing.T) { mediumVsCPU(t, ctx, d) })
	t.Run("CPU vs GPU q_proj", func(t *testing.T) { cpuVsGPU(t, ctx, d) })
	t.Run("layer", func(t *testing.T) { llamaLayer(t, ctx, d) })
}

var llamaCfg = gptq.Config{Bits: 4, GroupSize: 128, ActOrder: true, V1Zeros: true} // quantfleet's README GPTQ run

// mediumVsCPU: a 1024×2048 linear with 8192 tokens, Hessian and solve on both.
func mediumVsCPU(t *testing.T, ctx context.Context, d *cuda.Device) {
	l := randomLayer(11, 1024 / *llamaDiv, 2048 / *llamaDiv, 8192 / *llamaDiv)
	hc := cpuHessian(t, l)
	// Same Hessian, so the same act-order permutation: codes comparable one to one.
	c := compare(t, ctx, d, l, hc, llamaCfg)
	t.Logf("same Hessian: codes equal %.4f, loss GPU/CPU %.5f, output error vs RTN GPU %.4f CPU %.4f", c.equal, c.lossGPU/c.lossCPU, c.errGPU, c.errCPU)
	if c.equal < 0.99 || math.Abs(c.lossGPU/c.lossCPU-1) > 0.01 || math.Abs(c.errGPU/c.errCPU-1) > 0.01 {
		t.Errorf("GPU result too far from the CPU's")
	}
	// Everything on the GPU, from the inputs.
	h, err := NewHessian(ctx, d, l.cols)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Add(ctx, l.x, l.tokens, 3); err != nil { // the CPU's 1 + 2 samples at once
		t.Fatal(err)
	}
	got, err := h.Matrix(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := hc.Matrix()
	n := l.cols
	var worst float64
	for i := range n {
		for j := range n {
			worst = max(worst, math.Abs(got[i*n+j]-want[i*n+j])/math.Sqrt(want[i*n+i]*want[j*n+j]))
		}
	}
	t.Logf("Hessian: worst |GPU − CPU| / √(Hii·Hjj) = %.2g", worst)
	if worst > 1e-5 {
		t.Errorf("GPU Hessian differs by %.3g of the bound", worst)
	}
	rg, err := Quantize(ctx, h, l.w, l.rows, l.cols, llamaCfg)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := gptq.Quantize(l.w, l.rows, l.cols, hc, llamaCfg)
	if err != nil {
		t.Fatal(err)
	}
	rtn, _ := gptq.RTN(l.w, l.rows, l.cols, llamaCfg)
	er := outputError(want, l.w, rtn.Dequantize(), l.rows, l.cols)
	eg, ec := outputError(want, l.w, rg.Dequantize(), l.rows, l.cols)/er, outputError(want, l.w, rc.Dequantize(), l.rows, l.cols)/er
	var same int
	for i := range rg.QWeight {
		if rg.QWeight[i] == rc.QWeight[i] {
			same++
		}
	}
	eq := float64(same) / float64(len(rg.QWeight))
	t.Logf("GPU Hessian + GPU solve vs CPU: codes equal %.4f, loss GPU/CPU %.5f, output error vs RTN GPU %.4f CPU %.4f", eq, rg.Loss/rc.Loss, eg, ec)
	// Different Hessian roundings may reorder near-equal act-order columns: a looser
	// code bound, the same quality bounds.
	if eq < 0.98 || math.Abs(rg.Loss/rc.Loss-1) > 0.01 || math.Abs(eg/ec-1) > 0.01 {
		t.Errorf("end-to-end GPU result too far from the CPU's")
	}
}

// cpuVsGPU times libs/gptq and the GPU on one q_proj (4096×4096) with 8192 tokens.
func cpuVsGPU(t *testing.T, ctx context.Context, d *cuda.Device) {
	rows, cols, tokens := 4096 / *llamaDiv, 4096 / *llamaDiv, 8192
	g := newGenerator(t, ctx, d, cols, tokens, 21)
	xb := g.alloc(t, ctx, tokens*cols)
	g.inputs(t, ctx, xb, tokens)
	x := make([]float32, tokens*cols)
	if err := cuda.Download(ctx, x, xb, 0); err != nil {
		t.Fatal(err)
	}
	w := g.weight(t, ctx, rows, cols)

	start := time.Now()
	hc := gptq.NewHessian(cols)
	if err := hc.Add(x, tokens, 4); err != nil {
		t.Fatal(err)
	}
	cpuHess := time.Since(start)
	start = time.Now()
	f, err := gptq.Prepare(hc, llamaCfg)
	if err != nil {
		t.Fatal(err)
	}
	cpuPrep := time.Since(start)
	start = time.Now()
	rc, err := f.Quantize(w, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	cpuQuant := time.Since(start)

	sync(t, ctx, d)
	start = time.Now()
	h, err := NewHessian(ctx, d, cols)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Add(ctx, x, tokens, 4); err != nil { // from host memory, as the CPU
		t.Fatal(err)
	}
	sync(t, ctx, d)
	gpuHess := time.Since(start)
	start = time.Now()
	fg, err := Prepare(ctx, h, llamaCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fg.Close()
	sync(t, ctx, d)
	gpuPrep := time.Since(start)
	start = time.Now()
	rg, err := fg.Quantize(ctx, w, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	gpuQuant := time.Since(start)
	t.Logf("q_proj %d×%d, %d tokens   Hessian   factor   solve   (CPU: %d threads)", rows, cols, tokens, numCPU())
	t.Logf("  CPU (libs/gptq)            %8.3fs %7.3fs %6.3fs", cpuHess.Seconds(), cpuPrep.Seconds(), cpuQuant.Seconds())
	t.Logf("  GPU                        %8.3fs %7.3fs %6.3fs", gpuHess.Seconds(), gpuPrep.Seconds(), gpuQuant.Seconds())
	t.Logf("  speed-up                   %8.1f× %7.1f× %6.1f×", cpuHess.Seconds()/gpuHess.Seconds(), cpuPrep.Seconds()/gpuPrep.Seconds(), cpuQuant.Seconds()/gpuQuant.Seconds())
	if math.Abs(rg.Loss/rc.Loss-1) > 0.01 {
		t.Errorf("loss GPU %.6g vs CPU %.6g", rg.Loss, rc.Loss)
	}
	t.Logf("  loss GPU/CPU %.5f", rg.Loss/rc.Loss)
}

// llamaLayer times the whole Llama-3-8B layer on the GPU with 128×2048 tokens.
func llamaLayer(t *testing.T, ctx context.Context, d *cuda.Device) {
	div := *llamaDiv
	hidden, inter, tokens := 4096/div, 14336/div, 128*2048/div
	chunk := min(8192, tokens)
	type linear struct {
		name       string
		rows, cols int
	}
	groups := []struct {
		input   string
		cols    int
		linears []linear
	}{
		{"attention input", hidden, []linear{{"q_proj", hidden, hidden}, {"k_proj", hidden / 4, hidden}, {"v_proj", hidden / 4, hidden}}},
		{"o_proj input", hidden, []linear{{"o_proj", hidden, hidden}}},
		{"MLP input", hidden, []linear{{"gate_proj", inter, hidden}, {"up_proj", inter, hidden}}},
		{"down_proj input", inter, []linear{{"down_proj", hidden, inter}}},
	}
	var report strings.Builder
	fmt.Fprintf(&report, "Llama-3-8B layer (sizes / %d), %d tokens, %+v:\n", div, tokens, llamaCfg)
	var total time.Duration
	for gi, grp := range groups {
		g := newGenerator(t, ctx, d, grp.cols, chunk, uint64(100+gi))
		xb := g.alloc(t, ctx, chunk*grp.cols)
		h, err := NewHessian(ctx, d, grp.cols)
		if err != nil {
			t.Fatal(err)
		}
		var hess time.Duration
		for t0 := 0; t0 < tokens; t0 += chunk {
			g.inputs(t, ctx, xb, chunk) // not timed: a GPU forward pass would produce these
			sync(t, ctx, d)
			start := time.Now()
			if err := h.AddDevice(ctx, xb.Ptr(), chunk, max(chunk/2048, 1)); err != nil {
				t.Fatal(err)
			}
			sync(t, ctx, d)
			hess += time.Since(start)
		}
		xb.Free()
		h.ReleaseScratch()
		start := time.Now()
		f, err := Prepare(ctx, h, llamaCfg)
		if err != nil {
			t.Fatal(err)
		}
		sync(t, ctx, d)
		prep := time.Since(start)
		fmt.Fprintf(&report, "  %-16s %5d cols: Hessian %6.3fs (%.1f TFLOP/s), factor %6.3fs (damp %.2f)\n",
			grp.input, grp.cols, hess.Seconds(), float64(grp.cols)*float64(grp.cols)*float64(tokens)/hess.Seconds()/1e12, prep.Seconds(), f.Damp())
		total += hess + prep
		for _, li := range grp.linears {
			w := g.weight(t, ctx, li.rows, li.cols)
			start := time.Now()
			r, err := f.Quantize(ctx, w, li.rows, li.cols)
			if err != nil {
				t.Fatal(err)
			}
			el := time.Since(start)
			total += el
			fmt.Fprintf(&report, "    %-10s %5d×%-5d solve %6.3fs, loss %.4g\n", li.name, li.rows, li.cols, el.Seconds(), r.Loss)
			if !(r.Loss > 0) || math.IsInf(r.Loss, 0) {
				t.Errorf("%s: loss %v", li.name, r.Loss)
			}
		}
		f.Close()
		h.Close()
	}
	fmt.Fprintf(&report, "  total (Hessians + factors + solves) %.2fs", total.Seconds())
	t.Log(report.String())
}
