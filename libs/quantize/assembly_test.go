package quantize

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/safetensors"
)

// TestAssembly: layers handed over as their tasks end (here in reverse, so layer 0 comes last
// and releases all) give the checkpoint and the per-layer records that adding them one after
// another gives, byte for byte, and their results leave the store; a result missing from the
// store fails wait with its error and cancels the job's context with it.
func TestAssembly(t *testing.T) {
	src, st, m := openTinyLlama(t)
	ctx := context.Background()
	cfg := LayerConfig{Method: hfquant.GPTQ, RTN: true, GPTQ: gptq.Config{Bits: 4, GroupSize: 128}}
	n := m.Config.NumLayers
	plan, err := NewShardPlan(cfg, StageOf(m.Config), n, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tasks := plan.Tasks()
	results := make([]*LayerResult, n)
	for i := range results {
		l, _ := m.Layer(i)
		if results[i], err = QuantizeLayer(ctx, l, nil, cfg); err != nil {
			t.Fatal(err)
		}
		results[i].Damp = float64(i+1) / 100 // the per-layer record shows the order
	}
	read := func(t safetensors.Tensor) ([]byte, error) { return st.ReadRaw(t.Name) }
	var damps [][]float64 // the builder's per-layer record, in the order layers were added
	build := func(dir string, add func(b *CheckpointBuilder) error) (string, error) {
		b, err := NewCheckpointBuilder(dir, cfg, plan.Linears, src, st.Tensors())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Abort()
		if err := add(b); err != nil {
			return "", err
		}
		damps = append(damps, slices.Clone(b.damps))
		return dir, b.Finish(ctx, st.Tensors(), read)
	}
	want, err := build(filepath.Join(t.TempDir(), "want"), func(b *CheckpointBuilder) error {
		for _, r := range results {
			if err := b.AddLayer(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	run := func(skip int) (string, *ShardCache, context.Context, error) {
		store := &ShardCache{Dir: DirStore(t.TempDir()), Budget: 1 << 30}
		for i, r := range results {
			if i != skip {
				if err := putLayerResult(ctx, store, layerResultKeys(plan, i)[0], r); err != nil {
					t.Fatal(err)
				}
			}
		}
		jobCtx, cancel := context.WithCancelCause(ctx)
		dir, err := build(filepath.Join(t.TempDir(), "got"), func(b *CheckpointBuilder) error {
			a := assemble(jobCtx, store, store.Delete, plan, tasks, b, cancel)
			for i := len(tasks) - 1; i >= 0; i-- {
				a.taskDone(tasks[i].Layer)
			}
			return a.wait()
		})
		return dir, store, jobCtx, err
	}
	got, store, _, err := run(-1)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"model.safetensors", "config.json"} {
		a, errA := os.ReadFile(filepath.Join(want, name))
		b, errB := os.ReadFile(filepath.Join(got, name))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the sequential assembly's (%v, %v)", name, errA, errB)
		}
	}
	if !slices.Equal(damps[0], damps[1]) {
		t.Errorf("per-layer damps %v, the sequential assembly's %v", damps[1], damps[0])
	}
	for i := range n {
		if _, err := store.Get(ctx, layerResultKeys(plan, i)[0]); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("layer %d's result still in the store: %v", i, err)
		}
	}

	_, _, jobCtx, err := run(3)
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(context.Cause(jobCtx), fs.ErrNotExist) {
		t.Errorf("layer 3's result missing: wait %v, job cancelled by %v; want both fs.ErrNotExist", err, context.Cause(jobCtx))
	}
}
