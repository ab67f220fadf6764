package transformer

import (
	"encoding/json"
	"math"
	"testing"
)

// testdata/rope_ref.json holds transformers 5.17's LlamaRotaryEmbedding outputs (see
// testdata/README.md).
type ropeRef struct {
	HeadDim int `json:"head_dim"`
	Cases   map[string]struct {
		Params           map[string]any `json:"params"`
		MaxPos           int            `json:"max_position_embeddings"`
		Seq              int            `json:"seq"`
		AttentionScaling float64        `json:"attention_scaling"`
		InvFreq          []float64      `json:"inv_freq"`
		Positions        []int          `json:"positions"`
		Cos, Sin         [][]float64
		Error            string `json:"error"`
	} `json:"cases"`
}

func TestRopeMatchesTransformers(t *testing.T) {
	var ref ropeRef
	readJSON(t, "testdata/rope_ref.json", &ref)
	if len(ref.Cases) < 10 {
		t.Fatalf("only %d rope cases in the reference", len(ref.Cases))
	}
	for name, c := range ref.Cases {
		t.Run(name, func(t *testing.T) {
			if c.Error != "" {
				t.Fatalf("reference failed: %s", c.Error)
			}
			cfgJSON, _ := json.Marshal(map[string]any{
				"architectures": []string{"LlamaForCausalLM"}, "hidden_size": 512, "num_attention_heads": 8,
				"head_dim": ref.HeadDim, "max_position_embeddings": c.MaxPos, "rope_parameters": c.Params,
			})
			cfg, err := ParseConfig(cfgJSON)
			if err != nil {
				t.Fatal(err)
			}
			inv, att := cfg.invFreq(c.Seq)
			if math.Abs(float64(att)-c.AttentionScaling) > 1e-6 {
				t.Errorf("attention factor %v, want %v", att, c.AttentionScaling)
			}
			for i, want := range c.InvFreq {
				if d := math.Abs(float64(inv[i]) - want); d > 2.5e-7*want {
					t.Errorf("inv_freq[%d] = %v, want %v", i, inv[i], want)
				}
			}
			tab := cfg.ropeTable(c.Seq)
			for k, p := range c.Positions {
				for i := 0; i < ref.HeadDim/2; i++ {
					// A one-ulp difference of inv_freq moves the angle by p·ulp.
					tol := 2e-6 + 2.5e-7*float64(p)*c.InvFreq[i]
					gc, gs := float64(tab.cos[p*tab.half+i]), float64(tab.sin[p*tab.half+i])
					if math.Abs(gc-c.Cos[k][i]) > tol || math.Abs(gs-c.Sin[k][i]) > tol {
						t.Fatalf("pos %d dim %d: cos,sin = %v,%v, want %v,%v", p, i, gc, gs, c.Cos[k][i], c.Sin[k][i])
					}
				}
			}
		})
	}
}

func TestRopeApplyRotatesHalves(t *testing.T) {
	tab := &ropeTable{half: 2, cos: []float32{1, 1, 0, 0.5}, sin: []float32{0, 0, 1, -0.5}}
	row := []float32{1, 2, 3, 4, 10, 20, 30, 40} // two heads of dim 4
	tab.apply(row, 2, 4, 1)
	// pos 1: cos=(0,0.5) sin=(1,-0.5); x1'=x1·c−x2·s, x2'=x2·c+x1·s
	want := []float32{-3, 0.5*2 - 4*-0.5, 1, 0.5*4 + 2*-0.5, -30, 0.5*20 - 40*-0.5, 10, 0.5*40 + 20*-0.5}
	for i := range want {
		if row[i] != want[i] {
			t.Fatalf("row = %v, want %v", row, want)
		}
	}
}
