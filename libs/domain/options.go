package domain

// LayerOptions are a GPTQ or AWQ job's options beyond the config's level, group size and
// calibration data and sample count: one type from the flags of quantize, run and submit,
// through the fleet's job request and plan, to the kernels' configs (quantize.NewLayerConfig).
type LayerOptions struct {
	// Sym: GPTQ's symmetric grid (AWQ is always asymmetric).
	Sym bool `json:"sym,omitempty"`
	// ActOrder: GPTQ quantizes columns by decreasing Hessian diagonal (desc_act).
	ActOrder bool `json:"act_order,omitempty"`
	// StaticGroups: GPTQ's group grids are computed before the error feedback.
	StaticGroups bool `json:"static_groups,omitempty"`
	// Damp: GPTQ's Hessian dampening, a fraction of its mean diagonal, in (0, 1) for a calibrated
	// GPTQ job; 0 for AWQ.
	Damp float64 `json:"damp,omitempty"`
	// RTN: GPTQ's format, rounded to nearest, without calibration.
	RTN bool `json:"rtn,omitempty"`
	// DuoScaling: AutoAWQ's scale grid instead of llm-awq's.
	DuoScaling bool `json:"duo_scaling,omitempty"`
	// SeqLen is the tokens per calibration sample: at least 1 for a calibrated job (RTN ignores it).
	SeqLen int `json:"seqlen,omitempty"`
	// CalibrationOffset is the first calibration sample used (not negative).
	CalibrationOffset int `json:"calibration_offset,omitempty"`
	// ShardSamples is the calibration samples per shard of a calibrated job (0: the default, 32):
	// the job's samples are cut into ceil(samples/shard_samples) shards whose work runs as
	// separate tasks. It fixes the result, whatever the number of workers, and bounds a task's
	// memory.
	ShardSamples int `json:"shard_samples,omitempty"`
}

// Calibrated reports whether the options need calibration data.
func (o LayerOptions) Calibrated() bool { return !o.RTN }

// Validate checks the options' values for a job of format f (GPTQ or AWQ) and reports the first
// violation as a *FieldError naming the option by its JSON name. AWQ has no symmetric grid, no
// act-order, static groups, dampening or round-to-nearest; GPTQ has no duo scaling. A calibrated
// job needs a positive seqlen and, for GPTQ, a damp in (0, 1); RTN needs neither and takes no
// act-order or static groups. The calibration offset is never negative.
func (o LayerOptions) Validate(f OutputFormat) error {
	if f != FormatGPTQ && f != FormatAWQ {
		return invalid("target_format", "%s takes no gptq/awq options", f)
	}
	if o.CalibrationOffset < 0 {
		return invalid("calibration_offset", "calibration_offset %d must not be negative", o.CalibrationOffset)
	}
	if o.ShardSamples < 0 || o.ShardSamples > MaxCalibrationSamples {
		return invalid("shard_samples", "shard_samples %d must be in [0, %d]", o.ShardSamples, MaxCalibrationSamples)
	}
	if f == FormatAWQ {
		switch {
		case o.Sym:
			return invalid("sym", "awq quantizes asymmetrically (zero points); sym is not available")
		case o.ActOrder:
			return invalid("act_order", "act_order applies to gptq only")
		case o.StaticGroups:
			return invalid("static_groups", "static_groups applies to gptq only")
		case o.Damp != 0:
			return invalid("damp", "damp applies to gptq only")
		case o.RTN:
			return invalid("rtn", "rtn applies to gptq only")
		}
	}
	if f == FormatGPTQ && o.DuoScaling {
		return invalid("duo_scaling", "duo_scaling applies to awq only")
	}
	if o.RTN {
		switch {
		case o.ActOrder:
			return invalid("act_order", "rtn uses no calibration: act_order is not available")
		case o.StaticGroups:
			return invalid("static_groups", "rtn uses no calibration: static_groups is not available")
		}
		return nil
	}
	if o.SeqLen < 1 {
		return invalid("seqlen", "seqlen %d must be positive", o.SeqLen)
	}
	if f == FormatGPTQ && !(o.Damp > 0 && o.Damp < 1) {
		return invalid("damp", "damp %v must be in (0, 1)", o.Damp)
	}
	return nil
}

// ValidateLayers checks a GPTQ or AWQ job as a whole: the config (Validate), the options' values
// for its format (LayerOptions.Validate), and the calibration data, which a calibrated job needs
// and RTN refuses.
func (c QuantizationConfig) ValidateLayers(o LayerOptions) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := o.Validate(c.TargetFormat); err != nil {
		return err
	}
	switch {
	case o.RTN && c.CalibrationDataPath != "":
		return invalid("calibration_data_path", "rtn uses no calibration: calibration_data_path must be empty")
	case !o.RTN && c.CalibrationDataPath == "":
		msg := "%s needs calibration text: calibration_data_path (text with documents separated by \\n\\f\\n, or JSONL with a \"text\" field)"
		if c.TargetFormat == FormatGPTQ {
			msg += ", or rtn for round-to-nearest"
		}
		return invalid("calibration_data_path", msg, c.TargetFormat)
	}
	return nil
}
