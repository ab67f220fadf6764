package quantize

import (
	"context"
	"slices"
	"sort"

	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/safetensors"
)

// CheckpointBuilder writes a GPTQ/AWQ checkpoint directory: the layers' results in layer order,
// then the source's other tensors unchanged, in the source's order (shards by file name, tensors
// by offset). The local pipeline and the fleet's assembler both build through it: that is what
// makes their directories byte for byte the same.
type CheckpointBuilder struct {
	w        *hfquant.Writer
	opts     hfquant.Options
	cfg      LayerConfig
	replaced map[string]bool
	layers   int
	damps    []float64
	stats    []LinearStats
	scales   [][]ScaleStats
	closed   bool
}

// NewCheckpointBuilder starts a checkpoint in dir for cfg of layers whose quantized linears are
// linears (ShardPlan.Linears; zero: the dense layer's); sourceDir holds the source's
// config.json and tokenizer files.
func NewCheckpointBuilder(dir string, cfg LayerConfig, linears Stage, sourceDir string) (*CheckpointBuilder, error) {
	opts := CheckpointOptions(cfg, sourceDir)
	if len(linears.Groups) > 0 && !slices.EqualFunc(linears.Groups, GPTQStage().Groups, slices.Equal) {
		// Layers with linears left dense (a router) or fused: loaders (optimum) convert only
		// the listed ones, as in GPTQModel's MoE checkpoints.
		opts.ModulesInBlockToQuantize = linears.Groups
	}
	w, err := hfquant.Create(dir, opts)
	if err != nil {
		return nil, err
	}
	return &CheckpointBuilder{w: w, opts: opts, cfg: cfg, replaced: map[string]bool{}}, nil
}

// AddLayer writes the next layer's result.
func (b *CheckpointBuilder) AddLayer(r *LayerResult) error {
	if err := WriteLayer(b.w, r); err != nil {
		return err
	}
	for _, name := range r.Names() {
		b.replaced[name] = true
	}
	b.layers++
	b.damps = append(b.damps, r.Damp)
	b.stats = append(b.stats, r.Stats...)
	if r.Scales != nil {
		b.scales = append(b.scales, r.Scales)
	}
	return nil
}

// Finish copies the source tensors no layer replaced, read by read, and closes the checkpoint.
func (b *CheckpointBuilder) Finish(ctx context.Context, src []safetensors.Tensor, read func(safetensors.Tensor) ([]byte, error)) error {
	rest := slices.Clone(src)
	sort.SliceStable(rest, func(i, j int) bool {
		if rest[i].File != rest[j].File {
			return rest[i].File < rest[j].File
		}
		return rest[i].Begin < rest[j].Begin
	})
	for _, t := range rest {
		if b.replaced[t.Name] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		raw, err := read(t)
		if err != nil {
			return err
		}
		if err := b.w.AddTensor(t.Name, t.DType, t.Shape, raw); err != nil {
			return err
		}
	}
	b.closed = true
	return b.w.Close()
}

// Abort removes an unfinished checkpoint; a no-op after Finish.
func (b *CheckpointBuilder) Abort() {
	if !b.closed {
		b.closed = true
		b.w.Abort()
	}
}

// Metadata is the result record's quantization metadata: st with the layers' statistics.
func (b *CheckpointBuilder) Metadata(st CheckpointStats) map[string]any {
	st.Layers, st.Damps, st.Linears, st.Scales = b.layers, b.damps, b.stats, b.scales
	return CheckpointMetadata(b.cfg, b.opts, st)
}
