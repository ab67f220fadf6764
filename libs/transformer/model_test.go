package transformer

import (
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// testdata/archs holds tiny random checkpoints (bf16) of each architecture written by
// transformers 5.17, and archs_ref.json their fp32 eager-attention outputs.
type archRef struct {
	IDs           [][]int              `json:"ids"`
	NLL           [][]float64          `json:"nll"`
	LastLogits    [][]float64          `json:"last_logits"`
	Layer0Seq1    map[string][]float64 `json:"layer0_seq1"`
	LastLayerSeq0 map[string][]float64 `json:"last_layer_seq0"`
	Error         string               `json:"error"`
}

func closeTo(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(got[i] - want[i]); !(d <= tol*(1+math.Abs(want[i]))) {
			t.Fatalf("%s[%d] = %v, want %v (diff %g)", what, i, got[i], want[i], d)
		}
	}
}

func f64s(s []float32) []float64 {
	r := make([]float64, len(s))
	for i, v := range s {
		r[i] = float64(v)
	}
	return r
}

func TestArchitecturesMatchTransformers(t *testing.T) {
	var refs map[string]archRef
	readJSON(t, "testdata/archs_ref.json", &refs)
	delete(refs, "meta")
	names := make([]string, 0, len(refs))
	for n := range refs {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) != 5 {
		t.Fatalf("reference has %d models, want 5", len(names))
	}
	for _, name := range names {
		ref := refs[name]
		t.Run(name, func(t *testing.T) {
			if ref.Error != "" {
				t.Fatalf("reference failed: %s", ref.Error)
			}
			m, err := Load(filepath.Join("testdata/archs", name))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			x, err := m.Embed(ref.IDs)
			if err != nil {
				t.Fatal(err)
			}
			seq := len(ref.IDs[0])
			for i := 0; i < m.Config.NumLayers; i++ {
				l, err := m.Layer(i)
				if err != nil {
					t.Fatal(err)
				}
				if x, err = l.Forward(x, nil); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					for p, want := range ref.Layer0Seq1 {
						pos, _ := strconv.Atoi(p)
						closeTo(t, "layer 0 output, sequence 1, position "+p, f64s(x.Row(seq+pos)), want, 2e-5)
					}
				}
			}
			for p, want := range ref.LastLayerSeq0 {
				pos, _ := strconv.Atoi(p)
				closeTo(t, "last layer output, position "+p, f64s(x.Row(pos)), want, 2e-5)
			}
			logits, err := m.Head(x)
			if err != nil {
				t.Fatal(err)
			}
			for b := range 2 {
				closeTo(t, "last logits", f64s(logits.Row(b*seq+seq-1)), ref.LastLogits[b], 2e-5)
			}
			// Per-position NLL from the logits, and the same sums through NLL() with one
			// extra target at the last position.
			targets := make([][]int, 2)
			want := make([]float64, 2)
			for b := range 2 {
				for p := 0; p+1 < seq; p++ {
					row := logits.Row(b*seq + p)
					got := logSumExp(row) - float64(row[ref.IDs[b][p+1]])
					closeTo(t, "token NLL", []float64{got}, []float64{ref.NLL[b][p]}, 2e-5)
					want[b] += ref.NLL[b][p]
				}
				targets[b] = append(append([]int(nil), ref.IDs[b][1:]...), 5)
				last := logits.Row(b*seq + seq - 1)
				want[b] += logSumExp(last) - float64(last[5])
			}
			got, err := m.NLL(x, targets)
			if err != nil {
				t.Fatal(err)
			}
			closeTo(t, "sequence NLL", got, want, 2e-5)
		})
	}
}
