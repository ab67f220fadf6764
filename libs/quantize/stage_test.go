package quantize

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/transformer"
)

// stagedCPU is a StageCompute on the host, for tests: its session keeps the shards in memory and
// runs CPU's methods on them, so RunStages' in-place path has to write what the tasks write.
type stagedCPU struct {
	CPU
	full  bool // OpenStages reports ErrStageMemory
	opens *int
}

func (c stagedCPU) OpenStages(ctx context.Context, _ *transformer.Layer, n int, shard func(int) (*transformer.Tensor, error)) (StageSession, error) {
	*c.opens++
	if c.full {
		return nil, ErrStageMemory
	}
	s := &cpuSession{}
	for i := range n {
		x, err := shard(i)
		if err != nil {
			return nil, err
		}
		s.shards = append(s.shards, x)
	}
	return s, nil
}

type cpuSession struct {
	shards []*transformer.Tensor
	l      *transformer.Layer
	h      *gptq.Hessian
}

func (s *cpuSession) Load(_ context.Context, l *transformer.Layer) error { s.l = l; return nil }

func (s *cpuSession) Hessian(ctx context.Context, group []string) (int64, error) {
	s.h = nil
	for _, x := range s.shards {
		p, err := CPU{}.GroupHessian(ctx, s.l, group, x)
		if err != nil {
			return 0, err
		}
		if s.h == nil {
			s.h = p
		} else if err := s.h.Merge(p); err != nil {
			return 0, err
		}
	}
	return s.h.Tokens(), nil
}

func (s *cpuSession) Solve(ctx context.Context, cfg gptq.Config, lins []*transformer.Linear) ([]*gptq.Result, error) {
	return CPU{}.SolveGPTQ(ctx, s.h, cfg, lins)
}

// SetWeights: the runner already put the solved weights into the layer Load got.
func (s *cpuSession) SetWeights(context.Context, []*transformer.Linear) error { return nil }

func (s *cpuSession) Advance(ctx context.Context) error {
	for i, x := range s.shards {
		y, err := CPU{}.Forward(ctx, s.l, x)
		if err != nil {
			return err
		}
		s.shards[i] = y
	}
	return nil
}

func (s *cpuSession) Close() {}

// TestRunStagesMatchesTasks runs tiny-llama's first two layers (GPTQ act-order, 5 samples of 32
// tokens in 3 shards) through RunStages three times: on the CPU task by task, on a StageCompute's
// session, and on a StageCompute whose shards do not fit (back to tasks). The solved groups must
// be the same bytes, and done must see the plan's tasks in Tasks order every time.
func TestRunStagesMatchesTasks(t *testing.T) {
	_, m, samples := tinySamples(t, 5, 32)
	cfg := LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 32, ActOrder: true, V1Zeros: true}}
	p, err := NewShardPlan(cfg, Stage{}, 2, len(samples), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Shards) != 3 {
		t.Fatalf("%d shards, want 3", len(p.Shards))
	}
	ctx := context.Background()
	run := func(c LayerCompute) DirStore {
		st := DirStore(t.TempDir())
		if _, err := WriteShardInputs(ctx, st, p, m, samples); err != nil {
			t.Fatal(err)
		}
		var seen []ShardTask
		env := &ShardEnv{Plan: p, Store: st, Layer: m.Layer, Compute: c}
		if err := RunStages(ctx, env, st.Delete, func(t ShardTask) { seen = append(seen, t) }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seen, p.Tasks()) {
			t.Errorf("done saw %d tasks, not the plan's %d in order", len(seen), len(p.Tasks()))
		}
		return st
	}
	opens := 0
	tasks := run(CPU{})
	staged := run(stagedCPU{opens: &opens})
	fallback := run(stagedCPU{full: true, opens: &opens})
	if opens != 2 {
		t.Errorf("OpenStages called %d times, want 2", opens)
	}
	for L := range p.Layers {
		for g := range p.Stage.Groups {
			key := ShardTask{Op: OpSolve, Layer: L, Group: g}.Key()
			want, err := tasks.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			for name, st := range map[string]DirStore{"session": staged, "fallback": fallback} {
				if got, err := st.Get(ctx, key); err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: %s differs from the task path's (%v)", name, key, err)
				}
			}
		}
	}
	// The session path writes no intermediate: the store holds the solved groups only.
	for _, key := range []string{ActivationsKey(0, 0), ActivationsKey(1, 2), ShardTask{Op: OpHessian, Layer: 1, Group: 3, Shard: 0}.Key()} {
		if _, err := staged.Get(ctx, key); err == nil {
			t.Errorf("session path left %s in the store", key)
		}
	}
}

// TestAWQInPlaceMatchesTasks runs tiny-llama's first two layers through AWQ on one shard of 4
// samples of 32 tokens: RunStages (one capture per layer for all steps) against the tasks run
// one by one with RunShardTask. Each layer's result must be the same bytes.
func TestAWQInPlaceMatchesTasks(t *testing.T) {
	_, m, samples := tinySamples(t, 4, 32)
	awqCfg := DefaultAWQConfig()
	awqCfg.GroupSize = 32
	p, err := NewShardPlan(LayerConfig{Method: hfquant.AWQ, AWQ: awqCfg}, Stage{}, 2, len(samples), len(samples))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	inPlace, tasks := DirStore(t.TempDir()), DirStore(t.TempDir())
	for _, st := range []DirStore{inPlace, tasks} {
		if _, err := WriteShardInputs(ctx, st, p, m, samples); err != nil {
			t.Fatal(err)
		}
	}
	var seen []ShardTask
	if err := RunStages(ctx, &ShardEnv{Plan: p, Store: inPlace, Layer: m.Layer}, inPlace.Delete, func(t ShardTask) { seen = append(seen, t) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, p.Tasks()) {
		t.Errorf("done saw %v, want the plan's tasks %v", seen, p.Tasks())
	}
	env := &ShardEnv{Plan: p, Store: tasks, Layer: m.Layer}
	for _, task := range p.Tasks() {
		if _, err := RunShardTask(ctx, env, task); err != nil {
			t.Fatal(err)
		}
	}
	for L := range p.Layers {
		key := ShardTask{Op: OpLayer, Layer: L}.Key()
		a, errA := inPlace.Get(ctx, key)
		b, errB := tasks.Get(ctx, key)
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs between the in-place steps and the tasks (%v, %v)", key, errA, errB)
		}
	}
	if _, err := inPlace.Get(ctx, ActivationsKey(1, 0)); err == nil {
		t.Error("the in-place path stored layer 1's inputs")
	}
}

// TestLoadAhead: the layer loaded ahead goes to the first call that asks for it, once; every
// other call loads anew; release frees it only when no call took it.
func TestLoadAhead(t *testing.T) {
	var mu sync.Mutex
	loads := map[int]int{}
	load := func(L int) (*transformer.Layer, error) {
		mu.Lock()
		defer mu.Unlock()
		loads[L]++
		return &transformer.Layer{Index: L, Q: &transformer.Linear{Name: "q"}}, nil
	}
	get, release := loadAhead(load, 0)
	first, err := get(0)
	if err != nil || first.Index != 0 {
		t.Fatalf("get(0) = %v, %v", first, err)
	}
	for _, L := range []int{1, 0} {
		if l, err := get(L); err != nil || l.Index != L || l == first {
			t.Errorf("get(%d) = %v, %v: want a layer loaded anew", L, l, err)
		}
	}
	release()
	if first.Q == nil {
		t.Error("release freed the layer a call took")
	}
	if loads[0] != 2 || loads[1] != 1 {
		t.Errorf("loads %v, want layer 0 twice (ahead and anew) and layer 1 once", loads)
	}

	var ahead *transformer.Layer
	_, release = loadAhead(func(L int) (*transformer.Layer, error) {
		ahead = &transformer.Layer{Index: L, Q: &transformer.Linear{Name: "q"}}
		return ahead, nil
	}, 0)
	release()
	if ahead == nil || ahead.Q != nil {
		t.Error("release did not free the layer no call took")
	}
}
