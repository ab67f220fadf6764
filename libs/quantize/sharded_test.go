package quantize

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/transformer"
)

func TestShardRanges(t *testing.T) {
	for _, tc := range []struct {
		samples, per int
		want         []SampleRange
	}{
		{128, 0, []SampleRange{{0, 32}, {32, 64}, {64, 96}, {96, 128}}},
		{8, 4, []SampleRange{{0, 4}, {4, 8}}},
		{10, 4, []SampleRange{{0, 3}, {3, 6}, {6, 10}}},
		{3, 32, []SampleRange{{0, 3}}},
		{0, 4, nil},
	} {
		if got := ShardRanges(tc.samples, tc.per); !slices.Equal(got, tc.want) {
			t.Errorf("ShardRanges(%d, %d) = %v, want %v", tc.samples, tc.per, got, tc.want)
		}
	}
}

// TestShardPlanOrder checks that Tasks lists every task after its dependencies, that task ids
// are unique and that the shape is the documented one.
func TestShardPlanOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   LayerConfig
		tasks int
	}{
		{"gptq", LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 128}}, 3*4*(3+1) + 2*3},
		{"awq", LayerConfig{Method: hfquant.AWQ, AWQ: DefaultAWQConfig()}, 3 * (3*3 + 1)},
		{"rtn", LayerConfig{Method: hfquant.GPTQ, RTN: true, GPTQ: gptq.Config{Bits: 4, GroupSize: 128}}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewShardPlan(tc.cfg, Stage{}, 3, 10, 4)
			if err != nil {
				t.Fatal(err)
			}
			tasks := p.Tasks()
			if len(tasks) != tc.tasks {
				t.Errorf("%d tasks, want %d", len(tasks), tc.tasks)
			}
			seen := map[string]bool{}
			for _, task := range tasks {
				if !p.valid(task) {
					t.Errorf("%s is not valid in its own plan", task.ID())
				}
				for _, d := range p.Deps(task) {
					if !seen[d.ID()] {
						t.Errorf("%s comes before its dependency %s", task.ID(), d.ID())
					}
				}
				if seen[task.ID()] {
					t.Errorf("task id %s twice", task.ID())
				}
				seen[task.ID()] = true
			}
		})
	}
}

// TestMergeHessiansOrder checks that partials are read and merged in shard order 0..S-1, the
// merged sums being those of Merge applied in that order, bit for bit.
func TestMergeHessiansOrder(t *testing.T) {
	const cols = 16
	rng := rand.New(rand.NewPCG(1, 2))
	var parts [][]byte
	want := gptq.NewHessian(cols)
	for range 4 {
		x := make([]float32, 37*cols)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 1e3)
		}
		h := gptq.NewHessian(cols)
		if err := h.Add(x, 37, 3); err != nil {
			t.Fatal(err)
		}
		if err := want.Merge(h); err != nil {
			t.Fatal(err)
		}
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, b)
	}
	var order []int
	got, err := MergeHessians(func(i int) ([]byte, error) { order = append(order, i); return parts[i], nil }, len(parts))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []int{0, 1, 2, 3}) {
		t.Errorf("partials read in order %v", order)
	}
	gb, _ := got.MarshalBinary()
	wb, _ := want.MarshalBinary()
	if !bytes.Equal(gb, wb) {
		t.Error("merged Hessian differs from the partials merged in shard order")
	}
	if got.Samples() != 12 || got.Tokens() != 4*37 {
		t.Errorf("merged counts: %d samples, %d tokens", got.Samples(), got.Tokens())
	}
}

// TestShardedPipelineOrderIndependent runs the sharded GPTQ (act-order) and AWQ pipelines of
// tiny-llama's first two layers (4 samples of 32 tokens in 2 shards) twice: once in Tasks order,
// once in a random order that respects Deps; every object must be the same bytes.
func TestShardedPipelineOrderIndependent(t *testing.T) {
	_, m, samples := tinySamples(t, 4, 32)
	awqCfg := DefaultAWQConfig()
	awqCfg.GroupSize = 32
	for _, tc := range []struct {
		name string
		cfg  LayerConfig
	}{
		{"gptq", LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 32, ActOrder: true, V1Zeros: true}}},
		{"awq", LayerConfig{Method: hfquant.AWQ, AWQ: awqCfg}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewShardPlan(tc.cfg, Stage{}, 2, len(samples), 2)
			if err != nil {
				t.Fatal(err)
			}
			dir := checkOrderIndependent(t, p, m, samples)
			// Each layer gathers its seven linears in checkpoint order.
			for i := range p.Layers {
				r, err := ShardedLayerResult(context.Background(), DirStore(dir), p, i)
				if err != nil {
					t.Fatal(err)
				}
				if len(r.Linears) != 7 || r.Linears[6].Name != layerPrefix(i)+"mlp.down_proj" {
					t.Errorf("layer %d: %d linears", i, len(r.Linears))
				}
			}
		})
	}
}

// checkOrderIndependent runs plan p's tasks on m with the calibration samples twice, in Tasks
// order and in a random order that respects Deps, and requires every object to be the same
// bytes. It returns the directory of the first run.
func checkOrderIndependent(t *testing.T, p *ShardPlan, m *transformer.Model, samples [][]int) string {
	t.Helper()
	ctx := context.Background()
	run := func(order []ShardTask) (string, int) {
		st := DirStore(t.TempDir())
		if _, err := WriteShardInputs(ctx, st, p, m, samples); err != nil {
			t.Fatal(err)
		}
		env := &ShardEnv{Plan: p, Store: st, Layer: m.Layer}
		n := 0
		for _, task := range order {
			keys, err := RunShardTask(ctx, env, task)
			if err != nil {
				t.Fatal(err)
			}
			n += len(keys)
		}
		return string(st), n
	}
	inOrder := p.Tasks()
	shuffled := randomTopological(p, rand.New(rand.NewPCG(7, 11)))
	if slices.Equal(inOrder, shuffled) {
		t.Fatal("the random order is the plan's")
	}
	a, written := run(inOrder)
	b, _ := run(shuffled)
	files, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != written+len(p.Shards) {
		t.Errorf("%d objects, the tasks wrote %d and the inputs are %d", len(files), written, len(p.Shards))
	}
	for _, f := range files {
		x, _ := os.ReadFile(filepath.Join(a, f.Name()))
		y, err := os.ReadFile(filepath.Join(b, f.Name()))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between the two orders (%v)", f.Name(), err)
		}
	}
	return a
}

// TestShardedMoEOrderIndependent runs the sharded GPTQ pipeline of the synthetic Mixtral (8
// experts, 2 layers) on 4 one-token samples in 2 shards, in plan order and in a random valid
// order (experts' groups are independent tasks, so the random order interleaves them): every
// object must be the same bytes. With 4 tokens routed to 2 experts each, some experts get no
// token: those are rounded to nearest on their weights (damp 0 in the statistics, codes equal to
// gptq.RTN's), the others solved by GPTQ.
func TestShardedMoEOrderIndependent(t *testing.T) {
	m := synthMixtral(t)
	cfg := LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 32, ActOrder: true, V1Zeros: true}}
	p, err := NewShardPlan(cfg, StageOf(m.Config), m.Config.NumLayers, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * ((2+16)*(2+1) + 0); len(p.Tasks()) != want+2 {
		t.Errorf("%d tasks, want %d", len(p.Tasks()), want+2)
	}
	rounded, solved := 0, 0
	for i, r := range shardedMoEResults(t, p, m) {
		l, err := m.Layer(i)
		if err != nil {
			t.Fatal(err)
		}
		for j, st := range r.Stats {
			if st.Damp != 0 {
				solved++
				continue
			}
			rounded++
			lin := l.Linear(strings.TrimPrefix(st.Name, layerPrefix(i)))
			want, err := gptq.RTN(lin.Weight, lin.Out, lin.In, cfg.GPTQ)
			if err != nil {
				t.Fatal(err)
			}
			if q := r.Linears[j]; q.Name != st.Name || !slices.Equal(q.QWeight, want.QWeight) || !slices.Equal(q.Scales, want.Scales) {
				t.Errorf("%s: not rounded to nearest", st.Name)
			}
		}
		l.Release()
	}
	t.Logf("%d linears solved by GPTQ, %d rounded to nearest (experts without tokens)", solved, rounded)
	if rounded == 0 || rounded%3 != 0 || solved <= 8 {
		t.Errorf("%d linears solved, %d rounded: want whole experts rounded and some solved", solved, rounded)
	}
}

// shardedMoEResults runs plan p on the synthetic Mixtral m with 4 one-token samples in 2 shards,
// in two orders to the same bytes (checkOrderIndependent), and returns each layer's result,
// holding every linear of the layer (4 of attention, 3 per expert).
func shardedMoEResults(t *testing.T, p *ShardPlan, m *transformer.Model) []*LayerResult {
	t.Helper()
	dir := checkOrderIndependent(t, p, m, [][]int{{1}, {100}, {200}, {300}})
	var out []*LayerResult
	for i := range p.Layers {
		r, err := ShardedLayerResult(context.Background(), DirStore(dir), p, i)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Linears) != 4+8*3 {
			t.Fatalf("layer %d: %d linears", i, len(r.Linears))
		}
		out = append(out, r)
	}
	return out
}

// randomTopological returns the plan's tasks in a random order in which every task comes after
// its dependencies.
func randomTopological(p *ShardPlan, rng *rand.Rand) []ShardTask {
	left := p.Tasks()
	done := map[string]bool{}
	var out []ShardTask
	for len(left) > 0 {
		var ready []int
		for i, task := range left {
			ok := true
			for _, d := range p.Deps(task) {
				ok = ok && done[d.ID()]
			}
			if ok {
				ready = append(ready, i)
			}
		}
		i := ready[rng.IntN(len(ready))]
		out = append(out, left[i])
		done[left[i].ID()] = true
		left = slices.Delete(left, i, i+1)
	}
	return out
}
