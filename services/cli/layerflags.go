package cli

import (
	"flag"
	"fmt"
	"os"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/quantize"
)

// layerFlags are the GPTQ/AWQ flags of quantize, run and submit: one registration, one check
// (checkLayeredFlags), one options type (domain.LayerOptions) down to the kernels.
type layerFlags struct {
	calibData               string
	calibSamples, groupSize int
	opts                    domain.LayerOptions
}

func (f *layerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.calibData, "calibration-data", "", "calibration text or JSONL file (gptq, awq); a fleet job uploads it once")
	fs.IntVar(&f.calibSamples, "calibration-samples", domain.DefaultCalibrationSamples, "number of calibration samples, 1-1024")
	fs.IntVar(&f.groupSize, "group-size", domain.DefaultGroupSize, "group size: 32, 64, 128 or 256 (gptq also -1)")
	fs.IntVar(&f.opts.SeqLen, "seqlen", quantize.DefaultSeqLen, "tokens per calibration sample (gptq, awq)")
	fs.IntVar(&f.opts.CalibrationOffset, "calibration-offset", 0, "first calibration sample: samples N..N+count-1 are used (gptq, awq)")
	fs.BoolVar(&f.opts.Sym, "sym", true, "gptq: symmetric quantization (--sym=false: asymmetric, with zero points)")
	fs.BoolVar(&f.opts.ActOrder, "act-order", false, "gptq: quantize columns by decreasing Hessian diagonal (desc_act)")
	fs.BoolVar(&f.opts.StaticGroups, "static-groups", false, "gptq: compute group grids before the error feedback")
	fs.Float64Var(&f.opts.Damp, "damp", gptq.DefaultDamp, "gptq: Hessian dampening, fraction of its mean diagonal (raised automatically if needed)")
	fs.BoolVar(&f.opts.RTN, "rtn", false, "gptq: round to nearest, no calibration")
	fs.BoolVar(&f.opts.DuoScaling, "duo-scaling", false, "awq: AutoAWQ's scale grid mean|x|^r/mean|w|^(1-r) instead of llm-awq's mean|x|^r")
}

// options are the checked options of a GPTQ/AWQ config (AWQ has no symmetric grid and no damping).
func (f *layerFlags) options(fs *flag.FlagSet, cfg domain.QuantizationConfig) (domain.LayerOptions, error) {
	if err := checkLayeredFlags(fs, cfg, f.opts); err != nil {
		return domain.LayerOptions{}, err
	}
	o := f.opts
	if cfg.TargetFormat == domain.FormatAWQ {
		o.Sym, o.Damp = false, 0
	}
	return o, nil
}

// checkLayeredFlags is the one check, for quantize, submit and run, of the flags that apply to
// some formats only (each refused with a usage error naming it) and of the GPTQ/AWQ values.
func checkLayeredFlags(fs *flag.FlagSet, cfg domain.QuantizationConfig, o domain.LayerOptions) error {
	seqlen, calibOffset, sym, rtn, damp := o.SeqLen, o.CalibrationOffset, o.Sym, o.RTN, o.Damp
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if cfg.TargetFormat == domain.FormatGGUF {
		for _, name := range []string{"calibration-data", "calibration-samples", "calibration-offset", "group-size", "seqlen", "sym", "act-order", "static-groups", "damp", "rtn", "duo-scaling"} {
			if set[name] {
				return usagef("--%s applies to gptq and awq only", name)
			}
		}
		return nil
	}
	if set["tokenizer-pre"] {
		return usagef("--tokenizer-pre applies to gguf only")
	}
	if seqlen < 1 {
		return usagef("--seqlen %d must be positive", seqlen)
	}
	if calibOffset < 0 {
		return usagef("--calibration-offset %d must not be negative", calibOffset)
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
		if set["sym"] && sym {
			return usagef("awq quantizes asymmetrically (zero points); --sym is not available")
		}
	}
	if rtn && (set["calibration-data"] || set["calibration-samples"] || set["calibration-offset"] || set["seqlen"] || set["act-order"] || set["damp"] || set["static-groups"]) {
		return usagef("--rtn uses no calibration: drop --calibration-data, --calibration-samples, --calibration-offset, --seqlen, --act-order, --static-groups and --damp")
	}
	if !rtn {
		if cfg.CalibrationDataPath == "" {
			return usagef("%s needs calibration text: --calibration-data FILE (text with documents separated by \\n\\f\\n, or JSONL with a \"text\" field)%s",
				cfg.TargetFormat, map[bool]string{true: ", or --rtn for round-to-nearest", false: ""}[cfg.TargetFormat == domain.FormatGPTQ])
		}
		if _, err := os.Stat(cfg.CalibrationDataPath); err != nil {
			return usageError{fmt.Errorf("calibration data: %w", err)}
		}
	}
	if !(damp > 0 && damp < 1) {
		return usagef("--damp %v must be in (0, 1)", damp)
	}
	return nil
}
