package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/quantize"
)

// layerFlags are the GPTQ/AWQ flags of quantize, run and submit: one registration, one options
// type (domain.LayerOptions) down to the kernels. The values are checked where the fleet checks
// them (domain.QuantizationConfig.ValidateLayers); here only what the typed flags tell.
type layerFlags struct {
	calibData               string
	calibSamples, groupSize int
	opts                    domain.LayerOptions
	// only maps a flag that applies to one of gptq and awq to that format; calibration are the
	// flags of a calibrated job, which --rtn refuses: both as register marks them.
	only        map[string]domain.OutputFormat
	calibration []string
}

func (f *layerFlags) register(fs *flag.FlagSet) {
	f.only, f.calibration = map[string]domain.OutputFormat{}, nil
	only := func(format domain.OutputFormat, name string) string { f.only[name] = format; return name }
	gptqOnly := func(name string) string { return only(domain.FormatGPTQ, name) }
	calib := func(name string) string { f.calibration = append(f.calibration, name); return name }
	fs.StringVar(&f.calibData, calib("calibration-data"), "", "calibration text or JSONL file (gptq, awq); a fleet job uploads it once")
	fs.IntVar(&f.calibSamples, calib("calibration-samples"), domain.DefaultCalibrationSamples, "number of calibration samples, 1-1024")
	fs.IntVar(&f.groupSize, "group-size", domain.DefaultGroupSize, "group size: 32, 64, 128 or 256 (gptq also -1)")
	fs.IntVar(&f.opts.CalibrationOffset, calib("calibration-offset"), 0, "first calibration sample: samples N..N+count-1 are used (gptq, awq)")
	fs.IntVar(&f.opts.ShardSamples, calib("shard-samples"), quantize.DefaultShardSamples, "calibration samples per shard: the job's work splits into ceil(samples/N) shards (gptq, awq); fixes the result, bounds a task's memory")
	fs.IntVar(&f.opts.SeqLen, calib("seqlen"), quantize.DefaultSeqLen, "tokens per calibration sample (gptq, awq)")
	// --sym=false is accepted with awq (which is asymmetric); --sym is refused by its value.
	fs.BoolVar(&f.opts.Sym, "sym", true, "gptq: symmetric quantization (--sym=false: asymmetric, with zero points)")
	fs.BoolVar(&f.opts.ActOrder, calib(gptqOnly("act-order")), false, "gptq: quantize columns by decreasing Hessian diagonal (desc_act)")
	fs.BoolVar(&f.opts.StaticGroups, calib(gptqOnly("static-groups")), false, "gptq: compute group grids before the error feedback")
	fs.Float64Var(&f.opts.Damp, calib(gptqOnly("damp")), gptq.DefaultDamp, "gptq: Hessian dampening, fraction of its mean diagonal (raised automatically if needed)")
	fs.BoolVar(&f.opts.RTN, gptqOnly("rtn"), false, "gptq: round to nearest, no calibration")
	fs.BoolVar(&f.opts.DuoScaling, only(domain.FormatAWQ, "duo-scaling"), false, "awq: AutoAWQ's scale grid mean|x|^r/mean|w|^(1-r) instead of llm-awq's mean|x|^r")
}

// layerFlagNames are the flags register defines, in lexical order.
func layerFlagNames() []string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	(&layerFlags{}).register(fs)
	var names []string
	fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
	return names
}

// options are the checked options of a GPTQ/AWQ config (AWQ has no symmetric grid and no damping):
// the flags that apply to other formats than cfg's are refused by name, the values by
// cfg.ValidateLayers, with the flags' names in the messages.
func (f *layerFlags) options(fs *flag.FlagSet, cfg domain.QuantizationConfig) (domain.LayerOptions, error) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if cfg.TargetFormat == domain.FormatGGUF {
		for _, name := range layerFlagNames() {
			if set[name] {
				return domain.LayerOptions{}, usagef("--%s applies to gptq and awq only", name)
			}
		}
		return domain.LayerOptions{}, nil
	}
	if set["tokenizer-pre"] {
		return domain.LayerOptions{}, usagef("--tokenizer-pre applies to gguf only")
	}
	for _, name := range layerFlagNames() {
		if format, ok := f.only[name]; ok && set[name] && format != cfg.TargetFormat {
			return domain.LayerOptions{}, usagef("--%s applies to %s only", name, format)
		}
	}
	o := f.opts
	if o.RTN {
		for _, name := range f.calibration {
			if set[name] {
				n := len(f.calibration)
				return domain.LayerOptions{}, usagef("--rtn uses no calibration: drop --%s and --%s",
					strings.Join(f.calibration[:n-1], ", --"), f.calibration[n-1])
			}
		}
	}
	if cfg.TargetFormat == domain.FormatAWQ {
		// the defaults of the gptq-only options; typed, they were refused above (--sym by value)
		o.Sym, o.Damp = o.Sym && set["sym"], 0
	}
	if err := cfg.ValidateLayers(o); err != nil {
		return domain.LayerOptions{}, usageError{f.flagError(err)}
	}
	if !o.RTN {
		if _, err := os.Stat(cfg.CalibrationDataPath); err != nil {
			return domain.LayerOptions{}, usageError{fmt.Errorf("calibration data: %w", err)}
		}
	}
	return o, nil
}

// flagError words a domain validation error in the flags' names: each word naming an option by
// its JSON name (the flag's name with "_" for "-") becomes its flag, calibration_data_path
// --calibration-data.
func (f *layerFlags) flagError(err error) error {
	var fe *domain.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	flags := map[string]string{"calibration_data_path": "--calibration-data"}
	for _, name := range layerFlagNames() {
		flags[strings.ReplaceAll(name, "-", "_")] = "--" + name
	}
	words := strings.Split(fe.Msg, " ")
	for i, w := range words {
		word := strings.TrimRight(w, ",;:.")
		if flag, ok := flags[word]; ok {
			words[i] = flag + w[len(word):]
		}
	}
	return &domain.FieldError{Field: fe.Field, Msg: strings.Join(words, " ")}
}
