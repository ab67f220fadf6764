package gptq

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/x448/float16"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

// example is the 8×8 fp16 weight of the worked example in ../shared/notes/gptq_awq.md §3d.
var example = [8][8]float32{
	{-0.47, -0.26, 0.03, 0.21, 0.52, 0.77, 0.98, 1.23},
	{0.31, -0.11, 0.19, -0.44, 0.09, 0.02, -0.23, 0.38},
	{0.05, 0.12, 0.17, 0.23, 0.29, 0.36, 0.41, 0.47},
	{-0.81, -0.62, -0.43, -0.22, -0.13, -0.06, -0.03, -0.01},
	{0, 0, 0, 0, 0, 0, 0, 0},
	{0.97, -0.88, 0.51, -0.46, 0.27, -0.19, 0.13, -0.07},
	{0.011, 0.023, -0.031, 0.042, -0.054, 0.061, -0.072, 0.083},
	{-2.03, 0.11, 0.21, 0.33, 0.42, 0.57, 0.61, 2.96},
}

func exampleWeight() []float32 {
	w := make([]float32, 0, 64)
	for _, row := range example {
		for _, v := range row {
			w = append(w, float16.Fromfloat32(v).Float32())
		}
	}
	return w
}

func half(v float32) float16.Float16 { return float16.Fromfloat32(v) }

// TestWorkedExample reproduces the GPTQ codes, zeros and fp16 scales of notes §3d (computed
// there by an independent re-implementation of the reference quantizer).
func TestWorkedExample(t *testing.T) {
	tests := []struct {
		name   string
		sym    bool
		zeros  []uint8
		codes  [8][8]uint8
		scales map[int]float32 // row → fp16 scale, for the rows the notes list
	}{
		{
			name:  "asym",
			zeros: []uint8{4, 8, 0, 15, 7, 7, 7, 6},
			codes: [8][8]uint8{
				{0, 2, 4, 6, 9, 11, 13, 15},
				{14, 6, 11, 0, 10, 8, 4, 15},
				{2, 4, 5, 7, 9, 11, 13, 15},
				{0, 4, 7, 11, 13, 14, 14, 15},
				{7, 7, 7, 7, 7, 7, 7, 7},
				{15, 0, 11, 3, 9, 5, 8, 6},
				{8, 9, 4, 11, 2, 13, 0, 15},
				{0, 6, 7, 7, 7, 8, 8, 15},
			},
			scales: map[int]float32{0: 0.113342, 1: 0.054657, 2: 0.031342, 3: 0.054016, 4: 0.133301, 5: 0.123352, 6: 0.010338, 7: 0.332764},
		},
		{
			name:  "sym",
			sym:   true,
			zeros: []uint8{8, 8, 8, 8, 8, 8, 8, 8},
			// Nibbles of the qweight words 0xFEDB9865 … 0xFA999983 listed in the notes.
			codes: [8][8]uint8{
				{5, 6, 8, 9, 11, 13, 14, 15},
				{13, 6, 11, 0, 10, 8, 4, 14},
				{10, 12, 13, 15, 15, 15, 15, 15},
				{0, 2, 4, 6, 7, 7, 8, 8},
				{8, 8, 8, 8, 8, 8, 8, 8},
				{15, 1, 12, 4, 10, 7, 9, 7},
				{9, 10, 5, 12, 3, 14, 1, 15},
				{3, 8, 9, 9, 9, 9, 10, 15},
			},
			scales: map[int]float32{0: 0.164062},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Bits: 4, GroupSize: 8, Sym: tc.sym}
			r, err := RTN(exampleWeight(), 8, 8, cfg)
			if err != nil {
				t.Fatal(err)
			}
			// GPTQ with an identity Hessian has no error feedback: same codes as RTN.
			h, err := HessianFromSum(8, identity(8), 2, 0)
			if err != nil {
				t.Fatal(err)
			}
			g, err := Quantize(exampleWeight(), 8, 8, h, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, res := range []*Result{r, g} {
				if !slices.Equal(res.Zeros, tc.zeros) {
					t.Errorf("zeros %v, want %v", res.Zeros, tc.zeros)
				}
				for row := range 8 {
					if got := res.QWeight[row*8 : row*8+8]; !slices.Equal(got, tc.codes[row][:]) {
						t.Errorf("row %d codes %v, want %v", row, got, tc.codes[row])
					}
				}
				for row, s := range tc.scales {
					if got, want := half(res.Scales[row]), half(s); got != want {
						t.Errorf("row %d fp16 scale %v, want %v", row, got.Float32(), want.Float32())
					}
				}
				if !slices.Equal(res.GIdx, make([]int32, 8)) {
					t.Errorf("g_idx %v, want zeros", res.GIdx)
				}
			}
		})
	}
}

func identity(n int) []float64 {
	m := make([]float64, n*n)
	for i := range n {
		m[i*n+i] = 1
	}
	return m
}

// TestZeroTie checks the float32 tie of an all-zero asymmetric group for every width: the
// grid is [−1, 1] and 1/scale lands just below .5 in float32 (notes §1.6).
func TestZeroTie(t *testing.T) {
	for _, tc := range []struct {
		bits int
		zero uint8
	}{
		// 4 bits is the notes' example. For the others: f32(2/3) rounds up, and
		// 1/f32(2/3) rounds to exactly 1.5 → 2; f32(2/7) and f32(2/255) round up too, and
		// their reciprocals stay below 3.5 and 127.5 in float32.
		{2, 2}, {3, 3}, {4, 7}, {8, 127},
	} {
		r, err := RTN(make([]float32, 8), 1, 8, Config{Bits: tc.bits, GroupSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		if r.Zeros[0] != tc.zero {
			t.Errorf("%d bits: zero %d, want %d", tc.bits, r.Zeros[0], tc.zero)
		}
	}
}

// TestV1Zeros checks that V1Zeros keeps zero points ≥ 1 and that the widened grid still
// covers the row: row 2 of the example (all positive) has zero 0 in the reference.
func TestV1Zeros(t *testing.T) {
	w := exampleWeight()
	r, err := RTN(w, 8, 8, Config{Bits: 4, GroupSize: 8, V1Zeros: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Zeros, []uint8{4, 8, 1, 15, 7, 7, 7, 6}; !slices.Equal(got, want) {
		t.Fatalf("zeros %v, want %v", got, want)
	}
	d := r.Dequantize()
	s := r.Scales[2]
	for c := range 8 {
		if e := math.Abs(float64(d[16+c] - w[16+c])); e > float64(s)/2*1.001 {
			t.Errorf("row 2 col %d: dequantized %v vs %v, error above scale/2 = %v", c, d[16+c], w[16+c], s/2)
		}
	}
}

// TestReconstruct checks the two ways back from codes: Reconstruct with the solve's float32
// scales (what the pipeline keeps in the layer, as the reference does) and Dequantize with the
// checkpoint's fp16 scales (what loaders compute).
func TestReconstruct(t *testing.T) {
	w := exampleWeight()
	r, err := RTN(w, 8, 8, Config{Bits: 4, GroupSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	full, half := r.Reconstruct(), r.Dequantize()
	differ := 0
	for i := range full {
		row := i / 8
		s, z, q := r.Scales[row], float32(r.Zeros[row]), float32(r.QWeight[i])
		if want := s * (q - z); full[i] != want {
			t.Fatalf("Reconstruct[%d] = %v, want %v", i, full[i], want)
		}
		if want := float16.Fromfloat32(s).Float32() * (q - z); half[i] != want {
			t.Fatalf("Dequantize[%d] = %v, want %v", i, half[i], want)
		}
		if full[i] != half[i] {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("fp16 and float32 scales gave the same weights: the example cannot tell them apart")
	}
}

type layerData struct {
	w      []float32
	x      []float32 // tokens×cols
	rows   int
	cols   int
	tokens int
}

// randomLayer returns a weight and correlated, channel-scaled inputs (the situation GPTQ is
// designed for: outlier channels and correlations between channels).
func randomLayer(seed uint64, rows, cols, tokens int) layerData {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * 0.05)
	}
	scale := make([]float64, cols)
	for i := range scale {
		scale[i] = math.Exp(rng.NormFloat64())
	}
	const k = 16 // latent factors
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
	return layerData{w: w, x: x, rows: rows, cols: cols, tokens: tokens}
}

// outputError returns ‖(W − Wq)Xᵀ‖²_F in float64.
func outputError(l layerData, wq []float32) float64 {
	var sum float64
	diff := make([]float64, l.cols)
	for r := range l.rows {
		for c := range l.cols {
			diff[c] = float64(l.w[r*l.cols+c]) - float64(wq[r*l.cols+c])
		}
		for t := range l.tokens {
			var dot float64
			for c, d := range diff {
				dot += d * float64(l.x[t*l.cols+c])
			}
			sum += dot * dot
		}
	}
	return sum
}

func hessianOf(t testing.TB, x []float32, tokens, cols int) *Hessian {
	h := NewHessian(cols)
	// Two batches of unequal size, to exercise chunking and the sample count.
	split := tokens / 3
	if err := h.Add(x[:split*cols], split, 1); err != nil {
		t.Fatal(err)
	}
	if err := h.Add(x[split*cols:], tokens-split, 2); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestGPTQBeatsRTN checks the purpose of GPTQ: on calibration data its output error is lower
// than round-to-nearest with the same grid settings, for every configuration.
func TestGPTQBeatsRTN(t *testing.T) {
	train := randomLayer(1, 64, 384, 1500)
	h := hessianOf(t, train.x, train.tokens, train.cols)
	held := randomLayer(1, 64, 384, 1500) // same weights and channel statistics
	held2 := randomLayer(1, 64, 384, 3000)
	held.x = held2.x[1500*384:]
	for _, cfg := range []Config{
		{Bits: 4, GroupSize: 128},
		{Bits: 4, GroupSize: 128, Sym: true},
		{Bits: 4, GroupSize: 128, ActOrder: true},
		{Bits: 4, GroupSize: 128, ActOrder: true, StaticGroups: true},
		{Bits: 4, GroupSize: 32, ActOrder: true},
		{Bits: 4, GroupSize: 64},
		{Bits: 4, GroupSize: 256},
		{Bits: 4, GroupSize: -1, ActOrder: true},
		{Bits: 3, GroupSize: 128, ActOrder: true},
		{Bits: 2, GroupSize: 64, Sym: true},
		{Bits: 8, GroupSize: -1},
		{Bits: 4, GroupSize: 128, BlockSize: 32, V1Zeros: true},
	} {
		g, err := Quantize(train.w, train.rows, train.cols, h, cfg)
		if err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
		r, err := RTN(train.w, train.rows, train.cols, cfg)
		if err != nil {
			t.Fatal(err)
		}
		eg, er := outputError(train, g.Dequantize()), outputError(train, r.Dequantize())
		hg, hr := outputError(held, g.Dequantize()), outputError(held, r.Dequantize())
		t.Logf("%+v: calibration error GPTQ/RTN = %.3f, held-out %.3f, loss %.4g, damp %v", cfg, eg/er, hg/hr, g.Loss, g.Damp)
		if !(eg < 0.9*er) || !(hg < 0.9*hr) {
			t.Errorf("%+v: GPTQ error %.4g (held-out %.4g) not clearly below RTN %.4g (%.4g)", cfg, eg, hg, er, hr)
		}
		if g.Damp != DefaultDamp {
			t.Errorf("damp %v, want the default", g.Damp)
		}
		checkCodes(t, g, cfg)
	}
}

func checkCodes(t *testing.T, r *Result, cfg Config) {
	t.Helper()
	maxq := uint8(1<<cfg.Bits - 1)
	for i, c := range r.QWeight {
		if c > maxq {
			t.Fatalf("code %d at %d exceeds %d", c, i, maxq)
		}
	}
	for i, z := range r.Zeros {
		if z > maxq || (cfg.Sym && z != maxq/2+1) || (cfg.V1Zeros && z == 0) {
			t.Fatalf("zero %d at %d out of range", z, i)
		}
	}
	for c, g := range r.GIdx {
		if int(g) < 0 || int(g) >= r.Groups() {
			t.Fatalf("g_idx[%d] = %d of %d groups", c, g, r.Groups())
		}
	}
}

// TestActOrderGIdx checks g_idx against the notes' worked example (§1.7): 8 inputs, group 4,
// diag(H) = [.5 .1 2 .3 .05 3 .2 1]. With a diagonal Hessian there is no error feedback,
// so every group must equal round-to-nearest over the columns g_idx assigns to it.
func TestActOrderGIdx(t *testing.T) {
	diag := []float64{.5, .1, 2, .3, .05, 3, .2, 1}
	sum := make([]float64, 64)
	for i, d := range diag {
		sum[i*8+i] = d
	}
	rng := rand.New(rand.NewPCG(7, 7))
	const rows = 16
	w := make([]float32, rows*8)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	for _, tc := range []struct {
		name   string
		static bool
		gidx   []int32
	}{
		{"dynamic", false, []int32{0, 1, 0, 1, 1, 0, 1, 0}},
		{"static", true, []int32{0, 0, 0, 0, 1, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := HessianFromSum(8, slices.Clone(sum), 2, 0)
			r, err := Quantize(w, rows, 8, h, Config{Bits: 4, GroupSize: 4, ActOrder: true, StaticGroups: tc.static})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.GIdx, tc.gidx) {
				t.Fatalf("g_idx %v, want %v", r.GIdx, tc.gidx)
			}
			for g := range 2 {
				var cols []int
				for c, gi := range r.GIdx {
					if int(gi) == g {
						cols = append(cols, c)
					}
				}
				for row := range rows {
					sub := make([]float32, len(cols))
					for i, c := range cols {
						sub[i] = w[row*8+c]
					}
					ref, err := RTN(sub, 1, len(cols), Config{Bits: 4, GroupSize: -1})
					if err != nil {
						t.Fatal(err)
					}
					if s := r.Scales[g*rows+row]; s != ref.Scales[0] || r.Zeros[g*rows+row] != ref.Zeros[0] {
						t.Fatalf("group %d row %d: grid (%v, %d), want (%v, %d)", g, row, s, r.Zeros[g*rows+row], ref.Scales[0], ref.Zeros[0])
					}
					for i, c := range cols {
						if r.QWeight[row*8+c] != ref.QWeight[i] {
							t.Fatalf("row %d col %d: code %d, want %d", row, c, r.QWeight[row*8+c], ref.QWeight[i])
						}
					}
				}
			}
		})
	}
}

// TestDampRaised checks that an indefinite Hessian raises the damping until Cholesky
// succeeds, and that the damping used is reported. H = [[1, 1.02], [1.02, 1]] has
// eigenvalues 2.02 and −0.02: damp 0.01 and 0.02 fail, 0.03 succeeds.
func TestDampRaised(t *testing.T) {
	h, err := HessianFromSum(2, []float64{1, 1.02, 1.02, 1}, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Add 8 output rows so that shapes are typical.
	w := []float32{0.3, -0.2, 0.1, 0.4, -0.5, 0.25, 0.7, -0.1, 0.05, 0.9, -0.3, -0.6, 0.2, 0.2, -0.8, 0.15}
	r, err := Quantize(w, 8, 2, h, Config{Bits: 4, GroupSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.Damp-0.03) > 1e-12 {
		t.Fatalf("damp %v, want 0.03", r.Damp)
	}
	// A Hessian that no damping below 1 can fix.
	h, _ = HessianFromSum(2, []float64{1, 3, 3, 1}, 2, 0)
	if _, err := Quantize(w, 8, 2, h, Config{Bits: 4, GroupSize: -1}); !errors.Is(err, ErrNotPositiveDefinite) {
		t.Fatalf("error %v, want ErrNotPositiveDefinite", err)
	}
}

// TestDeadColumns checks that an input channel never active in calibration gets weight 0.
func TestDeadColumns(t *testing.T) {
	l := randomLayer(3, 32, 128, 600)
	for tok := range l.tokens {
		l.x[tok*l.cols+5] = 0
		l.x[tok*l.cols+77] = 0
	}
	h := hessianOf(t, l.x, l.tokens, l.cols)
	for _, act := range []bool{false, true} {
		r, err := Quantize(l.w, l.rows, l.cols, h, Config{Bits: 4, GroupSize: 32, ActOrder: act})
		if err != nil {
			t.Fatal(err)
		}
		if r.Dead != 2 {
			t.Errorf("dead %d, want 2", r.Dead)
		}
		d := r.Dequantize()
		for row := range l.rows {
			for _, c := range []int{5, 77} {
				if d[row*l.cols+c] != 0 {
					t.Fatalf("act-order %v: dead column %d row %d dequantizes to %v", act, c, row, d[row*l.cols+c])
				}
			}
		}
	}
}

// TestHessian checks the accumulation against a direct float64 computation of 2/n·Σ x xᵀ,
// and Merge and the binary encoding against the single accumulation.
func TestHessian(t *testing.T) {
	l := randomLayer(5, 1, 96, 1300)
	h := hessianOf(t, l.x, l.tokens, l.cols)
	got, err := h.Matrix()
	if err != nil {
		t.Fatal(err)
	}
	n := l.cols
	for i := range n {
		for j := range n {
			var want float64
			for tok := range l.tokens {
				want += float64(l.x[tok*n+i]) * float64(l.x[tok*n+j])
			}
			want *= 2.0 / 3
			// float32 products summed in float32 over each chunk: error relative to the
			// Cauchy–Schwarz bound sqrt(Hii·Hjj).
			if bound := math.Sqrt(got[i*n+i] * got[j*n+j]); math.Abs(got[i*n+j]-want) > 2e-6*bound {
				t.Fatalf("H[%d][%d] = %v, want %v", i, j, got[i*n+j], want)
			}
		}
	}
	a, b := NewHessian(n), NewHessian(n)
	half := 700
	a.Add(l.x[:half*n], half, 1)
	b.Add(l.x[half*n:], l.tokens-half, 2)
	raw, _ := b.MarshalBinary()
	var c Hessian
	if err := c.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	if err := a.Merge(&c); err != nil {
		t.Fatal(err)
	}
	merged, _ := a.Matrix()
	for i := range n {
		for j := range n {
			// Chunk boundaries differ, so float32 roundings differ slightly.
			if bound := math.Sqrt(got[i*n+i] * got[j*n+j]); math.Abs(merged[i*n+j]-got[i*n+j]) > 2e-6*bound {
				t.Fatalf("merged H[%d][%d] = %v, want %v", i, j, merged[i*n+j], got[i*n+j])
			}
		}
	}
	if a.Samples() != 3 || a.Tokens() != int64(l.tokens) {
		t.Fatalf("samples %d tokens %d", a.Samples(), a.Tokens())
	}
	if err := c.UnmarshalBinary(raw[:len(raw)-1]); err == nil {
		t.Fatal("truncated encoding accepted")
	}
}

func TestBadInput(t *testing.T) {
	h := NewHessian(4)
	w := make([]float32, 8)
	tests := []struct {
		name string
		err  error
		run  func() error
	}{
		{"bits", ErrConfig, func() error { _, err := RTN(w, 2, 4, Config{Bits: 5, GroupSize: -1}); return err }},
		{"group", ErrConfig, func() error { _, err := RTN(w, 2, 4, Config{Bits: 4}); return err }},
		{"shape", ErrShape, func() error { _, err := RTN(w, 3, 4, Config{Bits: 4, GroupSize: -1}); return err }},
		{"no samples", ErrNoSamples, func() error { _, err := Quantize(w, 2, 4, h, Config{Bits: 4, GroupSize: -1}); return err }},
		{"hessian cols", ErrShape, func() error { _, err := Quantize(w, 4, 2, h, Config{Bits: 4, GroupSize: -1}); return err }},
		{"nan", ErrNonFinite, func() error {
			_, err := RTN([]float32{1, float32(math.NaN()), 0, 0}, 1, 4, Config{Bits: 4, GroupSize: -1})
			return err
		}},
		{"inf", ErrNonFinite, func() error {
			_, err := RTN([]float32{1, 0, 0, float32(math.Inf(-1))}, 1, 4, Config{Bits: 4, GroupSize: -1})
			return err
		}},
		{"add shape", ErrShape, func() error { return h.Add(make([]float32, 5), 1, 1) }},
	}
	for _, tc := range tests {
		if err := tc.run(); !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
		}
	}
}

func BenchmarkQuantize(b *testing.B) {
	for _, sz := range []struct{ rows, cols int }{{512, 512}, {512, 1536}} {
		l := randomLayer(9, sz.rows, sz.cols, 2*sz.cols)
		h := hessianOf(b, l.x, l.tokens, l.cols)
		b.Run(fmt.Sprintf("%dx%d", sz.rows, sz.cols), func(b *testing.B) {
			for b.Loop() {
				if _, err := Quantize(l.w, l.rows, l.cols, h, Config{Bits: 4, GroupSize: 128, ActOrder: true}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHessianAdd(b *testing.B) {
	const cols, tokens = 512, 4096
	l := randomLayer(9, 1, cols, tokens)
	h := NewHessian(cols)
	for b.Loop() {
		h.Add(l.x, tokens, 8)
	}
	b.ReportMetric(float64(2*tokens*cols*cols)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// naiveGPTQ is the column-by-column algorithm of notes §1.5 without lazy batches, with the
// inverse-Hessian factor from gonum's mat package and float64 arithmetic: group grids are
// computed from the fully updated weight at each group start. With group size = block size
// (128), this equals the reference's lazy, stale-grid schedule up to rounding.
func naiveGPTQ(t *testing.T, w []float32, rows, cols int, h *Hessian, bits, gs int, actOrder bool) []uint8 {
	H0, _ := h.Matrix()
	n := cols
	// order[p] = original column processed at position p.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	if actOrder {
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(H0[b*n+b], H0[a*n+a]) })
	}
	H := make([]float64, n*n)
	W := make([]float64, len(w))
	for p, c := range order {
		for q, d := range order {
			H[p*n+q] = H0[c*n+d]
		}
		for r := range rows {
			W[r*cols+p] = float64(w[r*cols+c])
		}
	}
	var mean float64
	for i := range n {
		mean += H[i*n+i] / float64(n)
	}
	for i := range n {
		H[i*n+i] += 0.01 * mean
	}
	var chol, chol2 mat.Cholesky
	if !chol.Factorize(mat.NewSymDense(n, H)) {
		t.Fatal("cholesky")
	}
	var inv mat.SymDense
	chol.InverseTo(&inv)
	if !chol2.Factorize(&inv) {
		t.Fatal("cholesky of inverse")
	}
	var U mat.TriDense
	chol2.UTo(&U)
	maxq := float64(int(1)<<bits - 1)
	codes := make([]uint8, rows*cols)
	scale, zero := make([]float64, rows), make([]float64, rows)
	for i := range n {
		if i%gs == 0 {
			for r := range rows {
				lo, hi := 0.0, 0.0
				for _, v := range W[r*cols+i : r*cols+i+gs] {
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
				scale[r] = (hi - lo) / maxq
				zero[r] = math.RoundToEven(-lo / scale[r])
			}
		}
		d := U.At(i, i)
		for r := range rows {
			c := math.Min(math.Max(math.RoundToEven(W[r*cols+i]/scale[r])+zero[r], 0), maxq)
			codes[r*cols+order[i]] = uint8(c)
			e := (W[r*cols+i] - scale[r]*(c-zero[r])) / d
			for j := i + 1; j < n; j++ {
				W[r*cols+j] -= e * U.At(i, j)
			}
		}
	}
	return codes
}

// TestAgainstNaive compares the lazy-batch float32 implementation with naiveGPTQ.
func TestAgainstNaive(t *testing.T) {
	l := randomLayer(11, 48, 512, 1200)
	h := hessianOf(t, l.x, l.tokens, l.cols)
	for _, act := range []bool{false, true} {
		r, err := Quantize(l.w, l.rows, l.cols, h, Config{Bits: 4, GroupSize: 128, ActOrder: act})
		if err != nil {
			t.Fatal(err)
		}
		want := naiveGPTQ(t, l.w, l.rows, l.cols, h, 4, 128, act)
		diff := 0
		for i := range want {
			if r.QWeight[i] != want[i] {
				diff++
			}
		}
		t.Logf("act-order %v: %d of %d codes differ from the float64 column-by-column algorithm", act, diff, len(want))
		if diff > len(want)/200 {
			t.Fatalf("act-order %v: %d of %d codes differ", act, diff, len(want))
		}
	}
}

func BenchmarkInvChol(b *testing.B) {
	for _, n := range []int{1536, 4096, 8192} {
		l := randomLayer(9, 1, n, n+64)
		h := hessianOf(b, l.x, l.tokens, n)
		H, _ := h.Matrix()
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := invCholUpper(H, n, 0.01, 0.01); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(2*float64(n)*float64(n)*float64(n)/3*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// invCholUpper64 is invCholUpper in float64 with LAPACK (no damping steps): the accuracy
// reference of the float32 recursion.
func invCholUpper64(t *testing.T, H []float64, n int, damp float64) []float64 {
	var mean float64
	for i := range n {
		mean += H[i*n+i]
	}
	mean /= float64(n)
	a := make([]float64, n*n) // JHJ, lower triangle
	for i := range n {
		for j := 0; j <= i; j++ {
			a[i*n+j] = H[(n-1-i)*n+(n-1-j)]
		}
		a[i*n+i] += damp * mean
	}
	if _, ok := lapack64.Potrf(blas64.Symmetric{Uplo: blas.Lower, N: n, Data: a, Stride: n}); !ok {
		t.Fatal("float64 Cholesky failed")
	}
	if ok := lapack64.Trtri(blas64.Triangular{Uplo: blas.Lower, Diag: blas.NonUnit, N: n, Data: a, Stride: n}); !ok {
		t.Fatal("float64 triangular inverse failed")
	}
	u := make([]float64, n*n)
	for i := range n {
		for j := i; j < n; j++ {
			u[i*n+j] = a[(n-1-i)*n+(n-1-j)]
		}
	}
	return u
}

// TestFloat32Factor checks the float32 recursive factorization against float64 LAPACK, and
// that it detects an indefinite matrix.
func TestFloat32Factor(t *testing.T) {
	const n = 700 // several recursion levels above the 128 leaves
	l := randomLayer(13, 1, n, 2*n)
	h := hessianOf(t, l.x, l.tokens, n)
	H, _ := h.Matrix()
	want := invCholUpper64(t, H, n, 0.01)
	got, damp, err := invCholUpper(H, n, 0.01, 0.01)
	if err != nil || damp != 0.01 {
		t.Fatal(err, damp)
	}
	var num, den float64
	for i := range want {
		d := float64(got[i]) - want[i]
		num += d * d
		den += want[i] * want[i]
		if i%n < i/n && got[i] != 0 {
			t.Fatalf("U[%d][%d] = %v below the diagonal", i/n, i%n, got[i])
		}
	}
	t.Logf("relative Frobenius difference %.2g", math.Sqrt(num/den))
	if math.Sqrt(num/den) > 1e-4 {
		t.Fatalf("float32 factor differs from float64 by %g", math.Sqrt(num/den))
	}
	// The quantization on top agrees nearly everywhere.
	cfg, _ := Config{Bits: 4, GroupSize: 128}.withDefaults()
	f32, err := Prepare(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f64 := *f32
	f64.u = make([]float32, n*n)
	for i, v := range want {
		f64.u[i] = float32(v)
	}
	w := randomLayer(14, 64, n, 1).w
	q32, _ := f32.Quantize(w, 64, n)
	q64, _ := f64.Quantize(w, 64, n)
	diff := 0
	for i := range q64.QWeight {
		if q64.QWeight[i] != q32.QWeight[i] {
			diff++
		}
	}
	t.Logf("%d of %d codes differ", diff, len(q64.QWeight))
	if diff > len(q64.QWeight)/100 {
		t.Fatalf("%d of %d codes differ", diff, len(q64.QWeight))
	}
	bad := make([]float64, 300*300)
	for i := range 300 {
		for j := range 300 {
			bad[i*300+j] = 1
		}
		bad[i*300+i] = 0.5 // eigenvalues 299.5 and −0.5; damp 0.01 and 0.51 of 0.5 do not fix it
	}
	if _, _, err := invCholUpper(bad, 300, 0.01, 0.5); !errors.Is(err, ErrNotPositiveDefinite) {
		t.Fatalf("indefinite matrix: %v", err)
	}
}
