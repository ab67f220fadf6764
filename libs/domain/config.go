package domain

import (
	"encoding/json"
	"strings"

	"quantfleet.dev/libs/atomicfile"
)

// Defaults of QuantizationConfig, from the seed.
const (
	DefaultOutputDir          = "."
	DefaultCalibrationSamples = 256
	DefaultGroupSize          = 128
	MinCalibrationSamples     = 1
	MaxCalibrationSamples     = 1024
	MinGroupSize              = 32
	MaxGroupSize              = 256
	// PerChannelGroupSize (-1) means one scale per output channel; GPTQ only.
	PerChannelGroupSize = -1
)

// QuantizationConfig configures one quantization. Create it with DefaultConfig (or decode it from
// JSON, which starts from the defaults) so the optional fields carry the seed's defaults.
type QuantizationConfig struct {
	TargetFormat        OutputFormat `json:"target_format"`
	QuantizationLevel   string       `json:"quantization_level"`
	OutputDir           string       `json:"output_dir"`
	OutputName          string       `json:"output_name,omitempty"` // empty: derived from model and level
	CalibrationDataPath string       `json:"calibration_data_path,omitempty"`
	CalibrationSamples  int          `json:"calibration_samples"`
	GroupSize           int          `json:"group_size"`
	EnableCheckpoints   bool         `json:"enable_checkpoints"`
	CheckpointDir       string       `json:"checkpoint_dir,omitempty"` // empty: automatic
	Verbosity           Verbosity    `json:"verbosity"`
	OutputFormat        OutputMode   `json:"output_format"`
}

// DefaultConfig returns a config for format f and level with every optional field at the seed's
// default. It does not validate.
func DefaultConfig(f OutputFormat, level string) QuantizationConfig {
	return QuantizationConfig{
		TargetFormat:       f,
		QuantizationLevel:  level,
		OutputDir:          DefaultOutputDir,
		CalibrationSamples: DefaultCalibrationSamples,
		GroupSize:          DefaultGroupSize,
		EnableCheckpoints:  true,
		Verbosity:          VerbosityNormal,
		OutputFormat:       OutputHuman,
	}
}

// UnmarshalJSON decodes a config, filling fields absent from the JSON with the seed's defaults.
func (c *QuantizationConfig) UnmarshalJSON(b []byte) error {
	type plain QuantizationConfig // no methods: avoids recursion
	d := plain(DefaultConfig("", ""))
	if err := json.Unmarshal(b, &d); err != nil {
		return err
	}
	*c = QuantizationConfig(d)
	return nil
}

// Normalize validates c and rewrites the level in its canonical spelling ("q4_k_m" → "Q4_K_M").
func (c *QuantizationConfig) Normalize() error {
	if err := c.Validate(); err != nil {
		return err
	}
	c.QuantizationLevel, _, _ = ParseLevel(c.TargetFormat, c.QuantizationLevel)
	return nil
}

// Validate checks the seed's rules and reports the first violation as a *FieldError (which wraps
// ErrInvalidConfig): the level must exist for the format (case-insensitively), calibration_samples
// must be in 1..1024, group_size a power of two in 32..256 (GPTQ also allows -1), the enums must be
// set and known, and output_name must be a plain file name.
func (c QuantizationConfig) Validate() error {
	if !c.TargetFormat.Valid() {
		return invalid("target_format", "target_format %q is not valid (valid: %s)", c.TargetFormat, joinEnum(outputFormats))
	}
	if c.QuantizationLevel == "" {
		return invalid("quantization_level", "quantization_level is required (valid for %s: %s)",
			c.TargetFormat, strings.Join(Levels(c.TargetFormat), ", "))
	}
	if _, _, err := ParseLevel(c.TargetFormat, c.QuantizationLevel); err != nil {
		return err
	}
	if c.CalibrationSamples < MinCalibrationSamples || c.CalibrationSamples > MaxCalibrationSamples {
		return invalid("calibration_samples", "calibration_samples %d is out of range (valid: %d..%d)",
			c.CalibrationSamples, MinCalibrationSamples, MaxCalibrationSamples)
	}
	if err := validateGroupSize(c.TargetFormat, c.GroupSize); err != nil {
		return err
	}
	if !c.Verbosity.Valid() {
		return invalid("verbosity", "verbosity %q is not valid (valid: %s)", c.Verbosity, joinEnum(verbosities))
	}
	if !c.OutputFormat.Valid() {
		return invalid("output_format", "output_format %q is not valid (valid: %s)", c.OutputFormat, joinEnum(outputModes))
	}
	if n := c.OutputName; n != "" {
		if err := atomicfile.CheckName(n); err != nil {
			return invalid("output_name", "output_name: %v", err)
		}
	}
	return nil
}

func validateGroupSize(f OutputFormat, g int) error {
	// GPTQ's group_size -1 (desc: one group spanning the whole input dimension, i.e. per-channel
	// scales) is what GPTQModel/AutoGPTQ accept as "no grouping"; AWQ kernels need real groups and
	// GGUF ignores the value, so only GPTQ gets the exception.
	if g == PerChannelGroupSize && f == FormatGPTQ {
		return nil
	}
	if g < MinGroupSize || g > MaxGroupSize || g&(g-1) != 0 {
		valid := "32, 64, 128, 256"
		if f == FormatGPTQ {
			valid += ", or -1 for per-channel"
		}
		return invalid("group_size", "group_size %d is not a power of two in %d..%d (valid: %s)", g, MinGroupSize, MaxGroupSize, valid)
	}
	return nil
}
