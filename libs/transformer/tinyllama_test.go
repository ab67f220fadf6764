package transformer

import (
	"context"
	"math"
	"path/filepath"
	"strconv"
	"testing"

	"quantfleet.dev/libs/sharedtest"
)

// tinyLlamaRef is testdata/tinyllama_ref.json: transformers 5.17 on the shared tiny-llama
// (bf16 weights, fp32 compute, eager attention) over the evaluation windows of eval.txt.
type tinyLlamaRef struct {
	Ctx          int       `json:"ctx"`
	Windows      int       `json:"windows"`
	PPL          float64   `json:"ppl"`
	WindowIDs    [][]int   `json:"window_ids_0_3"`
	WindowNLLSum []float64 `json:"window_nll_sum"`
	Embed        map[string]checksum
	Layer0       map[string]checksum `json:"layer0"`
	LayerLast    map[string]checksum `json:"layer_last"`
	Logits       map[string]struct {
		LSE     float64   `json:"lse"`
		First16 []float64 `json:"first16"`
	} `json:"logits"`
}

type checksum struct {
	First16    []float64 `json:"first16"`
	Sum, SumSq float64
}

func (c checksum) check(t *testing.T, what string, row []float32) {
	t.Helper()
	closeTo(t, what+" first16", f64s(row[:16]), c.First16, 5e-5)
	var s, s2 float64
	for _, v := range row {
		s += float64(v)
		s2 += float64(v) * float64(v)
	}
	scale := math.Sqrt(c.SumSq)
	if math.Abs(s-c.Sum) > 1e-4*scale*math.Sqrt(float64(len(row))) || math.Abs(s2-c.SumSq) > 1e-4*c.SumSq {
		t.Fatalf("%s: sum %v sumsq %v, want %v %v", what, s, s2, c.Sum, c.SumSq)
	}
}

func loadTinyLlama(t testing.TB) *Model {
	m, err := Load(filepath.Join(sharedtest.Dir(t), "models", "tiny-llama"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTinyLlamaMatchesTransformers(t *testing.T) {
	m := loadTinyLlama(t)
	defer m.Close()
	var ref tinyLlamaRef
	readJSON(t, "testdata/tinyllama_ref.json", &ref)
	if len(ref.WindowIDs) != 4 || len(ref.WindowIDs[0]) != ref.Ctx+1 {
		t.Fatalf("reference windows malformed")
	}
	in := make([][]int, 4)
	for i, w := range ref.WindowIDs {
		in[i] = w[:ref.Ctx]
	}
	x, err := m.Embed(in)
	if err != nil {
		t.Fatal(err)
	}
	for p, c := range ref.Embed {
		pos, _ := strconv.Atoi(p)
		c.check(t, "embedding "+p, x.Row(pos))
	}
	for i := 0; i < m.Config.NumLayers; i++ {
		l, err := m.Layer(i)
		if err != nil {
			t.Fatal(err)
		}
		if x, err = l.Forward(x, nil); err != nil {
			t.Fatal(err)
		}
		l.Release()
		golden := map[int]map[string]checksum{0: ref.Layer0, m.Config.NumLayers - 1: ref.LayerLast}[i]
		for p, c := range golden {
			pos, _ := strconv.Atoi(p)
			c.check(t, "layer "+strconv.Itoa(i)+" position "+p, x.Row(pos))
		}
	}
	logits, err := m.Head(x.Sequences(0, 1))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range ref.Logits {
		pos, _ := strconv.Atoi(p)
		row := logits.Row(pos)
		closeTo(t, "logits "+p, f64s(row[:16]), want.First16, 5e-5)
		closeTo(t, "logsumexp "+p, []float64{logSumExp(row)}, []float64{want.LSE}, 1e-5)
	}
	tg := make([][]int, 4)
	for i, w := range ref.WindowIDs {
		tg[i] = w[1:]
	}
	nll, err := m.NLL(x, tg)
	if err != nil {
		t.Fatal(err)
	}
	// 1e-5 relative on a 512-token sum is 2e-8 per token of mean NLL: far below the
	// ±0.02 allowed on a perplexity of 17.6 (1.1e-3 in mean NLL).
	closeTo(t, "window NLL sums", nll, ref.WindowNLLSum[:4], 1e-5)
	t.Logf("window NLL sums %v, reference %v", nll, ref.WindowNLLSum[:4])

	// The one-call path gives the same numbers.
	again, err := m.SequenceNLL(context.Background(), ref.WindowIDs[:2])
	if err != nil {
		t.Fatal(err)
	}
	closeTo(t, "SequenceNLL", again, nll[:2], 1e-6)
}
