package transformer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestGeluTanhAndSoftcap(t *testing.T) {
	cases := []struct{ x, gelu float64 }{
		{0, 0}, {1, 0.8411920}, {-1, -0.1588080}, {3, 2.9963627}, {-3, -0.0036373},
	}
	for _, c := range cases {
		g, u := []float32{float32(c.x)}, []float32{2}
		geluTanhMul(g, u)
		if math.Abs(float64(g[0])-2*c.gelu) > 1e-5 {
			t.Errorf("gelu_tanh(%v)·2 = %v, want %v", c.x, g[0], 2*c.gelu)
		}
	}
	x := []float32{0, 15, -60, 1e4}
	softcap(x, 30)
	for i, want := range []float64{0, 30 * math.Tanh(0.5), 30 * math.Tanh(-2), 30} {
		if math.Abs(float64(x[i])-want) > 1e-4 {
			t.Errorf("softcap[%d] = %v, want %v", i, x[i], want)
		}
	}
}

// TestAttendCappedMatchesAttend: without a cap and with the default scale the plain
// attention used for Gemma equals the blocked kernel, with and without a window.
func TestAttendCappedMatchesAttend(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	batch, seq, heads, kv, hd := 2, 37, 4, 2, 16
	fill := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	q, k, v := fill(batch*seq*heads*hd), fill(batch*seq*kv*hd), fill(batch*seq*kv*hd)
	for _, window := range []int{0, 5} {
		want := make([]float32, len(q))
		got := make([]float32, len(q))
		attend(want, q, k, v, batch, seq, heads, kv, hd, window)
		attendCapped(got, q, k, v, batch, seq, heads, kv, hd, window, float32(1/math.Sqrt(float64(hd))), 0)
		for i := range want {
			if math.Abs(float64(want[i]-got[i])) > 1e-4 {
				t.Fatalf("window %d: element %d = %v, kernel %v", window, i, got[i], want[i])
			}
		}
	}
}

func TestLongRopeFactors(t *testing.T) {
	c := &Config{HeadDim: 8, MaxPositionEmbeddings: 131072, Rope: Rope{Type: "longrope", Theta: 10000, Dim: 8,
		OriginalMaxPositionEmbeddings: 4096, ShortFactor: []float64{1, 2, 3, 4}, LongFactor: []float64{5, 6, 7, 8}}}
	short, att := c.invFreq(64)
	long, _ := c.invFreq(5000)
	wantAtt := math.Sqrt(1 + math.Log(32)/math.Log(4096))
	if math.Abs(float64(att)-wantAtt) > 1e-6 {
		t.Errorf("attention factor %v, want %v", att, wantAtt)
	}
	for i := range short {
		base := math.Pow(10000, float64(2*i)/8)
		if w := 1 / ((c.Rope.ShortFactor[i]) * base); math.Abs(float64(short[i])-w) > 1e-6*w {
			t.Errorf("short inv_freq[%d] = %v, want %v", i, short[i], w)
		}
		if w := 1 / ((c.Rope.LongFactor[i]) * base); math.Abs(float64(long[i])-w) > 1e-6*w {
			t.Errorf("long inv_freq[%d] = %v, want %v", i, long[i], w)
		}
	}
}

// TestMoERouting: each token's output is Σ over its top-k experts of the (renormalised)
// softmax weight times the expert's SwiGLU output.
func TestMoERouting(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	hidden, ff, experts := 4, 3, 4
	lin := func(out, in int) *Linear {
		w := make([]float32, out*in)
		for i := range w {
			w[i] = float32(rng.NormFloat64())
		}
		return &Linear{Out: out, In: in, Weight: w}
	}
	a := &archLayer{Router: lin(experts, hidden)}
	for range experts {
		a.Experts = append(a.Experts, expert{lin(ff, hidden), lin(ff, hidden), lin(hidden, ff)})
	}
	x := NewTensor(1, 5, hidden)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	for _, c := range []struct {
		used int
		norm bool
	}{{2, true}, {2, false}, {4, true}} {
		m := &Model{Config: &Config{ArchConfig: ArchConfig{Experts: experts, ExpertsUsed: c.used, NormTopK: c.norm}}}
		l := &Layer{model: m, arch: a}
		got := l.moe(x, nil, "")
		for r := 0; r < x.Rows(); r++ {
			p := make([]float32, experts)
			a.Router.apply(p, x.Row(r), 1)
			softmaxRow(p)
			order := []int{0, 1, 2, 3}
			for i := range order { // selection sort, descending
				for j := i + 1; j < len(order); j++ {
					if p[order[j]] > p[order[i]] {
						order[i], order[j] = order[j], order[i]
					}
				}
			}
			var sum float32
			for _, e := range order[:c.used] {
				sum += p[e]
			}
			want := make([]float64, hidden)
			for _, e := range order[:c.used] {
				in := NewTensor(1, 1, hidden)
				copy(in.Data, x.Row(r))
				y := a.Experts[e].forward(in, nil)
				w := p[e]
				if c.norm {
					w /= sum
				}
				for j := range want {
					want[j] += float64(w * y.Data[j])
				}
			}
			for j := range want {
				if d := math.Abs(float64(got.Row(r)[j]) - want[j]); d > 1e-4 {
					t.Fatalf("used %d norm %v row %d[%d] = %v, want %v", c.used, c.norm, r, j, got.Row(r)[j], want[j])
				}
			}
		}
	}
}

func TestParseArchConfig(t *testing.T) {
	factors := func(v string) string { return "[" + strings.TrimSuffix(strings.Repeat(v+",", 32), ",") + "]" }
	cases := []struct {
		name, json string
		windows    []int
		check      func(c *Config) string
	}{
		{"gemma2 alternates", `{"architectures":["Gemma2ForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":64,"num_hidden_layers":4,"sliding_window":16,"query_pre_attn_scalar":64}`,
			[]int{16, 0, 16, 0}, func(c *Config) string {
				if !c.Gemma || c.QueryScale != 0.125 || c.AttnSoftcap != 50 || c.FinalSoftcap != 30 || !c.TieWordEmbeddings {
					return fmt.Sprintf("%+v", c.ArchConfig)
				}
				return ""
			}},
		{"gemma3 pattern and local rope", `{"architectures":["Gemma3ForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":64,"num_hidden_layers":6,"sliding_window":8,"sliding_window_pattern":3,
			"rope_parameters":{"full_attention":{"rope_type":"linear","factor":8.0,"rope_theta":1000000.0},"sliding_attention":{"rope_type":"default","rope_theta":10000.0}}}`,
			[]int{8, 8, 0, 8, 8, 0}, func(c *Config) string {
				if c.Rope.Theta != 1e6 || c.Rope.Type != "linear" || c.LocalRope == nil || c.LocalRope.Theta != 10000 || c.FinalSoftcap != 0 || !c.QKNorm {
					return fmt.Sprintf("rope %+v local %+v", c.Rope, c.LocalRope)
				}
				return ""
			}},
		{"phi3 longrope", `{"architectures":["Phi3ForCausalLM"],"hidden_size":256,"num_attention_heads":4,"num_hidden_layers":2,"max_position_embeddings":131072,"original_max_position_embeddings":4096,
			"rope_scaling":{"type":"longrope","long_factor":` + factors("2.0") + `,"short_factor":` + factors("1.5") + `}}`,
			[]int{0, 0}, func(c *Config) string {
				if c.Rope.Type != "longrope" || len(c.Rope.LongFactor) != 32 || c.Rope.ShortFactor[0] != 1.5 || c.Rope.OriginalMaxPositionEmbeddings != 4096 {
					return fmt.Sprintf("%+v", c.Rope)
				}
				return ""
			}},
		{"qwen3moe routing", `{"architectures":["Qwen3MoeForCausalLM"],"hidden_size":256,"num_attention_heads":8,"num_hidden_layers":2,"num_experts":8,"num_experts_per_tok":2,"moe_intermediate_size":64,"norm_topk_prob":true}`,
			[]int{0, 0}, func(c *Config) string {
				if c.Experts != 8 || c.ExpertsUsed != 2 || !c.NormTopK {
					return fmt.Sprintf("%+v", c.ArchConfig)
				}
				return ""
			}},
	}
	for _, c := range cases {
		cfg, err := ParseConfig([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(cfg.SlidingWindow, c.windows) {
			t.Errorf("%s: windows %v, want %v", c.name, cfg.SlidingWindow, c.windows)
		}
		if msg := c.check(cfg); msg != "" {
			t.Errorf("%s: %s", c.name, msg)
		}
	}
	if _, err := ParseConfig([]byte(`{"architectures":["LlamaForCausalLM"],"rope_scaling":{"rope_type":"longrope","long_factor":[1],"short_factor":[1]}}`)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("longrope outside Phi-3: %v", err)
	}
}

func TestEmbedScaleDtype(t *testing.T) {
	s := float32(math.Sqrt(3072)) // 55.4256...
	for dtype, want := range map[string]float32{"bfloat16": 55.5, "float16": 55.4375, "float32": s, "": s} {
		if got := roundToDtype(s, dtype); got != want {
			t.Errorf("%q: %v, want %v", dtype, got, want)
		}
	}
}
