package llamacuda

import (
	"bytes"
	"context"
	"testing"
	"time"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/quantize"
)

// TestStagesMatchTasks runs tiny-llama's first three layers (GPTQ 4-bit act-order, 10 samples
// of 256 tokens) through quantize.RunStages on the GPU: once on the staged session (shards kept
// on the device, passes reusing the attention context and residual), once task by task with the
// same Compute (OpenStages hidden). Every solved group must be the same bytes, with 1 shard and
// with 3 (partial Hessians merged on the device in shard order); and the staged path must solve
// (GPTQ's damping recorded), not round to nearest.
func TestStagesMatchTasks(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	m := tinyLlama(t)
	const samples, seq, layers = 10, 256, 3
	x := tinyCalibration(t, m, seq, samples)
	cfg := quantize.LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 128, ActOrder: true, V1Zeros: true}}
	c := &Compute{D: d}
	for _, per := range []int{samples, 4} {
		p, err := quantize.NewShardPlan(cfg, quantize.Stage{}, layers, samples, per)
		if err != nil {
			t.Fatal(err)
		}
		run := func(lc quantize.LayerCompute) (quantize.DirStore, time.Duration) {
			st := quantize.DirStore(t.TempDir())
			for s, r := range p.Shards {
				if err := st.Put(ctx, quantize.ActivationsKey(0, s), quantize.MarshalActivations(x.Sequences(r.Lo, r.Hi))); err != nil {
					t.Fatal(err)
				}
			}
			env := &quantize.ShardEnv{Plan: p, Store: st, Layer: m.Layer, Compute: lc}
			t0 := time.Now()
			if err := quantize.RunStages(ctx, env, st.Delete, func(quantize.ShardTask) {}); err != nil {
				t.Fatalf("FAIL RunStages: %v", err)
			}
			return st, time.Since(t0)
		}
		staged, ts := run(c)
		tasks, tt := run(struct{ quantize.LayerCompute }{c})
		same := 0
		for L := range layers {
			for g := range p.Stage.Groups {
				key := quantize.ShardTask{Op: quantize.OpSolve, Layer: L, Group: g}.Key()
				a, errA := staged.Get(ctx, key)
				b, errB := tasks.Get(ctx, key)
				if errA != nil || errB != nil || !bytes.Equal(a, b) {
					t.Errorf("FAIL %d shards: %s differs between the staged session and the tasks (%v, %v)", len(p.Shards), key, errA, errB)
					continue
				}
				same++
			}
		}
		r, err := quantize.ShardedLayerResult(ctx, staged, p, layers-1)
		if err != nil {
			t.Fatal(err)
		}
		if r.Damp <= 0 {
			t.Errorf("FAIL %d shards: layer %d's damping is %g: its groups were not solved", len(p.Shards), layers-1, r.Damp)
		}
		status := "PASS"
		if t.Failed() {
			status = "FAIL"
		}
		t.Logf("%s %d shards: %d of %d solved groups byte-identical; staged %v, tasks %v", status, len(p.Shards), same,
			layers*len(p.Stage.Groups), ts.Round(time.Millisecond), tt.Round(time.Millisecond))
	}
}

// TestAWQInPlaceMatchesTasks: AWQ on the GPU over tiny-llama's first three layers, one shard of
// 10 samples of 256 tokens: quantize.RunStages (one capture per layer for every step) against
// the tasks run one by one; each layer's result must be the same bytes.
func TestAWQInPlaceMatchesTasks(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	m := tinyLlama(t)
	const samples, seq, layers = 10, 256, 3
	x := tinyCalibration(t, m, seq, samples)
	p, err := quantize.NewShardPlan(quantize.LayerConfig{Method: hfquant.AWQ, AWQ: quantize.DefaultAWQConfig()}, quantize.Stage{}, layers, samples, samples)
	if err != nil {
		t.Fatal(err)
	}
	c := &Compute{D: d}
	stores := [2]quantize.DirStore{quantize.DirStore(t.TempDir()), quantize.DirStore(t.TempDir())}
	var took [2]time.Duration
	for i, st := range stores {
		if err := st.Put(ctx, quantize.ActivationsKey(0, 0), quantize.MarshalActivations(x)); err != nil {
			t.Fatal(err)
		}
		env := &quantize.ShardEnv{Plan: p, Store: st, Layer: m.Layer, Compute: c}
		t0 := time.Now()
		if i == 0 {
			err = quantize.RunStages(ctx, env, st.Delete, func(quantize.ShardTask) {})
		} else {
			for _, task := range p.Tasks() {
				if _, err = quantize.RunShardTask(ctx, env, task); err != nil {
					break
				}
			}
		}
		if err != nil {
			t.Fatalf("FAIL run %d: %v", i, err)
		}
		took[i] = time.Since(t0)
	}
	for L := range layers {
		key := quantize.ShardTask{Op: quantize.OpLayer, Layer: L}.Key()
		a, errA := stores[0].Get(ctx, key)
		b, errB := stores[1].Get(ctx, key)
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("FAIL %s differs between the in-place steps and the tasks (%v, %v)", key, errA, errB)
		}
	}
	if !t.Failed() {
		t.Logf("PASS AWQ in place = tasks for %d layers; in place %v, tasks %v", layers, took[0].Round(time.Millisecond), took[1].Round(time.Millisecond))
	}
}
