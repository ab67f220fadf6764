package quantize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/synth"
	"quantfleet.dev/libs/transformer"
)

func synthAssets(t testing.TB) synth.Assets {
	t.Helper()
	a, err := synth.LoadRepoAssets("..", shared(t))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// synthMixtral loads the synthetic Mixtral (2 layers of 8 experts), closed when t ends.
func synthMixtral(t *testing.T) *transformer.Model {
	src, err := synth.Write(t.TempDir(), "Mixtral-synth-8x", synthAssets(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err := transformer.Load(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// archCases are the synthetic checkpoints of the architectures beyond the Llama layout, with
// the quantized linears of a layer and the dense tensors of a layer that must stay as they are.
var archCases = []struct {
	model, arch string
	linears     int      // quantized linears per layer
	dense       []string // layer-0 tensors copied unquantized (besides the norms)
	awq         bool     // AWQ supports it (AutoAWQ has the model); else AWQ refuses it
}{
	{"gemma-2-synth-it", "Gemma2ForCausalLM", 7, nil, true},
	{"gemma-3-synth-it", "Gemma3ForCausalLM", 7, nil, false},
	{"gemma-3-synth-mm", "Gemma3ForConditionalGeneration", 7, nil, false}, // keeps model.language_model. names
	{"Phi-3-synth-128k-instruct", "Phi3ForCausalLM", 4, nil, true},
	{"Phi-3-mini-synth-4k-instruct", "Phi3ForCausalLM", 4, nil, true}, // no grouped-query attention
	{"Mixtral-synth-8x", "MixtralForCausalLM", 4 + 8*3, []string{"block_sparse_moe.gate.weight"}, true},
	{"Qwen3-MoE-synth", "Qwen3MoeForCausalLM", 4 + 16*3, []string{"mlp.gate.weight"}, true},
	{"Qwen1.5-MoE-synth", "Qwen2MoeForCausalLM", 4 + 3 + 4*3, []string{"mlp.gate.weight", "mlp.shared_expert_gate.weight"}, false},
}

// TestGPTQArchitectures quantizes each synthetic architecture to GPTQ 4-bit with the local
// pipeline (4 samples of 32 tokens in 2 shards) and reads the checkpoint back: every quantized
// linear under the source's name with its shape, the router and shared-expert gate dense and
// unchanged, modules_in_block_to_quantize listing the quantized linears of mixtures of experts;
// the checkpoint's perplexity must be finite and within 10 % of the unquantized model's (random
// weights: both are near the vocabulary size, and 4 bits barely move them). AWQ refuses those
// AutoAWQ has no model for with a bad-input error (TestAWQArchitectures runs the others).
func TestGPTQArchitectures(t *testing.T) {
	a := synthAssets(t)
	calib := filepath.Join(shared(t), "data", "calib.txt")
	ctx := context.Background()
	for _, tc := range archCases {
		t.Run(tc.model, func(t *testing.T) {
			if testing.Short() && tc.model != "Mixtral-synth-8x" {
				t.Skip("whole-model quantization and eval; -short runs Mixtral's only")
			}
			dir := t.TempDir()
			src, err := synth.Write(dir, tc.model, a)
			if err != nil {
				t.Skip(err) // Qwen1.5-MoE needs shared/tokenizers/qwen3
			}
			req := Request{ModelDir: src, CalibrationData: calib, CalibrationSamples: 4, SeqLen: 32, ShardSamples: 2,
				TempDir: dir, OutputDir: filepath.Join(dir, "out"), OutputName: "gptq"}
			if !tc.awq {
				_, err := Layered(ctx, req, domain.FormatAWQ, "4bit", 32, domain.LayerOptions{})
				if !errors.Is(err, fault.ErrBadInput) || !strings.Contains(err.Error(), tc.arch) || !strings.Contains(err.Error(), "AWQ") {
					t.Errorf("AWQ of %s: %v, want a bad-input error naming the architecture", tc.arch, err)
				}
			}
			res, err := Layered(ctx, req, domain.FormatGPTQ, "4bit", 32, domain.LayerOptions{Sym: true})
			if err != nil {
				t.Fatal(err)
			}
			out := res.OutputPath
			rounded := 0 // groups < 0.5 % of the calibration tokens reached: rounded to nearest (damp 0)
			for _, st := range res.QuantizationMetadata["linears"].([]LinearStats) {
				if st.Damp == 0 {
					rounded++
				}
			}
			t.Logf("%s: %d linears rounded to nearest (experts < 0.5 %% of the tokens reached)", tc.arch, rounded)
			m, ck := openArchCheckpoint(t, src, out)
			qc := ck.Config()
			if qc.Method != hfquant.GPTQ || qc.Bits != 4 || qc.GroupSize != 32 {
				t.Errorf("quantization config %+v", qc)
			}
			stage := StageOf(m.Config)
			for i := range m.Config.NumLayers {
				l, err := m.Layer(i)
				if err != nil {
					t.Fatal(err)
				}
				if got := len(l.Linears()); got != tc.linears {
					t.Errorf("layer %d: %d quantized linears, want %d", i, got, tc.linears)
				}
				var inStage []string
				for _, g := range stage.Groups {
					inStage = append(inStage, g...)
				}
				for _, lin := range l.Linears() {
					if !slices.Contains(inStage, lin.Name) {
						t.Errorf("%s is in no group of the stage", lin.Name)
					}
					q, err := ck.Linear(sourcePrefix(tc.model, i) + lin.Name)
					if err != nil {
						t.Fatal(err)
					}
					if q.Rows != lin.Out || q.Cols != lin.In {
						t.Errorf("%s: %d×%d, source %d×%d", q.Name, q.Rows, q.Cols, lin.Out, lin.In)
						continue
					}
					// 4 bits in groups of 32 keep a weight within about 10 % (relative
					// Frobenius error); a zeroed or scrambled expert would not be.
					var num, den float64
					for j, v := range q.Dequantize() {
						d := float64(v - lin.Weight[j])
						num, den = num+d*d, den+float64(lin.Weight[j])*float64(lin.Weight[j])
					}
					if e := math.Sqrt(num / den); e > 0.2 {
						t.Errorf("%s: relative error %.3f", q.Name, e)
					}
				}
				l.Release()
				for _, d := range tc.dense {
					name := layerPrefix(i) + d
					if ck.IsQuantized(name) {
						t.Errorf("%s was quantized", name)
					}
					got, _, err := ck.Float32(name)
					want, _, err2 := m.Source.Float32(name)
					if err != nil || err2 != nil || !slices.Equal(got, want) {
						t.Errorf("%s differs from the source (%v, %v)", name, err, err2)
					}
				}
			}
			var cfg struct {
				Q struct {
					Modules [][]string `json:"modules_in_block_to_quantize"`
				} `json:"quantization_config"`
			}
			readConfig(t, out, &cfg)
			if tc.dense != nil && !slices.EqualFunc(cfg.Q.Modules, stage.Groups, slices.Equal) {
				t.Errorf("modules_in_block_to_quantize %v, the stage %v", cfg.Q.Modules, stage.Groups)
			}
			checkArchCheckpoint(t, src, ck, out, tc.arch+" GPTQ 4-bit g32")
		})
	}
}

// openArchCheckpoint loads the synthetic model in src and opens its quantized checkpoint in out,
// both closed when t ends.
func openArchCheckpoint(t *testing.T, src, out string) (*transformer.Model, *hfquant.Checkpoint) {
	t.Helper()
	m, err := transformer.Load(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ck, err := hfquant.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return m, ck
}

// readConfig decodes the config.json of checkpoint dir into v.
func readConfig(t *testing.T, dir string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err == nil {
		err = json.Unmarshal(raw, v)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// checkArchCheckpoint checks what every architecture's quantized checkpoint ck (in out, of the
// synthetic model in src) must be: every source tensor in it under its name (quantized or
// copied), and its perplexity finite and within 10 % of the unquantized model's (random weights:
// both are near the vocabulary size, and 4 bits barely move them).
func checkArchCheckpoint(t *testing.T, src string, ck *hfquant.Checkpoint, out, what string) {
	t.Helper()
	sm, err := safetensors.OpenModel(src)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	names := ck.Names()
	for _, st := range sm.Tensors() {
		if !slices.Contains(names, st.Name) {
			t.Errorf("source tensor %s missing from the checkpoint", st.Name)
		}
	}
	evalText := filepath.Join(shared(t), "data", "eval.txt")
	eval := func(d string) float64 {
		r, err := Evaluate(context.Background(), EvalRequest{ModelDir: d, DataPath: evalText, Ctx: 64, Windows: 4})
		if err != nil {
			t.Fatal(err)
		}
		return r.Perplexity
	}
	base, q := eval(src), eval(out)
	t.Logf("%s: perplexity %.3f unquantized, %.3f quantized", what, base, q)
	if math.IsNaN(q) || math.IsInf(q, 0) || q > 1.1*base || q < base/1.1 {
		t.Errorf("%s: perplexity %v, unquantized %v", what, q, base)
	}
}

// sourcePrefix is the module path of layer i in the synthetic checkpoint model.
func sourcePrefix(model string, i int) string {
	if strings.HasSuffix(model, "-mm") {
		return fmt.Sprintf("model.language_model.layers.%d.", i)
	}
	return layerPrefix(i)
}

// TestStageOfMoE checks the mixture-of-experts stage: attention groups in sequence, each
// expert's gate/up after attention only and its down after its own gate/up, so that experts are
// independent tasks.
func TestStageOfMoE(t *testing.T) {
	a := synthAssets(t)
	src, err := synth.Write(t.TempDir(), "Mixtral-synth-8x", a)
	if err != nil {
		t.Fatal(err)
	}
	c, err := transformer.ReadConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	s := StageOf(c)
	if len(s.Groups) != 2+2*8 || s.check() != nil {
		t.Fatalf("%d groups (%v)", len(s.Groups), s.check())
	}
	want := map[int][]int{0: {}, 1: {0}, 2: {0, 1}, 3: {0, 1, 2}, 16: {0, 1}, 17: {0, 1, 16}}
	for g, deps := range want {
		if got := s.after(g); !slices.Equal(got, deps) && (len(got) != 0 || len(deps) != 0) {
			t.Errorf("group %d %v after %v, want %v", g, s.Groups[g], got, deps)
		}
	}
	if !slices.Equal(s.Groups[16], []string{"block_sparse_moe.experts.7.w1", "block_sparse_moe.experts.7.w3"}) {
		t.Errorf("group 16: %v", s.Groups[16])
	}
	if d := StageOf(&transformer.Config{}); d.After != nil || !slices.EqualFunc(d.Groups, GPTQStage().Groups, slices.Equal) {
		t.Errorf("dense stage %+v", d)
	}
}

// TestRTNArchitectures: round-to-nearest (no calibration, one task per layer) quantizes the same
// linears as GPTQ, routers and shared-expert gates left dense.
func TestRTNArchitectures(t *testing.T) {
	a := synthAssets(t)
	for _, tc := range archCases {
		if tc.dense == nil && tc.model != "Phi-3-synth-128k-instruct" {
			continue // the dense layouts' linears are those of the GPTQ test
		}
		t.Run(tc.model, func(t *testing.T) {
			dir := t.TempDir()
			src, err := synth.Write(dir, tc.model, a)
			if err != nil {
				t.Skip(err)
			}
			req := Request{ModelDir: src, OutputDir: filepath.Join(dir, "out"), OutputName: "rtn"}
			res, err := Layered(context.Background(), req, domain.FormatGPTQ, "4bit", 32, domain.LayerOptions{Sym: true, RTN: true})
			if err != nil {
				t.Fatal(err)
			}
			ck, err := hfquant.Open(res.OutputPath)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			n := 0
			for _, name := range ck.Names() {
				if ck.IsQuantized(name) {
					n++
				}
			}
			if want := 2 * tc.linears; n != want {
				t.Errorf("%d quantized linears, want %d", n, want)
			}
			for _, d := range tc.dense {
				if ck.IsQuantized(layerPrefix(0) + d) {
					t.Errorf("%s was quantized", d)
				}
			}
		})
	}
}

// TestLowSampleFallback: a group that less than 0.5 % of the calibration tokens reach is rounded
// to nearest (GPTQModel's Fallback threshold), one reached by more is solved by GPTQ.
func TestLowSampleFallback(t *testing.T) {
	m := synthMixtral(t)
	l, err := m.Layer(0)
	if err != nil {
		t.Fatal(err)
	}
	group := StageOf(m.Config).Groups[2] // expert 0's w1, w3
	h := gptq.NewHessian(m.Config.HiddenSize)
	x := make([]float32, 3*m.Config.HiddenSize)
	for i := range x {
		x[i] = float32((i*7919)%201-100) / 100
	}
	if err := h.Add(x, 3, 1); err != nil {
		t.Fatal(err)
	}
	cfg := gptq.Config{Bits: 4, GroupSize: 32, Sym: true}
	for _, tc := range []struct {
		calib   int64
		rounded bool
	}{{1000, true}, {601, true}, {600, false}, {100, false}} {
		r, err := solveGroup(context.Background(), CPU{}, l, group, h, cfg, tc.calib)
		if err != nil {
			t.Fatal(err)
		}
		if rounded := r.Stats[0].Damp == 0; rounded != tc.rounded {
			t.Errorf("3 of %d tokens: rounded %v, want %v", tc.calib, rounded, tc.rounded)
		}
	}
}
