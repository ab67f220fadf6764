package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/quantize"
)

// runLayeredQuantize is `quantize --format gptq|awq`: calibration, layer-by-layer
// quantization and a Hugging Face checkpoint directory.
func runLayeredQuantize(ctx context.Context, env Env, f *quantizeFlags, cfg domain.QuantizationConfig) error {
	bits, err := strconv.Atoi(strings.TrimSuffix(cfg.QuantizationLevel, "bit"))
	if err != nil {
		return usagef("level %s: want <n>bit", cfg.QuantizationLevel)
	}
	rep := reporter(env, cfg.Verbosity, f.json)
	src, err := resolveModel(ctx, env, f.model, firstNonEmpty(f.hfToken, env.Getenv("HF_TOKEN")), rep)
	if err != nil {
		return err
	}
	req := quantize.Request{
		ModelDir: src.dir, ModelName: src.name, RemoteID: src.remoteID,
		CalibrationData: cfg.CalibrationDataPath, CalibrationSamples: cfg.CalibrationSamples, SeqLen: f.seqlen, CalibrationOffset: f.calibOffset,
		OutputDir: cfg.OutputDir, OutputName: cfg.OutputName, Overwrite: f.overwrite, Progress: rep,
	}
	var res *domain.QuantizedModel
	if cfg.TargetFormat == domain.FormatAWQ {
		ac := quantize.DefaultAWQConfig()
		ac.Bits, ac.GroupSize, ac.PlainScaling = bits, cfg.GroupSize, !f.duoScaling
		res, err = quantize.AWQ(ctx, quantize.AWQRequest{Request: req, Config: ac})
	} else {
		res, err = quantize.GPTQ(ctx, quantize.GPTQRequest{Request: req, RTN: f.rtn, Config: gptq.Config{
			Bits: bits, GroupSize: cfg.GroupSize, Sym: f.sym, ActOrder: f.actOrder, StaticGroups: f.staticGroups, Damp: f.damp,
		}})
	}
	if err != nil {
		return dataUsage(err)
	}
	return printResult(env, f.json, res, func(w io.Writer) {
		fmt.Fprintf(w, "%s  %s %s  %.1f MiB (%.1f%% of the source)  %s\n", res.OutputPath, res.Format,
			cfg.QuantizationLevel, float64(res.FileSize)/(1<<20), 100*res.CompressionRatio, res.ValidationStatus)
	})
}
