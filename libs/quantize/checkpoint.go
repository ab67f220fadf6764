package quantize

import (
	"context"
	"slices"
	"sort"
	"strings"

	"quantfleet.dev/libs/hfmodel"
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
	source   map[string]bool // the source's tensor names
	layers   int
	damps    []float64
	stats    []LinearStats
	scales   [][]ScaleStats
	closed   bool
}

// NewCheckpointBuilder starts a checkpoint in dir for cfg of layers whose quantized linears are
// linears (ShardPlan.Linears; zero: the dense layer's); sourceDir holds the source's
// config.json and tokenizer files, src is the source's tensors (the checkpoint keeps their
// names: a multimodal source's language model stays under its "model.language_model." path).
func NewCheckpointBuilder(dir string, cfg LayerConfig, linears Stage, sourceDir string, src []safetensors.Tensor) (*CheckpointBuilder, error) {
	opts := CheckpointOptions(cfg, sourceDir)
	if len(linears.Groups) > 0 && !slices.EqualFunc(linears.Groups, GPTQStage().Groups, slices.Equal) {
		// Layers with linears left dense (a router) or fused: loaders (optimum) convert only
		// the listed ones, as in GPTQModel's MoE checkpoints.
		opts.ModulesInBlockToQuantize = linears.Groups
	}
	if cfg.Method == hfquant.AWQ {
		opts.ModulesToNotConvert = routers(linears)
	}
	w, err := hfquant.Create(dir, opts)
	if err != nil {
		return nil, err
	}
	names := make(map[string]bool, len(src))
	for _, t := range src {
		names[t.Name] = true
	}
	return &CheckpointBuilder{w: w, opts: opts, cfg: cfg, replaced: map[string]bool{}, source: names}, nil
}

// routers are the module paths of the routers of a stage's mixture-of-experts blocks, the
// "gate" next to their "experts" (Mixtral's block_sparse_moe.gate, Qwen MoE's mlp.gate): AWQ
// leaves them dense, and transformers converts every linear not listed in
// modules_to_not_convert (as AutoAWQ's Mixtral example lists "gate"; the full path, because a
// bare "gate" would also match Qwen's experts' gate_proj).
func routers(s Stage) []string {
	var out []string
	for _, g := range s.Groups {
		for _, name := range g {
			if block, _, ok := strings.Cut(name, ".experts."); ok && !slices.Contains(out, block+".gate") {
				out = append(out, block+".gate")
			}
		}
	}
	return out
}

// sourceName is the source's name of the tensor a layer result calls name.
func (b *CheckpointBuilder) sourceName(name string) string {
	if b.source[name] {
		return name
	}
	for _, alt := range hfmodel.LanguageModelNames(name) {
		if b.source[alt] {
			return alt
		}
	}
	return name
}

// AddLayer writes the next layer's result.
func (b *CheckpointBuilder) AddLayer(r *LayerResult) error {
	if len(r.Linears) > 0 && !b.source[r.Linears[0].Name+".weight"] { // a multimodal source: rename
		rr := *r
		rr.Linears, rr.Tensors = make([]*hfquant.Linear, len(r.Linears)), slices.Clone(r.Tensors)
		for i, l := range r.Linears {
			c := *l
			c.Name = strings.TrimSuffix(b.sourceName(l.Name+".weight"), ".weight")
			rr.Linears[i] = &c
		}
		for i := range rr.Tensors {
			rr.Tensors[i].Name = b.sourceName(rr.Tensors[i].Name)
		}
		r = &rr
	}
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
