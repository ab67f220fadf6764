package cli

import (
	"context"
	"fmt"
	"io"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/quantize"
)

// runLayeredQuantize is `quantize --format gptq|awq`: calibration, layer-by-layer
// quantization and a Hugging Face checkpoint directory.
func runLayeredQuantize(ctx context.Context, env Env, f *quantizeFlags, cfg domain.QuantizationConfig, opts domain.LayerOptions) error {
	rep := reporter(env, cfg.Verbosity, f.json)
	src, err := resolveModel(ctx, env, f.model, firstNonEmpty(f.hfToken, env.Getenv("HF_TOKEN")), rep)
	if err != nil {
		return err
	}
	req := quantize.Request{
		ModelDir: src.dir, ModelName: src.name, RemoteID: src.remoteID,
		CalibrationData: cfg.CalibrationDataPath, CalibrationSamples: cfg.CalibrationSamples,
		OutputDir: cfg.OutputDir, OutputName: cfg.OutputName, Overwrite: f.overwrite, Progress: rep,
	}
	res, err := quantize.Layered(ctx, req, cfg.TargetFormat, cfg.QuantizationLevel, cfg.GroupSize, opts)
	if err != nil {
		return dataUsage(err)
	}
	res.QuantizationMetadata = f.device.record(res.QuantizationMetadata)
	return printResult(env, f.json, res, func(w io.Writer) {
		fmt.Fprintf(w, "%s  %s %s  %.1f MiB (%.1f%% of the source)  %s\n", res.OutputPath, res.Format,
			cfg.QuantizationLevel, float64(res.FileSize)/(1<<20), 100*res.CompressionRatio, res.ValidationStatus)
	})
}
