package quantize

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/x448/float16"

	"quantfleet.dev/libs/awq"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/synth"
	"quantfleet.dev/libs/transformer"
)

// awqArchPrevs are the prev ops of the scaling groups of each AWQ-supported synthetic model
// (AutoAWQ's get_layers_for_scaling): no v → o group with grouped-query attention, Phi-3-mini's
// o_proj after the fused qkv_proj; a mixture of experts scales every expert's gate/up after
// post_attention_layernorm, then each expert's down after its up.
var awqArchPrevs = map[string][]string{
	"gemma-2-synth-it":             {"input_layernorm", "pre_feedforward_layernorm", "mlp.up_proj"},
	"Phi-3-synth-128k-instruct":    {"input_layernorm", "post_attention_layernorm", "mlp.gate_up_proj"},
	"Phi-3-mini-synth-4k-instruct": {"input_layernorm", "self_attn.qkv_proj", "post_attention_layernorm", "mlp.gate_up_proj"},
	"Mixtral-synth-8x":             append([]string{"input_layernorm", "post_attention_layernorm"}, experts("block_sparse_moe.experts.%d.w3", 8)...),
	"Qwen3-MoE-synth":              append([]string{"input_layernorm", "post_attention_layernorm"}, experts("mlp.experts.%d.up_proj", 16)...),
}

// experts formats the name of each of n experts' linears.
func experts(format string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

// TestAWQArchitectures quantizes each synthetic architecture AutoAWQ supports to AWQ 4-bit g128
// with the local pipeline (4 samples of 32 tokens in 2 shards), twice: the two checkpoints must
// be the same bytes (the sharded pipeline is deterministic). The checkpoint is read back (Layered
// validates it; here every quantized linear under the source's name with its shape, the norms
// that absorbed scales rewritten, every source tensor present, the scaling groups AutoAWQ's), and
// its perplexity must be finite and within 10 % of the unquantized model's.
func TestAWQArchitectures(t *testing.T) {
	a := synthAssets(t)
	calib := filepath.Join(shared(t), "data", "calib.txt")
	ctx := context.Background()
	for _, tc := range archCases {
		if !tc.awq {
			continue
		}
		t.Run(tc.model, func(t *testing.T) {
			dir := t.TempDir()
			src, err := synth.Write(dir, tc.model, a)
			if err != nil {
				t.Fatal(err)
			}
			run := func(name string) *domain.QuantizedModel {
				req := Request{ModelDir: src, CalibrationData: calib, CalibrationSamples: 4, SeqLen: 32, ShardSamples: 2,
					TempDir: dir, OutputDir: filepath.Join(dir, "out"), OutputName: name}
				res, err := Layered(ctx, req, domain.FormatAWQ, "4bit", 128, domain.LayerOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			res := run("awq")
			out := res.OutputPath
			rerun := run("awq-again").OutputPath
			for _, f := range []string{"model.safetensors", "config.json"} {
				x, err := os.ReadFile(filepath.Join(out, f))
				y, err2 := os.ReadFile(filepath.Join(rerun, f))
				if err != nil || err2 != nil || !bytes.Equal(x, y) {
					t.Errorf("%s differs between two runs (%v, %v)", f, err, err2)
				}
			}
			for i, layer := range res.QuantizationMetadata["scale_groups"].([][]ScaleStats) {
				var prevs []string
				for _, g := range layer {
					prevs = append(prevs, g.Prev)
				}
				if want := awqArchPrevs[tc.model]; !slices.Equal(prevs, want) {
					t.Errorf("layer %d: scaling groups after %v, want %v", i, prevs, want)
				}
			}

			m, ck := openArchCheckpoint(t, src, out)
			if qc := ck.Config(); qc.Method != hfquant.AWQ || qc.Bits != 4 || qc.GroupSize != 128 {
				t.Errorf("quantization config %+v", qc)
			}
			var cfg struct {
				Q struct {
					Skip []string `json:"modules_to_not_convert"`
				} `json:"quantization_config"`
			}
			readConfig(t, out, &cfg)
			var routers []string
			for _, d := range tc.dense {
				routers = append(routers, strings.TrimSuffix(d, ".weight"))
			}
			if !slices.Equal(cfg.Q.Skip, routers) {
				t.Errorf("modules_to_not_convert %v, want the routers %v", cfg.Q.Skip, routers)
			}
			for i := range m.Config.NumLayers {
				l, err := m.Layer(i)
				if err != nil {
					t.Fatal(err)
				}
				if got := len(l.Linears()); got != tc.linears {
					t.Errorf("layer %d: %d quantized linears, want %d", i, got, tc.linears)
				}
				for _, lin := range l.Linears() {
					q, err := ck.Linear(layerPrefix(i) + lin.Name)
					if err != nil {
						t.Fatal(err)
					}
					if q.Rows != lin.Out || q.Cols != lin.In {
						t.Errorf("%s: %d×%d, source %d×%d", q.Name, q.Rows, q.Cols, lin.Out, lin.In)
					}
				}
				// A norm absorbs its group's scales, the identity when the grid's r = 0 won, and
				// so does the router after post_attention_layernorm, left unquantized.
				for _, g := range res.QuantizationMetadata["scale_groups"].([][]ScaleStats)[i] {
					if !strings.HasSuffix(g.Prev, "layernorm") {
						continue
					}
					names := []string{layerPrefix(i) + g.Prev + ".weight"}
					if g.Prev == "post_attention_layernorm" {
						for _, d := range tc.dense {
							names = append(names, layerPrefix(i)+d)
						}
					}
					for _, name := range names {
						got, _, err := ck.Float32(name)
						want, _, err2 := m.Source.Float32(name)
						if err != nil || err2 != nil || ck.IsQuantized(name) || len(got) != len(want) || slices.Equal(got, want) != (g.Ratio == 0) {
							t.Errorf("%s: scales of ratio %v, changed %v (%v, %v)", name, g.Ratio, !slices.Equal(got, want), err, err2)
						}
					}
				}
				l.Release()
			}
			checkArchCheckpoint(t, src, ck, out, tc.arch+" AWQ 4-bit g128")
		})
	}
}

// TestAWQFoldingKeepsTheLayer folds arbitrary scales (0.5 to 2 per channel) into layer 0 of each
// AWQ-supported synthetic architecture, as AWQ does before clipping and quantizing, and reloads
// the norms that absorbed them from the values the checkpoint stores (float16; Gemma's as w
// with the factor 1+w): the layer's output must stay the original's up to half-precision
// rounding. A wrong fold (Gemma's 1+w, the wrong rows of a fused prev linear, a scale on a
// linear whose prev op did not absorb it) moves it by about the scales' spread, as the control
// (norms left unfolded) shows.
func TestAWQFoldingKeepsTheLayer(t *testing.T) {
	a := synthAssets(t)
	ctx := context.Background()
	for _, tc := range archCases {
		if !tc.awq {
			continue
		}
		t.Run(tc.model, func(t *testing.T) {
			src, err := synth.Write(t.TempDir(), tc.model, a)
			if err != nil {
				t.Fatal(err)
			}
			m, err := transformer.Load(src)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			x := transformer.NewTensor(2, 16, m.Config.HiddenSize)
			for i := range x.Data {
				x.Data[i] = float32((i*7919)%201-100) / 100
			}
			orig, err := m.Layer(0)
			if err != nil {
				t.Fatal(err)
			}
			want, err := orig.Forward(x, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Compare the layer's contribution, without the residual input that dominates it.
			delta := func(y *transformer.Tensor) []float32 {
				d := make([]float32, len(y.Data))
				for i, v := range y.Data {
					d[i] = v - x.Data[i]
				}
				return d
			}
			folded := func(foldNorms bool) float64 {
				l, err := m.Layer(0)
				if err != nil {
					t.Fatal(err)
				}
				al, _, err := awqShardLayer(ctx, l, nil)
				if err != nil {
					t.Fatal(err)
				}
				var scales []*awq.Scales
				for i, g := range al.Groups {
					s := make([]float32, al.Linears[g.Linears[0]].Cols)
					for c := range s {
						s[c] = float16.Fromfloat32(0.5 + 1.5*float32((c*31+i*17)%97)/96).Float32()
					}
					scales = append(scales, &awq.Scales{S: s})
				}
				stored := map[string][]float32{}
				for name, n := range al.Norms {
					stored[name] = slices.Clone(n.Weight)
				}
				if err := al.FoldScales(scales, awq.Config{GroupSize: 128}); err != nil {
					t.Fatal(err)
				}
				if foldNorms {
					for _, d := range awqNorms(l, al) {
						stored[strings.TrimPrefix(strings.TrimSuffix(d.Name, ".weight"), layerPrefix(0))] = loadedNorm(m.Config, d.Data)
					}
				}
				for name, w := range stored {
					copy(l.Norm(name).Weight, w)
				}
				got, err := l.Forward(x, nil)
				if err != nil {
					t.Fatal(err)
				}
				return math.Sqrt(outputError(delta(got), delta(want)))
			}
			if e := folded(true); e > 1e-2 {
				t.Errorf("folded layer's output: relative error %.2e, want ≤ 1e-2", e)
			} else {
				t.Logf("folded layer's output: relative error %.2e", e)
			}
			if e := folded(false); e < 0.1 {
				t.Errorf("control: scales without the norms' fold give relative error %.2e, want ≥ 0.1", e)
			}
		})
	}
}

// loadedNorm is a norm weight as the checkpoint stores it (float16) and transformer loads it
// (Gemma's shifted to 1+w).
func loadedNorm(c *transformer.Config, stored []float32) []float32 {
	out := make([]float32, len(stored))
	for i, v := range stored {
		out[i] = float16.Fromfloat32(v).Float32()
		if c.Gemma {
			out[i]++
		}
	}
	return out
}

// TestShardedMoEAWQ runs the sharded AWQ pipeline of the synthetic Mixtral on 4 one-token
// samples in 2 shards, in plan order and in a random valid order: every object must be the same
// bytes. With 4 tokens routed to 2 of 8 experts each, some experts get no token: their down_proj
// keeps the identity scales (ratio −1) and is quantized unclipped, the others are searched.
func TestShardedMoEAWQ(t *testing.T) {
	m := synthMixtral(t)
	cfg := DefaultAWQConfig()
	cfg.Grid = 4 // a short scale grid: the wiring is what counts here
	p, err := NewShardPlan(LayerConfig{Method: hfquant.AWQ, AWQ: cfg}, StageOf(m.Config), m.Config.NumLayers, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	identity, searched := 0, 0
	for _, r := range shardedMoEResults(t, p, m) {
		for _, g := range r.Scales {
			switch {
			case !strings.Contains(g.Prev, ".experts."):
			case g.Ratio == -1:
				identity++
			default:
				searched++
			}
		}
	}
	t.Logf("experts' down_proj: %d searched, %d unscaled (no token routed)", searched, identity)
	if identity == 0 || searched == 0 {
		t.Errorf("%d experts searched, %d unscaled: want both", searched, identity)
	}
}
