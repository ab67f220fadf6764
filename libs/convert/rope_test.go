package convert

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// ropeRef is testdata/converter/rope_freqs.json: rope_freqs computed by the converter's own
// LlamaModel.generate_extra_tensors (and base ** (arange/dim) by torch) as float32 bits.
type ropeRef struct {
	Torch string `json:"torch"`
	CPU   string `json:"cpu_capability"`
	Cases []struct {
		Rope      map[string]any `json:"rope_parameters"`
		HParams   map[string]any `json:"hparams"`
		Dim       int            `json:"dim"`
		Pow       []string       `json:"pow"`
		RopeFreqs []string       `json:"rope_freqs"`
	} `json:"cases"`
}

func hexFloats(t *testing.T, hs []string) []float32 {
	t.Helper()
	out := make([]float32, len(hs))
	for i, h := range hs {
		u, err := strconv.ParseUint(h, 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = math.Float32frombits(uint32(u))
	}
	return out
}

func TestRopeFreqsMatchConverter(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "converter", "rope_freqs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref ropeRef
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Cases) < 5 {
		t.Fatalf("only %d cases", len(ref.Cases))
	}
	var nPow, offULP int
	for i, c := range ref.Cases {
		get := func(key string, def float64) float64 {
			if v, ok := c.Rope[key].(float64); ok {
				return v
			}
			return def
		}
		r := RopeFreqs{Enabled: true, Dim: c.Dim, Base: get("rope_theta", 10000), Factor: get("factor", 8),
			LowFreq: get("low_freq_factor", 1), HighFreq: get("high_freq_factor", 4),
			OriginalMaxPositionEmbedding: get("original_max_position_embeddings", 8192)}
		// torch's pow is SLEEF's vectorised powf (1 ulp), ours is correctly rounded: they may
		// differ in the last bit, which moves rope_freqs only for a value in the smoothing band.
		for j, w := range hexFloats(t, c.Pow) {
			g := powf(float32(r.Base), float32(2*j)/float32(r.Dim))
			if d := int64(math.Float32bits(g)) - int64(math.Float32bits(w)); d != 0 {
				offULP++
				if d < -1 || d > 1 {
					t.Errorf("case %d: pow(%v, %d/%d) = %x, torch %x", i, r.Base, 2*j, r.Dim, math.Float32bits(g), math.Float32bits(w))
				}
			}
			nPow++
		}
		want := hexFloats(t, c.RopeFreqs)
		got := r.values()
		if len(got) != len(want) {
			t.Fatalf("case %d: %d values, want %d", i, len(got), len(want))
		}
		for j := range want {
			if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
				t.Errorf("case %d (%v): rope_freqs[%d] = %v (%x), converter %v (%x)", i, c.Rope, j, got[j],
					math.Float32bits(got[j]), want[j], math.Float32bits(want[j]))
			}
		}
	}
	t.Logf("pow: %d of %d values one ulp off torch %s (%s)", offULP, nPow, ref.Torch, ref.CPU)
}
