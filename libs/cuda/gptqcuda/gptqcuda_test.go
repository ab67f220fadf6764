package gptqcuda

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/transformer"
)

// openGPU opens device 0 or skips the test when there is none (CI).
func openGPU(t testing.TB) *cuda.Device {
	t.Helper()
	d, err := cuda.Open(context.Background(), 0)
	if errors.Is(err, cuda.ErrUnavailable) {
		t.Skipf("no GPU: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

type layer struct {
	w          []float32
	x          []float32 // tokens×cols
	rows, cols int
	tokens     int
}

// randomLayer is libs/gptq's test generator: a weight and correlated, channel-scaled inputs.
func randomLayer(seed uint64, rows, cols, tokens int) layer {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.05)
	}
	scale := make([]float64, cols)
	for i := range scale {
		scale[i] = math.Exp(rng.NormFloat64())
	}
	const k = 16
	mix := make([]float64, k*cols)
	for i := range mix {
		mix[i] = rng.NormFloat64()
	}
	x := make([]float32, tokens*cols)
	z := make([]float64, k)
	for t := range tokens {
		for i := range z {
			z[i] = rng.NormFloat64()
		}
		for c := range cols {
			v := 0.5 * rng.NormFloat64()
			for i := range k {
				v += z[i] * mix[i*cols+c] / 4
			}
			x[t*cols+c] = float32(v * scale[c])
		}
	}
	return layer{w: w, x: x, rows: rows, cols: cols, tokens: tokens}
}

func cpuHessian(t testing.TB, l layer) *gptq.Hessian {
	h := gptq.NewHessian(l.cols)
	split := l.tokens / 3
	if err := h.Add(l.x[:split*l.cols], split, 1); err != nil {
		t.Fatal(err)
	}
	if err := h.Add(l.x[split*l.cols:], l.tokens-split, 2); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestHessian compares the GPU accumulation (host and device inputs, several chunks) with
// libs/gptq's, relative to the Cauchy–Schwarz bound √(Hii·Hjj).
func TestHessian(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	l := randomLayer(5, 1, 200, 2*chunkTokens+300)
	want, _ := cpuHessian(t, l).Matrix()
	h, err := NewHessian(ctx, d, l.cols)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	split := l.tokens / 3
	if err := h.Add(ctx, l.x[:split*l.cols], split, 1); err != nil {
		t.Fatal(err)
	}
	// The rest from device memory.
	rest := l.x[split*l.cols:]
	xb, err := cuda.Alloc[float32](ctx, d, len(rest))
	if err != nil {
		t.Fatal(err)
	}
	defer xb.Free()
	if err := cuda.Upload(ctx, xb, 0, rest); err != nil {
		t.Fatal(err)
	}
	if err := h.AddDevice(ctx, xb.Ptr(), l.tokens-split, 2); err != nil {
		t.Fatal(err)
	}
	if h.Samples() != 3 || h.Tokens() != int64(l.tokens) {
		t.Fatalf("samples %d tokens %d", h.Samples(), h.Tokens())
	}
	got, err := h.Matrix(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := l.cols
	var worst float64
	for i := range n {
		for j := range n {
			bound := math.Sqrt(want[i*n+i] * want[j*n+j])
			worst = max(worst, math.Abs(got[i*n+j]-want[i*n+j])/bound)
		}
	}
	t.Logf("worst |GPU − CPU| / √(Hii·Hjj) = %.2g", worst)
	if worst > 1e-5 {
		t.Fatalf("GPU Hessian differs from the CPU's by %.3g of the bound", worst)
	}
	c, err := h.ToCPU(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := c.Matrix(); m[3*n+7] != got[3*n+7] || c.Samples() != 3 {
		t.Fatalf("ToCPU: H[3][7] %v vs %v, samples %d", m[3*n+7], got[3*n+7], c.Samples())
	}
	if err := h.Add(ctx, l.x[:5], 1, 1); !errors.Is(err, gptq.ErrShape) {
		t.Fatalf("bad shape: %v", err)
	}
}

// outputError returns tr(D·H·Dᵀ) with D = W − Wq: the calibration output error ‖D·Xᵀ‖²
// up to the factor 2/n.
func outputError(h []float64, w, wq []float32, rows, cols int) float64 {
	d := make([]float32, len(w))
	for i := range d {
		d[i] = w[i] - wq[i]
	}
	h32 := make([]float32, len(h))
	for i, v := range h {
		h32[i] = float32(v)
	}
	dh := make([]float32, len(w))
	transformer.Gemm(false, false, rows, cols, cols, 1, d, cols, h32, cols, 0, dh, cols)
	var s float64
	for i := range d {
		s += float64(d[i]) * float64(dh[i])
	}
	return s
}

type comparison struct {
	equal            float64 // fraction of equal codes
	lossCPU, lossGPU float64
	errCPU, errGPU   float64 // output error relative to RTN's
}

// compare quantizes w with the CPU and the GPU from the same Hessian.
func compare(t *testing.T, ctx context.Context, d *cuda.Device, l layer, hc *gptq.Hessian, cfg gptq.Config) comparison {
	t.Helper()
	want, err := gptq.Quantize(l.w, l.rows, l.cols, hc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hg, err := UploadHessian(ctx, d, hc)
	if err != nil {
		t.Fatal(err)
	}
	defer hg.Close()
	got, err := Quantize(ctx, hg, l.w, l.rows, l.cols, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rtn, err := gptq.RTN(l.w, l.rows, l.cols, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, got, want, cfg)
	H, _ := hc.Matrix()
	er := outputError(H, l.w, rtn.Dequantize(), l.rows, l.cols)
	var same int
	for i := range got.QWeight {
		if got.QWeight[i] == want.QWeight[i] {
			same++
		}
	}
	return comparison{
		equal:   float64(same) / float64(len(got.QWeight)),
		lossCPU: want.Loss, lossGPU: got.Loss,
		errCPU: outputError(H, l.w, want.Dequantize(), l.rows, l.cols) / er,
		errGPU: outputError(H, l.w, got.Dequantize(), l.rows, l.cols) / er,
	}
}

// checkResult checks what must equal the CPU's exactly: shapes, g_idx, damping, dead
// columns, code and zero ranges.
func checkResult(t *testing.T, got, want *gptq.Result, cfg gptq.Config) {
	t.Helper()
	if got.Rows != want.Rows || got.Cols != want.Cols || got.Bits != want.Bits || got.GroupSize != want.GroupSize ||
		got.Sym != want.Sym || len(got.Scales) != len(want.Scales) || len(got.Zeros) != len(want.Zeros) {
		t.Fatalf("%+v: result shape differs from the CPU's", cfg)
	}
	for i := range got.GIdx {
		if got.GIdx[i] != want.GIdx[i] {
			t.Fatalf("%+v: g_idx[%d] = %d, CPU %d", cfg, i, got.GIdx[i], want.GIdx[i])
		}
	}
	if math.Abs(got.Damp-want.Damp) > 1e-12 || got.Dead != want.Dead {
		t.Fatalf("%+v: damp %v dead %d, CPU %v %d", cfg, got.Damp, got.Dead, want.Damp, want.Dead)
	}
	maxq := uint8(1<<cfg.Bits - 1)
	for i, c := range got.QWeight {
		if c > maxq {
			t.Fatalf("code %d at %d above %d", c, i, maxq)
		}
	}
	for i, z := range got.Zeros {
		if z > maxq || (cfg.Sym && z != maxq/2+1) || (cfg.V1Zeros && !cfg.Sym && z == 0) {
			t.Fatalf("%+v: zero %d at %d", cfg, z, i)
		}
	}
}

// TestQuantizeMatchesCPU runs every configuration on the CPU and the GPU from one Hessian:
// the GPTQ loss within 1%, at least 99% of the codes equal, the output error relative to
// round-to-nearest within 1% of the CPU's.
func TestQuantizeMatchesCPU(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	l := randomLayer(1, 96, 640, 2000)
	hc := cpuHessian(t, l)
	for _, cfg := range []gptq.Config{
		{Bits: 4, GroupSize: 128},
		{Bits: 4, GroupSize: 128, Sym: true},
		{Bits: 4, GroupSize: 128, ActOrder: true},
		{Bits: 4, GroupSize: 128, ActOrder: true, StaticGroups: true},
		{Bits: 4, GroupSize: 32, ActOrder: true},
		{Bits: 4, GroupSize: 64},
		{Bits: 4, GroupSize: 256, ActOrder: true},
		{Bits: 4, GroupSize: -1, ActOrder: true},
		{Bits: 3, GroupSize: 128, ActOrder: true, V1Zeros: true},
		{Bits: 2, GroupSize: 64, Sym: true},
		{Bits: 8, GroupSize: -1},
		{Bits: 4, GroupSize: 128, BlockSize: 32, V1Zeros: true},
	} {
		c := compare(t, ctx, d, l, hc, cfg)
		t.Logf("%+v: codes equal %.4f, loss GPU/CPU %.5f, output error vs RTN GPU %.4f CPU %.4f",
			cfg, c.equal, c.lossGPU/c.lossCPU, c.errGPU, c.errCPU)
		if c.equal < 0.99 || math.Abs(c.lossGPU/c.lossCPU-1) > 0.01 || math.Abs(c.errGPU/c.errCPU-1) > 0.01 || !(c.errGPU < 0.9) {
			t.Errorf("%+v: GPU result too far from the CPU's", cfg)
		}
	}
}

// TestEndToEnd quantizes from a Hessian accumulated on the GPU, with dead columns.
func TestEndToEnd(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	l := randomLayer(3, 61, 390, 1500) // rows and columns that fill no warp group or block evenly
	for tok := range l.tokens {
		l.x[tok*l.cols+5] = 0
		l.x[tok*l.cols+77] = 0
	}
	h, err := NewHessian(ctx, d, l.cols)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Add(ctx, l.x, l.tokens, 3); err != nil {
		t.Fatal(err)
	}
	cfg := gptq.Config{Bits: 4, GroupSize: 32, ActOrder: true}
	r, err := Quantize(ctx, h, l.w, l.rows, l.cols, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dead != 2 {
		t.Fatalf("dead %d, want 2", r.Dead)
	}
	dq := r.Dequantize()
	for row := range l.rows {
		for _, c := range []int{5, 77} {
			if dq[row*l.cols+c] != 0 {
				t.Fatalf("dead column %d row %d dequantizes to %v", c, row, dq[row*l.cols+c])
			}
		}
	}
	H, _ := cpuHessian(t, l).Matrix()
	rtn, _ := gptq.RTN(l.w, l.rows, l.cols, cfg)
	if e, er := outputError(H, l.w, dq, l.rows, l.cols), outputError(H, l.w, rtn.Dequantize(), l.rows, l.cols); !(e < 0.9*er) {
		t.Fatalf("output error %.4g not clearly below RTN's %.4g", e, er)
	}
}

// TestIdentityHessian: without error feedback GPTQ equals round-to-nearest exactly.
func TestIdentityHessian(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	l := randomLayer(4, 40, 300, 1)
	id := make([]float64, l.cols*l.cols)
	for i := range l.cols {
		id[i*l.cols+i] = 1
	}
	for _, cfg := range []gptq.Config{{Bits: 4, GroupSize: 64}, {Bits: 3, GroupSize: -1, Sym: true}, {Bits: 4, GroupSize: 32, V1Zeros: true}} {
		hc, _ := gptq.HessianFromSum(l.cols, id, 2, 0)
		hg, err := UploadHessian(ctx, d, hc)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Quantize(ctx, hg, l.w, l.rows, l.cols, cfg)
		hg.Close()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := gptq.RTN(l.w, l.rows, l.cols, cfg)
		for i := range want.QWeight {
			if got.QWeight[i] != want.QWeight[i] {
				t.Fatalf("%+v: code %d = %d, RTN %d", cfg, i, got.QWeight[i], want.QWeight[i])
			}
		}
		for i := range want.Scales {
			if got.Scales[i] != want.Scales[i] || got.Zeros[i] != want.Zeros[i] {
				t.Fatalf("%+v: grid %d = (%v, %d), RTN (%v, %d)", cfg, i, got.Scales[i], got.Zeros[i], want.Scales[i], want.Zeros[i])
			}
		}
	}
}

// TestDamping: an indefinite Hessian raises the damping as on the CPU; one that no damping
// below 1 fixes is ErrNotPositiveDefinite.
func TestDamping(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	w := []float32{0.3, -0.2, 0.1, 0.4, -0.5, 0.25, 0.7, -0.1, 0.05, 0.9, -0.3, -0.6, 0.2, 0.2, -0.8, 0.15}
	hc, _ := gptq.HessianFromSum(2, []float64{1, 1.02, 1.02, 1}, 2, 0)
	hg, err := UploadHessian(ctx, d, hc)
	if err != nil {
		t.Fatal(err)
	}
	defer hg.Close()
	r, err := Quantize(ctx, hg, w, 8, 2, gptq.Config{Bits: 4, GroupSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.Damp-0.03) > 1e-12 {
		t.Fatalf("damp %v, want 0.03", r.Damp)
	}
	hc, _ = gptq.HessianFromSum(2, []float64{1, 3, 3, 1}, 2, 0)
	hg2, err := UploadHessian(ctx, d, hc)
	if err != nil {
		t.Fatal(err)
	}
	defer hg2.Close()
	if _, err := Quantize(ctx, hg2, w, 8, 2, gptq.Config{Bits: 4, GroupSize: -1}); !errors.Is(err, gptq.ErrNotPositiveDefinite) {
		t.Fatalf("error %v, want ErrNotPositiveDefinite", err)
	}
}

func TestBadInput(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	h, err := NewHessian(ctx, d, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	w := make([]float32, 8)
	if _, err := Quantize(ctx, h, w, 2, 4, gptq.Config{Bits: 4, GroupSize: -1}); !errors.Is(err, gptq.ErrNoSamples) {
		t.Errorf("no samples: %v", err)
	}
	x := []float32{1, 2, 3, 4, 0.5, -1, 2, 0}
	if err := h.Add(ctx, x, 2, 1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		w    []float32
		rows int
		cfg  gptq.Config
	}{
		{"bits", gptq.ErrConfig, w, 2, gptq.Config{Bits: 5, GroupSize: -1}},
		{"block", gptq.ErrConfig, w, 2, gptq.Config{Bits: 4, GroupSize: -1, BlockSize: 256}},
		{"shape", gptq.ErrShape, w, 3, gptq.Config{Bits: 4, GroupSize: -1}},
		{"nan", gptq.ErrNonFinite, []float32{1, float32(math.NaN()), 0, 0, 0, 0, 0, 0}, 2, gptq.Config{Bits: 4, GroupSize: -1}},
	} {
		if _, err := Quantize(ctx, h, tc.w, tc.rows, 4, tc.cfg); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
}
