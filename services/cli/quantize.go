package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/services/fleet"
)

// quantizeFlags are the flags of `quantfleet quantize`.
type quantizeFlags struct {
	common
	output
	model, format, level, outputName string
	hfToken, tokenizerPre            string
	layer                            layerFlags // gptq / awq
	device                           deviceFlag
}

func (f *quantizeFlags) register(fs *flag.FlagSet) {
	f.common.register(fs)
	fs.StringVar(&f.model, "model", "", "local model directory or Hugging Face Hub id org/name[@revision] (required)")
	fs.StringVar(&f.format, "format", "gguf", "output format: gguf, gptq or awq")
	fs.StringVar(&f.level, "level", "", "quantization level, e.g. Q4_K_M (gguf), 4bit (gptq/awq) (required)")
	f.output.register(fs, domain.DefaultOutputDir, "directory for the result")
	fs.StringVar(&f.outputName, "output-name", "", "file name of the result (default: <model>-<level>.gguf)")
	fs.StringVar(&f.hfToken, "hf-token", "", "Hugging Face token for gated or private models (default $HF_TOKEN)")
	fs.StringVar(&f.tokenizerPre, "tokenizer-pre", "", "override tokenizer.ggml.pre for BPE tokenizers llama.cpp does not recognise")
	f.layer.register(fs)
	f.device.register(fs)
}

// output are --output-dir and --overwrite, the flags of every command that writes a result
// (quantize, run, submit --wait, resume, get).
type output struct {
	outputDir string
	overwrite bool
}

// register adds the flags, --output-dir with the command's default and usage.
func (o *output) register(fs *flag.FlagSet, dir, usage string) {
	fs.StringVar(&o.outputDir, "output-dir", dir, usage)
	fs.BoolVar(&o.overwrite, "overwrite", false, "replace whatever is at the output path (default: only an earlier GGUF file, or a directory quantfleet wrote)")
}

func newFlagSet(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet("quantfleet "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fleet.ParseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func runQuantize(ctx context.Context, env Env, args []string) error {
	var f quantizeFlags
	fs := newFlagSet("quantize", env)
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	verb, err := f.parse()
	if err != nil {
		return err
	}
	if f.model == "" {
		return usagef("--model is required")
	}
	format, err := domain.ParseOutputFormat(f.format)
	if err != nil {
		return usageError{err}
	}
	cfg := domain.DefaultConfig(format, f.level)
	cfg.OutputDir, cfg.OutputName = f.outputDir, f.outputName
	cfg.CalibrationDataPath, cfg.CalibrationSamples, cfg.GroupSize = f.layer.calibData, f.layer.calibSamples, f.layer.groupSize
	cfg.Verbosity = verb
	if f.json {
		cfg.OutputFormat = domain.OutputJSON
	}
	if err := cfg.Normalize(); err != nil {
		return usageError{err}
	}
	opts, err := f.layer.options(fs, cfg)
	if err != nil {
		return err
	}
	log := logger(env, verb, f.json)
	defer log.Sync()
	dev, err := f.device.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer dev.Close()
	ctx = f.device.withLayers(ctx, format, opts, log)
	if format != domain.FormatGGUF {
		return runLayeredQuantize(ctx, env, &f, cfg, opts)
	}
	rep := reporter(env, verb, f.json)

	src, err := resolveModel(ctx, env, f.model, firstNonEmpty(f.hfToken, env.Getenv("HF_TOKEN")), rep)
	if err != nil {
		return err
	}
	m, err := hfmodel.Open(os.DirFS(src.dir), src.name)
	if err != nil {
		return dataUsage(err) // a shard the index lists may be missing
	}
	defer m.Close()
	log.Info("model opened", zap.String("architecture", m.Config.Architecture), zap.Int("tensors", len(m.Tensors)))

	res, err := quantize.GGUF(ctx, quantize.GGUFRequest{
		Model: m, ModelDir: src.dir, RemoteID: src.remoteID, Level: cfg.QuantizationLevel,
		OutputDir: cfg.OutputDir, OutputName: cfg.OutputName, TokenizerPre: f.tokenizerPre, Overwrite: f.overwrite, Progress: rep,
	})
	if err != nil {
		return err
	}
	res.QuantizationMetadata = f.device.record(res.QuantizationMetadata)
	return printResult(env, f.json, res, func(w io.Writer) {
		fmt.Fprintf(w, "%s  %s %s  %.1f MiB (%.1f%% of the source)  %s\n", res.OutputPath, res.Format,
			cfg.QuantizationLevel, float64(res.FileSize)/(1<<20), 100*res.CompressionRatio, res.ValidationStatus)
	})
}

type modelSource struct {
	dir, name, remoteID string
}

// resolveModel turns --model into a local directory: an existing path is used as is, a Hub id is
// downloaded into the Hugging Face cache.
func resolveModel(ctx context.Context, env Env, model, token string, rep progressReporter) (modelSource, error) {
	if st, err := os.Stat(model); err == nil {
		if !st.IsDir() {
			return modelSource{}, usagef("model path %s is not a directory", model)
		}
		return modelSource{dir: model, name: baseName(model)}, nil
	}
	if !hub.LooksLikeModelID(model) {
		return modelSource{}, usagef("model %s: no such directory, and not a Hugging Face Hub id (org/name[@revision])", model)
	}
	repo, _, err := hub.ParseModelID(model)
	if err != nil {
		return modelSource{}, usageError{err}
	}
	c := &hub.Client{Token: token}
	if ep := env.Getenv("HF_ENDPOINT"); ep != "" {
		c.Endpoint = ep
	}
	c.Progress = func(file string, done, total int64) { rep.Update(file, done) }
	dir, err := c.Download(ctx, model, nil)
	if err != nil {
		return modelSource{}, err
	}
	return modelSource{dir: dir, name: repo, remoteID: repo}, nil
}

type progressReporter interface{ Update(item string, done int64) }

func baseName(p string) string {
	p = strings.TrimRight(p, "/")
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[i+1:]
	}
	return p
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// isUsage reports errors caused by the user's input rather than by the machine.
func isUsage(err error) bool {
	var u usageError
	if errors.As(err, &u) {
		return true
	}
	return fault.BadInput(err)
}
