package llamacuda

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/sharedtest"
	"quantfleet.dev/libs/tokenizer"
	"quantfleet.dev/libs/transformer"
)

func openGPU(t testing.TB) *cuda.Device {
	t.Helper()
	d, err := cuda.Open(context.Background(), 0)
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// shared returns env's path (on a GPU machine without ../shared) or ../shared/elem.
func shared(t testing.TB, env string, elem ...string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	return sharedtest.Path(t, elem...)
}

func tinyLlama(t testing.TB) *transformer.Model {
	m, err := transformer.Load(shared(t, "QUANTFLEET_TINY_LLAMA", "models", "tiny-llama"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// tinyCalibration returns the inputs of tiny-llama's (m's) layer 0 for calibration samples
// 0..n-1 of seqlen tokens of calib.txt.
func tinyCalibration(t testing.TB, m *transformer.Model, seqlen, n int) *transformer.Tensor {
	tok, err := tokenizer.Load(shared(t, "QUANTFLEET_TINY_LLAMA", "models", "tiny-llama"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := quantize.CalibrationInputs(m, tok, shared(t, "QUANTFLEET_CALIB", "data", "calib.txt"), seqlen, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// relErr is max|a−b| / max|b|.
func relErr(a, b []float32) float64 {
	var d, m float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		m = max(m, math.Abs(float64(b[i])))
	}
	if m == 0 {
		return d
	}
	return d / m
}

func randTensor(rng *rand.Rand, batch, seq, dim int, scale float32) *transformer.Tensor {
	x := transformer.NewTensor(batch, seq, dim)
	for i := range x.Data {
		x.Data[i] = scale * float32(rng.NormFloat64())
	}
	return x
}

// upload puts l and x on d, freed when the test ends.
func upload(t testing.TB, d *cuda.Device, c *transformer.Config, l *transformer.Layer, x *transformer.Tensor) (*Layer, *Tensor) {
	t.Helper()
	ctx := context.Background()
	g, err := UploadLayer(ctx, d, c, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	xd, err := UploadTensor(ctx, d, x)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(xd.Free)
	return g, xd
}

// compareForward runs layer l of m on x on the CPU and the GPU and compares the outputs
// and every hooked linear input.
func compareForward(t *testing.T, d *cuda.Device, m *transformer.Model, l *transformer.Layer, x *transformer.Tensor, tol float64) {
	t.Helper()
	ctx := context.Background()
	cpuIn := map[string][]float32{}
	want, err := l.Forward(x, func(names []string, in *transformer.Tensor) {
		cpuIn[names[0]] = append(cpuIn[names[0]], in.Data...)
	})
	if err != nil {
		t.Fatal(err)
	}
	g, xd := upload(t, d, m.Config, l, x)
	gpuIn := map[string][]float32{}
	yd, err := g.Forward(ctx, xd, func(ctx context.Context, names []string, in *Tensor) error {
		h, err := in.Download(ctx)
		gpuIn[names[0]] = append(gpuIn[names[0]], h.Data...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer yd.Free()
	got, err := yd.Download(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := relErr(got.Data, want.Data)
	t.Logf("layer %d output: max rel err %.2e", l.Index, e)
	if e > tol || math.IsNaN(e) {
		t.Errorf("layer %d output: max relative error %.3g > %g", l.Index, e, tol)
	}
	for name, w := range cpuIn {
		gi := gpuIn[name]
		if len(gi) != len(w) {
			t.Errorf("%s: GPU hook saw %d values, CPU %d", name, len(gi), len(w))
			continue
		}
		if e := relErr(gi, w); e > tol || math.IsNaN(e) {
			t.Errorf("%s input: max relative error %.3g > %g", name, e, tol)
		}
	}
	if len(gpuIn) != 4 {
		t.Errorf("GPU hook saw groups %v", gpuIn)
	}
}

func TestForwardTinyLlama(t *testing.T) {
	d := openGPU(t)
	m := tinyLlama(t)
	rng := rand.New(rand.NewPCG(1, 2))
	seqs := make([][]int, 3)
	for i := range seqs {
		seqs[i] = make([]int, 70)
		for j := range seqs[i] {
			seqs[i][j] = rng.IntN(m.Config.VocabSize)
		}
	}
	x, err := m.Embed(seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		l, err := m.Layer(i)
		if err != nil {
			t.Fatal(err)
		}
		compareForward(t, d, m, l, x, 1e-5)
		if x, err = l.Forward(x, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// randomSource serves random weights of the shapes the config implies.
type randomSource struct {
	shapes map[string][]int64
	seed   uint64
}

func (s randomSource) Float32(name string) ([]float32, []int64, error) {
	shape, ok := s.shapes[name]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", transformer.ErrWeightNotFound, name)
	}
	n := 1
	for _, v := range shape {
		n *= int(v)
	}
	h := uint64(0)
	for _, c := range name {
		h = h*131 + uint64(c)
	}
	rng := rand.New(rand.NewPCG(s.seed, h))
	w := make([]float32, n)
	norm := len(shape) == 1 && !slices.Contains([]string{"bias"}, name[len(name)-4:])
	for i := range w {
		if norm {
			w[i] = 1 + 0.2*float32(rng.NormFloat64())
		} else {
			w[i] = 0.08 * float32(rng.NormFloat64())
		}
	}
	return w, shape, nil
}

func syntheticModel(t testing.TB, cfg map[string]any) *transformer.Model {
	t.Helper()
	base := map[string]any{
		"hidden_size": 128, "intermediate_size": 320, "num_hidden_layers": 2, "num_attention_heads": 4,
		"num_key_value_heads": 2, "head_dim": 32, "vocab_size": 100, "rms_norm_eps": 1e-6,
		"max_position_embeddings": 64,
	}
	for k, v := range cfg {
		base[k] = v
	}
	raw, _ := json.Marshal(base)
	c, err := transformer.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	src := randomSource{shapes: map[string][]int64{}, seed: 7}
	for i := 0; i < c.NumLayers; i++ {
		for _, s := range c.Dims().Block(i) {
			src.shapes[s.Name] = s.Shape
		}
	}
	return transformer.New(c, src)
}

func TestForwardSynthetic(t *testing.T) {
	d := openGPU(t)
	cases := []struct {
		name string
		cfg  map[string]any
	}{
		{"llama-mha", map[string]any{"architectures": []string{"LlamaForCausalLM"}, "num_key_value_heads": 4}},
		{"llama3-rope-gqa", map[string]any{"architectures": []string{"LlamaForCausalLM"}, "rope_theta": 500000.0,
			"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}},
		{"llama-biases-yarn", map[string]any{"architectures": []string{"LlamaForCausalLM"}, "attention_bias": true, "mlp_bias": true,
			"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}}},
		{"qwen2-biases-linear", map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "num_key_value_heads": 1,
			"rope_scaling": map[string]any{"rope_type": "linear", "factor": 2.0}}},
		{"qwen3-qknorm-hd64", map[string]any{"architectures": []string{"Qwen3ForCausalLM"}, "head_dim": 64}},
		{"mistral-window-dynamic", map[string]any{"architectures": []string{"MistralForCausalLM"}, "sliding_window": 5,
			"rope_scaling": map[string]any{"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 16}},
		{"llama-hd80", map[string]any{"architectures": []string{"LlamaForCausalLM"}, "head_dim": 80, "num_attention_heads": 2, "num_key_value_heads": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := syntheticModel(t, tc.cfg)
			rng := rand.New(rand.NewPCG(3, 4))
			x := randTensor(rng, 2, 45, m.Config.HiddenSize, 1)
			for i := 0; i < m.Config.NumLayers; i++ {
				l, err := m.Layer(i)
				if err != nil {
					t.Fatal(err)
				}
				compareForward(t, d, m, l, x, 1e-5)
			}
		})
	}
	t.Run("one-token-sequences", func(t *testing.T) {
		m := syntheticModel(t, map[string]any{"architectures": []string{"Qwen3ForCausalLM"}})
		l, err := m.Layer(0)
		if err != nil {
			t.Fatal(err)
		}
		compareForward(t, d, m, l, randTensor(rand.New(rand.NewPCG(5, 6)), 7, 1, m.Config.HiddenSize, 1), 1e-5)
	})
}

// TestAttentionPaths: the batched-GEMM attention one (sequence, kv head) pair per step, and
// the attention kernel that takes over when a pair's scores exceed the bound, both match the
// CPU (GQA with llama3 rope; a sliding window shorter than the sequence).
func TestAttentionPaths(t *testing.T) {
	d := openGPU(t)
	defer func(v int) { attnScoreFloats = v }(attnScoreFloats)
	for _, tc := range []struct {
		name string
		cfg  map[string]any
	}{
		{"gqa", map[string]any{"architectures": []string{"LlamaForCausalLM"}, "num_key_value_heads": 1}},
		{"window", map[string]any{"architectures": []string{"MistralForCausalLM"}, "sliding_window": 5, "max_position_embeddings": 16}},
	} {
		m := syntheticModel(t, tc.cfg)
		l, err := m.Layer(0)
		if err != nil {
			t.Fatal(err)
		}
		x := randTensor(rand.New(rand.NewPCG(3, 4)), 3, 45, m.Config.HiddenSize, 1)
		r := m.Config.NumHeads / m.Config.NumKVHeads
		for _, p := range []struct {
			name   string
			scores int
		}{{"pair-per-step", r * 45 * 45}, {"kernel", r*45*45 - 1}} {
			t.Run(tc.name+"/"+p.name, func(t *testing.T) {
				attnScoreFloats = p.scores
				compareForward(t, d, m, l, x, 1e-5)
			})
		}
	}
}

// TestFlashAttention: the half grid's flash_attention on random q, k and v equals the float32
// GEMM path's attention within 5e-3·max|v| (q, k, v and the probabilities rounded to half),
// with grouped-query heads of 64 and 128, a sliding window and sequences that end inside a
// tile. (The kernel's fragments and masks against float64: libs/awq's emulated
// TestGPUFlashAttentionMatchesHost.)
func TestFlashAttention(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		cfg        map[string]any
		batch, seq int
	}{
		{"gqa-64", map[string]any{"architectures": []string{"LlamaForCausalLM"}, "hidden_size": 256, "num_attention_heads": 4,
			"num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 256}, 3, 200},
		{"gqa-128", map[string]any{"architectures": []string{"LlamaForCausalLM"}, "hidden_size": 512, "num_attention_heads": 4,
			"num_key_value_heads": 1, "head_dim": 128, "max_position_embeddings": 256}, 2, 130},
		{"window", map[string]any{"architectures": []string{"MistralForCausalLM"}, "sliding_window": 37, "max_position_embeddings": 128}, 2, 100},
		{"window-long", map[string]any{"architectures": []string{"MistralForCausalLM"}, "sliding_window": 150, "max_position_embeddings": 512}, 1, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := syntheticModel(t, tc.cfg)
			g, ws, vmax := randomAttention(t, d, m, tc.batch, tc.seq, rand.New(rand.NewPCG(5, uint64(tc.seq))))
			defer g.Close()
			if !g.flashFits() {
				t.Skipf("flash_attention does not take %d-wide heads on compute capability %v", m.Config.HeadDim, d)
			}
			scale := float32(1 / math.Sqrt(float64(m.Config.HeadDim)))
			out := func(run func() error) []float32 {
				if err := run(); err != nil {
					t.Fatal(err)
				}
				o := make([]float32, tc.batch*tc.seq*g.o.in)
				if err := cuda.Download(ctx, o, ws.ctx, 0); err != nil {
					t.Fatal(err)
				}
				return o
			}
			want := out(func() error {
				ok, err := g.attendGemm(ctx, ws, tc.batch, tc.seq, scale)
				if err == nil && !ok {
					err = fmt.Errorf("the GEMM path refused %d×%d", tc.batch, tc.seq)
				}
				return err
			})
			got := out(func() error { return g.attendFlash(ctx, ws, tc.batch, tc.seq, scale) })
			var worst float64
			for i := range want {
				worst = max(worst, math.Abs(float64(got[i])-float64(want[i])))
			}
			if !(worst <= 5e-3*vmax) {
				t.Errorf("FAIL flash vs float32 attention: max |Δ| %.3g > 5e-3·max|v| (%.3g)", worst, vmax)
			} else {
				t.Logf("PASS flash vs float32 attention: max |Δ| %.2e (max|v| %.2f)", worst, vmax)
			}
		})
	}
}

// randomAttention uploads layer 0 of m and fills a workspace of batch×seq rows with N(0, 1)
// q, k and v; it returns the layer (to Close), the workspace and max |v|.
func randomAttention(tb testing.TB, d *cuda.Device, m *transformer.Model, batch, seq int, rng *rand.Rand) (*Layer, *workspace, float64) {
	tb.Helper()
	ctx := context.Background()
	l, err := m.Layer(0)
	if err != nil {
		tb.Fatal(err)
	}
	g, err := UploadLayer(ctx, d, m.Config, l)
	if err != nil {
		tb.Fatal(err)
	}
	ws, err := g.workspace(ctx, batch*seq)
	if err != nil {
		g.Close()
		tb.Fatal(err)
	}
	var vmax float64
	for _, buf := range []*cuda.Buffer{ws.q, ws.k, ws.v} {
		v := make([]float32, buf.Size()/4)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
			if buf == ws.v {
				vmax = max(vmax, math.Abs(float64(v[i])))
			}
		}
		if err := cuda.Upload(ctx, buf, 0, v); err != nil {
			g.Close()
			tb.Fatal(err)
		}
	}
	return g, ws, vmax
}

// BenchmarkAttention times the attention of a Llama-3-8B-shaped layer (32 query heads, 8 kv
// heads of 128) on 8 sequences of 2048 tokens: the batched-GEMM path, the kernel and the half
// grid's flash_attention (its conversion of q, k and v to half included).
func BenchmarkAttention(b *testing.B) {
	d := openGPU(b)
	ctx := context.Background()
	m := syntheticModel(b, map[string]any{"architectures": []string{"LlamaForCausalLM"}, "hidden_size": 4096,
		"intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
		"max_position_embeddings": 2048})
	const batch, seq = 8, 2048
	g, ws, _ := randomAttention(b, d, m, batch, seq, rand.New(rand.NewPCG(1, 2)))
	defer g.Close()
	scale := float32(1 / math.Sqrt(128))
	regs, local, err := g.k.flashAttention128.Resources()
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("flash_attention_128: %d registers, %d bytes of local memory a thread\n", regs, local)
	// causal: QKᵀ and PV over the visible keys, 2 flops a multiply-add
	flops := float64(batch) * 32 * float64(seq) * float64(seq+1) / 2 * 128 * 4
	for _, p := range []struct {
		name string
		run  func() error
	}{
		{"gemm", func() error {
			ok, err := g.attendGemm(ctx, ws, batch, seq, scale)
			if err == nil && !ok {
				err = fmt.Errorf("the GEMM path refused %d×%d", batch, seq)
			}
			return err
		}},
		{"kernel", func() error { return g.attendKernel(ctx, ws, batch, seq, scale) }},
		{"flash", func() error { return g.attendFlash(ctx, ws, batch, seq, scale) }},
	} {
		b.Run(p.name, func(b *testing.B) {
			if err := p.run(); err != nil { // warm-up, scratch allocation
				b.Fatal(err)
			}
			if err := d.Synchronize(ctx); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if err := p.run(); err != nil {
					b.Fatal(err)
				}
			}
			if err := d.Synchronize(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
		})
	}
}

// TestOptionsFromEnv: both speed-ups are on unless the environment turns one off.
func TestOptionsFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want Options
	}{
		{nil, Options{TF32: true, AWQHalf: true}},
		{map[string]string{EnvTF32: "1", EnvAWQHalf: "true"}, Options{TF32: true, AWQHalf: true}},
		{map[string]string{EnvTF32: "0"}, Options{AWQHalf: true}},
		{map[string]string{EnvAWQHalf: "false"}, Options{TF32: true}},
		{map[string]string{EnvTF32: "false", EnvAWQHalf: "0"}, Options{}},
	} {
		if got := OptionsFromEnv(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("env %v: got %+v, want %+v", tc.env, got, tc.want)
		}
	}
}
