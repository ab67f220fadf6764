package quantize_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/tokenizer"
	"quantfleet.dev/libs/transformer"
)

// A layer-sequential job as a fleet runs it: the activations entering each layer are the
// job's checkpoint (here files; on a fleet, objects), and a worker turns layer i's weights
// and activations into the layer's checkpoint tensors and layer i+1's activations.
func ExampleQuantizeLayer() {
	ctx := context.Background()
	src, calib, work := "tiny-llama", "calib.txt", "job"
	cfg := quantize.LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 128, Sym: true}}
	act := func(i int) string { return filepath.Join(work, fmt.Sprintf("layer-%d.act", i)) }

	m, err := transformer.Load(src) // any transformer.WeightSource works, e.g. one over S3
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	// Dispatcher: the inputs of layer 0.
	tok, _ := tokenizer.Load(src)
	x, err := quantize.CalibrationInputs(m, tok, calib, 512, 0, 128)
	if err != nil {
		fmt.Println(err)
		return
	}
	os.WriteFile(act(0), quantize.MarshalActivations(x), 0o644)

	// Worker, one task per layer (a crashed task is simply run again: results are
	// deterministic).
	layers := make([]*quantize.LayerResult, m.Config.NumLayers)
	for i := range layers {
		raw, _ := os.ReadFile(act(i))
		in, err := quantize.UnmarshalActivations(raw)
		if err != nil {
			fmt.Println(err)
			return
		}
		l, err := m.Layer(i)
		if err != nil {
			fmt.Println(err)
			return
		}
		r, err := quantize.QuantizeLayer(ctx, l, in, cfg)
		l.Release()
		if err != nil {
			fmt.Println(err)
			return
		}
		os.WriteFile(act(i+1), quantize.MarshalActivations(r.Outputs), 0o644)
		layers[i] = r // store r.Linears and r.Tensors
	}

	// Assembler: the checkpoint.
	st, _ := safetensors.OpenModel(src)
	defer st.Close()
	b, err := quantize.NewCheckpointBuilder(filepath.Join(work, "out"), cfg, quantize.Stage{}, src, st.Tensors())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Abort()
	for _, r := range layers {
		b.AddLayer(r)
	}
	if err := b.Finish(ctx, st.Tensors(), func(t safetensors.Tensor) ([]byte, error) { return st.ReadRaw(t.Name) }); err != nil {
		fmt.Println(err)
	}
}
