package transformer

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func loadArch(t *testing.T, name string) *Model {
	t.Helper()
	m, err := Load(filepath.Join("testdata/archs", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func randIDs(r *rand.Rand, batch, seq, vocab int) [][]int {
	ids := make([][]int, batch)
	for b := range ids {
		ids[b] = make([]int, seq)
		for i := range ids[b] {
			ids[b][i] = r.IntN(vocab)
		}
	}
	return ids
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, float64(a[i]-b[i]), float64(b[i]-a[i]))
	}
	return d
}

// TestLayerBlocks checks Forward against its parts (Norm, Attention, MLP, Linear) and the
// hook calls, on a batch large enough to be processed in two chunks.
func TestLayerBlocks(t *testing.T) {
	m := loadArch(t, "qwen3_linear")
	r := rand.New(rand.NewPCG(9, 10))
	seq := 40
	batch := maxChunkRows/seq + 8 // two chunks
	x, err := m.Embed(randIDs(r, batch, seq, m.Config.VocabSize))
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.Layer(1)
	if err != nil {
		t.Fatal(err)
	}
	type call struct {
		names []string
		rows  int
		dim   int
	}
	var calls []call
	var seen = map[string][]float32{}
	hook := func(names []string, in *Tensor) {
		calls = append(calls, call{names, in.Rows(), in.Dim})
		seen[names[0]] = append(seen[names[0]], in.Data...)
	}
	orig := x.Clone()
	out, err := l.Forward(x, hook)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(x.Data, orig.Data) {
		t.Fatal("Forward modified its input")
	}
	per := maxChunkRows / seq
	var want []call
	for lo := 0; lo < batch; lo += per {
		rows := (min(batch, lo+per) - lo) * seq
		want = append(want, call{AttentionInputs, rows, 32}, call{OutputInputs, rows, 64}, call{MLPInputs, rows, 32}, call{DownInputs, rows, 64})
	}
	if len(calls) != len(want) {
		t.Fatalf("%d hook calls, want %d", len(calls), len(want))
	}
	for i := range want {
		if !slices.Equal(calls[i].names, want[i].names) || calls[i].rows != want[i].rows || calls[i].dim != want[i].dim {
			t.Fatalf("hook call %d = %+v, want %+v", i, calls[i], want[i])
		}
	}

	// Forward = x + Attention(norm1(x)), then + MLP(norm2(h)).
	n1, _ := l.InputNorm.Forward(x)
	if maxDiff(n1.Data, seen["self_attn.q_proj"]) != 0 {
		t.Fatal("q/k/v hook input is not input_layernorm(x)")
	}
	a, err := l.Attention(n1, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := x.Clone()
	addInto(h.Data, a.Data)
	n2, _ := l.PostAttentionNorm.Forward(h)
	if maxDiff(n2.Data, seen["mlp.gate_proj"]) != 0 {
		t.Fatal("gate/up hook input is not post_attention_layernorm(h)")
	}
	mo, err := l.MLP(n2, nil)
	if err != nil {
		t.Fatal(err)
	}
	addInto(h.Data, mo.Data)
	if d := maxDiff(h.Data, out.Data); d != 0 {
		t.Fatalf("Forward differs from its blocks by %g", d)
	}
	// The down_proj hook input, through Linear.Forward, gives the MLP output.
	down, err := l.Down.Forward(&Tensor{Data: seen["mlp.down_proj"], Batch: batch, Seq: seq, Dim: l.Down.In})
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(down.Data, mo.Data); d != 0 {
		t.Fatalf("down_proj(hook input) differs from MLP output by %g", d)
	}
	// Chunked and one-sequence-at-a-time results agree.
	for _, b := range []int{0, batch - 1} {
		one, err := l.Forward(x.Sequences(b, b+1), nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(one.Data, out.Sequences(b, b+1).Data); d > 1e-5 {
			t.Fatalf("sequence %d alone differs by %g", b, d)
		}
	}

	// Replacing a weight in place changes the result; restoring it restores the result.
	saved := slices.Clone(l.O.Weight)
	for i := range l.O.Weight {
		l.O.Weight[i] = 0
	}
	if d, _ := l.Attention(n1, nil); maxDiff(d.Data, make([]float32, len(d.Data))) != 0 {
		t.Fatal("zero o_proj weight gives non-zero attention output")
	}
	copy(l.O.Weight, saved)
	if again, _ := l.Attention(n1, nil); maxDiff(again.Data, a.Data) != 0 {
		t.Fatal("restored weight gives a different result")
	}

	if got := l.Linear("mlp.up_proj"); got != l.Up || len(l.Linears()) != 7 || l.Linear("nope") != nil {
		t.Fatal("Linear lookup")
	}
	l.Release()
	if _, err := l.Forward(x, nil); err == nil || !strings.Contains(err.Error(), "released") {
		t.Fatalf("Forward after Release: %v", err)
	}
}

type mapSource map[string]struct {
	data  []float32
	shape []int64
}

func (s mapSource) Float32(name string) ([]float32, []int64, error) {
	t, ok := s[name]
	if !ok {
		return nil, nil, ErrWeightNotFound
	}
	return t.data, t.shape, nil
}

func TestModelErrors(t *testing.T) {
	m := loadArch(t, "llama_dynamic")
	if _, err := m.Embed([][]int{{1, 2}, {3}}); err == nil {
		t.Error("ragged batch accepted")
	}
	if _, err := m.Embed([][]int{{1, 64}}); err == nil || !strings.Contains(err.Error(), "vocabulary") {
		t.Errorf("out-of-vocabulary id: %v", err)
	}
	if _, err := m.Layer(2); err == nil {
		t.Error("layer 2 of 2 accepted")
	}
	x, _ := m.Embed([][]int{{1, 2, 3}})
	if _, err := m.NLL(x, [][]int{{1, 2}}); err == nil {
		t.Error("short targets accepted")
	}

	// A source with a wrong shape, and one without lm_head.
	cfg := *m.Config
	src := mapSource{
		"model.embed_tokens.weight":             {make([]float32, 64*32), []int64{64, 32}},
		"model.norm.weight":                     {make([]float32, 32), []int64{32}},
		"model.layers.0.input_layernorm.weight": {make([]float32, 31), []int64{31}},
	}
	bad := New(&cfg, src)
	if _, err := bad.Layer(0); !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "input_layernorm") {
		t.Errorf("wrong shape: %v", err)
	}
	x, _ = bad.Embed([][]int{{1}})
	if _, err := bad.Head(x); !errors.Is(err, ErrWeightNotFound) || !strings.Contains(err.Error(), "tie_word_embeddings") {
		t.Errorf("missing lm_head: %v", err)
	}
}
