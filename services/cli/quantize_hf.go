package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/quantize"
)

// runLayeredQuantize is `quantize --format gptq|awq`: calibration, layer-by-layer
// quantization and a Hugging Face checkpoint directory.
func runLayeredQuantize(ctx context.Context, env Env, fs *flag.FlagSet, f *quantizeFlags, cfg domain.QuantizationConfig) error {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	bits, err := strconv.Atoi(strings.TrimSuffix(cfg.QuantizationLevel, "bit"))
	if err != nil {
		return usagef("level %s: want <n>bit", cfg.QuantizationLevel)
	}
	if f.seqlen < 1 {
		return usagef("--seqlen %d must be positive", f.seqlen)
	}
	for _, name := range []string{"tokenizer-pre"} {
		if set[name] {
			return usagef("--%s applies to gguf only", name)
		}
	}
	if cfg.TargetFormat == domain.FormatGPTQ && set["duo-scaling"] {
		return usagef("--duo-scaling applies to awq only")
	}
	if cfg.TargetFormat == domain.FormatAWQ {
		for _, name := range []string{"act-order", "static-groups", "damp", "rtn"} {
			if set[name] {
				return usagef("--%s applies to gptq only", name)
			}
		}
		if set["sym"] && f.sym {
			return usagef("awq quantizes asymmetrically (zero points); --sym is not available")
		}
	}
	if f.rtn && (set["calibration-data"] || set["calibration-samples"] || set["seqlen"] || set["act-order"] || set["damp"] || set["static-groups"]) {
		return usagef("--rtn uses no calibration: drop --calibration-data, --calibration-samples, --seqlen, --act-order, --static-groups and --damp")
	}
	if !f.rtn && cfg.CalibrationDataPath == "" {
		return usagef("%s needs calibration text: --calibration-data FILE (text with documents separated by \\n\\f\\n, or JSONL with a \"text\" field)%s",
			cfg.TargetFormat, map[bool]string{true: ", or --rtn for round-to-nearest", false: ""}[cfg.TargetFormat == domain.FormatGPTQ])
	}
	if !f.rtn {
		if _, err := os.Stat(cfg.CalibrationDataPath); err != nil {
			return usageError{fmt.Errorf("calibration data: %w", err)}
		}
	}
	if !(f.damp > 0 && f.damp < 1) {
		return usagef("--damp %v must be in (0, 1)", f.damp)
	}
	rep := reporter(env, cfg.Verbosity, f.json)
	src, err := resolveModel(ctx, env, f.model, firstNonEmpty(f.hfToken, env.Getenv("HF_TOKEN")), rep)
	if err != nil {
		return err
	}
	req := quantize.Request{
		ModelDir: src.dir, ModelName: src.name, RemoteID: src.remoteID,
		CalibrationData: cfg.CalibrationDataPath, CalibrationSamples: cfg.CalibrationSamples, SeqLen: f.seqlen,
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
