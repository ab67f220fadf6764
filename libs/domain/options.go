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
	// Damp: GPTQ's Hessian dampening, a fraction of its mean diagonal.
	Damp float64 `json:"damp,omitempty"`
	// RTN: GPTQ's format, rounded to nearest, without calibration.
	RTN bool `json:"rtn,omitempty"`
	// DuoScaling: AutoAWQ's scale grid instead of llm-awq's.
	DuoScaling bool `json:"duo_scaling,omitempty"`
	// SeqLen is the tokens per calibration sample (0: the default).
	SeqLen int `json:"seqlen,omitempty"`
	// CalibrationOffset is the first calibration sample used.
	CalibrationOffset int `json:"calibration_offset,omitempty"`
}

// Calibrated reports whether the options need calibration data.
func (o LayerOptions) Calibrated() bool { return !o.RTN }
