package quantize

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/awq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/transformer"
)

// countingAWQ is a LayerCompute whose AWQCompute is the CPU's, counting calls and releases.
type countingAWQ struct {
	CPU
	layers, outputs, released int
}

func (c *countingAWQ) AWQLayer(ctx context.Context, l *transformer.Layer, x *transformer.Tensor, outputs bool) (*awq.Layer, *transformer.Tensor, func(), error) {
	c.layers++
	if outputs {
		c.outputs++
	}
	al, out, release, err := CPU{}.AWQLayer(ctx, l, x, outputs)
	return al, out, func() { c.released++; release() }, err
}

// TestAWQTasksUseTheEnvCompute runs the sharded AWQ tasks of tiny-llama's first two layers (2
// samples of 32 tokens, 2 shards) with the CPU, with an AWQCompute as ShardEnv.Compute and with
// one in the context (WithCompute, as --device cuda installs the GPU's): every task takes its
// layer from the AWQCompute (outputs asked for by the first layer's statistics tasks only: the
// last layer's feed nothing), releases it, and
// the objects are the CPU's bytes.
func TestAWQTasksUseTheEnvCompute(t *testing.T) {
	_, m, samples := tinySamples(t, 2, 32)
	cfg := DefaultAWQConfig()
	cfg.GroupSize, cfg.Grid = 32, 4 // a short scale grid: the wiring is what counts here
	p, err := NewShardPlan(LayerConfig{Method: hfquant.AWQ, AWQ: cfg}, Stage{}, 2, len(samples), 1)
	if err != nil {
		t.Fatal(err)
	}
	run := func(ctx context.Context, c LayerCompute) string {
		st := DirStore(t.TempDir())
		if _, err := WriteShardInputs(ctx, st, p, m, samples); err != nil {
			t.Fatal(err)
		}
		env := &ShardEnv{Plan: p, Store: st, Layer: m.Layer, Compute: c}
		for _, task := range p.Tasks() {
			if _, err := RunShardTask(ctx, env, task); err != nil {
				t.Fatal(err)
			}
		}
		return string(st)
	}
	ctx := context.Background()
	want := run(ctx, nil)
	viaEnv, viaCtx := &countingAWQ{}, &countingAWQ{}
	for name, got := range map[string]string{
		"ShardEnv.Compute": run(ctx, viaEnv),
		"WithCompute":      run(WithCompute(ctx, viaCtx), nil),
	} {
		files, err := os.ReadDir(want)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			x, _ := os.ReadFile(filepath.Join(want, f.Name()))
			y, err := os.ReadFile(filepath.Join(got, f.Name()))
			if err != nil || !bytes.Equal(x, y) {
				t.Errorf("%s: %s differs from the CPU's (%v)", name, f.Name(), err)
			}
		}
	}
	shards := len(p.Shards)
	for name, c := range map[string]*countingAWQ{"ShardEnv.Compute": viaEnv, "WithCompute": viaCtx} {
		// Per layer and shard: statistics, losses, clip stats; per layer the finish.
		if want := p.Layers * (3*shards + 1); c.layers != want || c.outputs != shards || c.released != c.layers {
			t.Errorf("%s: %d AWQ layers (want %d), %d with outputs (want %d), %d released", name, c.layers, want, c.outputs, shards, c.released)
		}
	}
}
