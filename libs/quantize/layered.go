package quantize

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"quantfleet.dev/libs/atomicfile"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/progress"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/tokenizer"
	"quantfleet.dev/libs/transformer"
)

// Request is what a local GPTQ or AWQ quantization shares.
type Request struct {
	// ModelDir is the Hugging Face model directory (config.json, safetensors, tokenizer).
	ModelDir string
	// ModelName names the model in the default output name; RemoteID is its Hub id when it
	// came from the Hub (recorded as the source).
	ModelName, RemoteID string
	// CalibrationData is a text file (documents separated by "\n\f\n") or JSONL ("text").
	CalibrationData string
	// CalibrationSamples samples of SeqLen tokens (0: domain.DefaultCalibrationSamples and
	// DefaultSeqLen); see CalibrationSamples for how they are cut.
	CalibrationSamples, SeqLen int
	// CalibrationOffset is the first sample (--calibration-offset): samples
	// CalibrationOffset..CalibrationOffset+CalibrationSamples-1 are used, so that different
	// offsets draw disjoint calibration sets from one text.
	CalibrationOffset int
	// ShardSamples is the calibration samples per shard (0: DefaultShardSamples); see ShardPlan.
	ShardSamples int
	// TempDir holds the shards' intermediate objects while the job runs ("": os.TempDir()).
	TempDir string
	// OutputDir receives the checkpoint directory OutputName (default
	// "<model>-<format>-<level>").
	OutputDir, OutputName string
	// Overwrite replaces whatever is at the output path; without it only a directory quantfleet
	// wrote is replaced (see atomicfile).
	Overwrite bool
	Progress  progress.Reporter
}

// Layered quantizes a model to format f (GPTQ or AWQ) at level with the options o: the local
// pipeline of `quantfleet quantize`. o's SeqLen and CalibrationOffset fill req's when unset.
func Layered(ctx context.Context, req Request, f domain.OutputFormat, level string, groupSize int, o domain.LayerOptions) (*domain.QuantizedModel, error) {
	level, bits, err := domain.ParseLevel(f, level)
	if err != nil {
		return nil, err
	}
	if req.SeqLen == 0 {
		req.SeqLen = o.SeqLen
	}
	if req.CalibrationOffset == 0 {
		req.CalibrationOffset = o.CalibrationOffset
	}
	if req.ShardSamples == 0 {
		req.ShardSamples = o.ShardSamples
	}
	return layered(ctx, req, NewLayerConfig(f, bits, groupSize, o), level, f)
}

// layered quantizes a model layer by layer with QuantizeLayer and writes the checkpoint:
// under a temporary name in OutputDir, validated by reading it back, then renamed.
func layered(ctx context.Context, req Request, cfg LayerConfig, level string, format domain.OutputFormat) (*domain.QuantizedModel, error) {
	start := time.Now()
	rep := req.Progress
	if rep == nil {
		rep = progress.Nop()
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if req.CalibrationSamples == 0 {
		req.CalibrationSamples = domain.DefaultCalibrationSamples
	}
	if req.SeqLen == 0 {
		req.SeqLen = DefaultSeqLen
	}
	if cfg.Calibrated() {
		cfg.SeqLen = req.SeqLen
	}
	mcfg, err := transformer.ReadConfig(req.ModelDir)
	if err != nil {
		return nil, err
	}
	if err := CheckModel(mcfg, cfg); err != nil {
		return nil, err
	}
	st, err := safetensors.OpenModel(req.ModelDir)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	// The same check as the GGUF path, on the headers, before any weight is read.
	if err := mcfg.Dims().CheckTensors(st.Tensors()); err != nil {
		return nil, err
	}
	m := transformer.New(mcfg, transformer.SafetensorsSource{Model: st})

	// The output is checked before the long work: an existing path it may not replace fails now.
	name := req.OutputName
	if name == "" {
		name = DefaultOutputName(req.ModelName, level, format)
	}
	if err := atomicfile.MkdirAll(req.OutputDir); err != nil {
		return nil, err
	}
	out, err := atomicfile.MkdirTemp(req.OutputDir, name, atomicfile.Options{Overwrite: req.Overwrite})
	if err != nil {
		return nil, err
	}
	defer out.Abort() // a no-op after Commit
	tmp := out.Path
	// The device's start-up (a GPU's kernels) overlaps the calibration inputs' preparation.
	warmed := warm(ctx, cfg.Calibrated())
	defer warmed()
	// So does the loading of layer 0's weights.
	layer, releaseLayer := loadAhead(m.Layer, 0)
	defer releaseLayer()

	// The sharded pipeline's tasks, in order, in this process: the fleet runs the same tasks on
	// the same shards, so both write the same bytes. Intermediates (one shard's activations, the
	// partial Hessians, the solved groups) go through a temporary directory, not memory.
	n := mcfg.NumLayers
	plan, err := NewShardPlan(cfg, StageOf(mcfg), n, req.CalibrationSamples, req.ShardSamples)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(req.TempDir, "quantfleet-shards-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	// Two shards' activations in memory: a layer's input and output shard (see ShardCache).
	store := &ShardCache{Dir: DirStore(work)}
	for _, sr := range plan.Shards {
		store.Budget = max(store.Budget, 2*int64(activationsBytes(sr.Hi-sr.Lo, req.SeqLen, mcfg.HiddenSize)))
	}
	if cfg.Calibrated() {
		if req.CalibrationData == "" {
			return nil, fmt.Errorf("%w: %s needs calibration text (a text or JSONL file)", ErrNoCalibrationData, cfg.Method)
		}
		tok, err := tokenizer.Load(req.ModelDir)
		if err != nil {
			return nil, err
		}
		samples, err := CalibrationSamples(tok, req.CalibrationData, req.SeqLen, req.CalibrationOffset, req.CalibrationSamples)
		if err != nil {
			return nil, err
		}
		if _, err := WriteShardInputs(ctx, store, plan, m, samples); err != nil {
			return nil, err
		}
		m.ReleaseEmbeddings()
	}

	b, err := NewCheckpointBuilder(tmp, cfg, plan.Linears, req.ModelDir, st.Tensors())
	if err != nil {
		return nil, err
	}
	defer b.Abort()

	env := &ShardEnv{Plan: plan, Store: store, Layer: layer}
	tasks := plan.Tasks()
	if err := warmed(); err != nil {
		return nil, err
	}
	rep.Start("quantize", int64(len(tasks)), progress.Unit("tasks"))
	ran := 0
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	asm := assemble(runCtx, store, store.Delete, plan, tasks, b, cancel)
	err = RunStages(runCtx, env, store.Delete, func(t ShardTask) {
		// The bar counts tasks (a layer is many: Hessian partials, solves, forwards); the item says
		// how many whole layers are complete, as the fleet's "layer x/y".
		ran++
		asm.taskDone(t.Layer)
		rep.Update(fmt.Sprintf("layer %d/%d, %s", asm.complete(), plan.Layers, t.ID()), int64(ran))
	})
	if aerr := asm.wait(); aerr != nil {
		err = aerr // the writer's error, not the cancellation it caused
	}
	if err != nil {
		rep.Error(err)
		return nil, err
	}
	if err := b.Finish(ctx, st.Tensors(), func(t safetensors.Tensor) ([]byte, error) { return st.ReadRaw(t.Name) }); err != nil {
		return nil, err
	}
	rep.Finish("written")

	rep.Start("validate", int64(len(st.Tensors())))
	if err := ValidateCheckpoint(tmp, st, rep); err != nil {
		rep.Error(err)
		return nil, err
	}
	rep.Finish("valid")
	size, err := dirSize(tmp) // before Commit adds its marker file
	if err != nil {
		return nil, err
	}
	if err := out.Commit(); err != nil {
		return nil, err
	}
	final := out.FinalPath()
	var srcSize int64
	for _, t := range st.Tensors() {
		srcSize += t.Size()
	}
	abs, _ := filepath.Abs(final)
	src := req.RemoteID
	if src == "" {
		src, _ = filepath.Abs(req.ModelDir)
	}
	calib := ""
	if cfg.Calibrated() {
		calib = req.CalibrationData
	}
	meta := b.Metadata(CheckpointStats{Level: level, Arch: mcfg.Architecture, CalibrationData: calib,
		Samples: req.CalibrationSamples, SeqLen: req.SeqLen, Offset: req.CalibrationOffset})
	meta["seconds"] = math.Round(time.Since(start).Seconds()*10) / 10
	return &domain.QuantizedModel{
		OutputPath:           abs,
		Format:               format,
		FileSize:             size,
		CompressionRatio:     float64(size) / float64(srcSize),
		QuantizationMetadata: meta,
		CreatedAt:            time.Now().UTC(),
		SourceModelPath:      src,
		ValidationStatus:     domain.ValidationValid,
	}, nil
}

// CheckModel refuses a model that cfg's method cannot quantize (transformer.CheckQuantizable,
// and CheckAWQ for AWQ): an error wrapping fault.ErrBadInput naming the architecture.
func CheckModel(c *transformer.Config, cfg LayerConfig) error {
	if cfg.Method == hfquant.AWQ {
		return c.CheckAWQ()
	}
	return c.CheckQuantizable()
}

// ValidateCheckpoint reads a written GPTQ/AWQ checkpoint back as its loaders would: the
// quantization config must parse, and every tensor of the source model must be there with
// its shape, dequantizing (quantized linears) to finite values.
func ValidateCheckpoint(dir string, src *safetensors.Model, rep progress.Reporter) error {
	return ValidateCheckpointTensors(dir, src.Tensors(), rep)
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// CheckpointStats is what a GPTQ/AWQ run learned, for its QuantizedModel record.
type CheckpointStats struct {
	Level, Arch     string
	Layers          int
	Damps           []float64 // GPTQ: the damping used per layer
	Linears         []LinearStats
	Scales          [][]ScaleStats // AWQ: the chosen scales per layer
	CalibrationData string         // empty for round-to-nearest
	Samples, SeqLen int
	Offset          int // first calibration sample
}

// CheckpointMetadata is the QuantizedModel.quantization_metadata of a GPTQ/AWQ checkpoint; the local
// pipeline and the fleet's assembler record the same keys.
func CheckpointMetadata(cfg LayerConfig, opts hfquant.Options, st CheckpointStats) map[string]any {
	m := map[string]any{"method": string(cfg.Method), "level": st.Level, "architecture": st.Arch, "quantized_layers": st.Layers}
	if cfg.Method == hfquant.AWQ {
		m["bits"], m["group_size"], m["zero_point"], m["version"] = opts.Bits, opts.GroupSize, true, "gemm"
		m["scale_groups"] = st.Scales
	} else {
		if cfg.RTN {
			m["method"] = "rtn"
		}
		m["bits"], m["group_size"], m["sym"], m["desc_act"] = opts.Bits, opts.GroupSize, opts.Sym, opts.DescAct
		m["static_groups"], m["true_sequential"] = opts.StaticGroups, opts.TrueSequential
		m["checkpoint_format"] = hfquant.FormatGPTQ
		if !cfg.RTN && len(st.Damps) > 0 {
			m["damp_percent"] = opts.DampPercent
			m["damp_used_per_layer"] = st.Damps
			m["damp_used_max"] = slices.Max(st.Damps)
			m["linears"] = st.Linears
		}
	}
	if cfg.Calibrated() {
		m["calibration_data"] = st.CalibrationData
		m["calibration_samples"] = st.Samples
		m["seqlen"] = st.SeqLen
		if st.Offset > 0 {
			m["calibration_offset"] = st.Offset
		}
	}
	return m
}
