package domain

import (
	"fmt"
	"time"
)

// Checkpoint records which layers of a job are done, so that a resumed job redoes only the rest.
type Checkpoint struct {
	CheckpointID   string                `json:"checkpoint_id"`
	JobID          string                `json:"job_id"`
	LayerIndex     int                   `json:"layer_index"`  // last completed layer index
	LayerStates    map[string]LayerState `json:"layer_states"` // keyed by layer (task) id
	ConfigSnapshot QuantizationConfig    `json:"config_snapshot"`
	CreatedAt      time.Time             `json:"created_at"`
	FilePath       string                `json:"file_path"` // where this checkpoint is stored
}

// LayerState is one finished layer (or task) of a checkpoint: where its output lives and how to
// verify it.
type LayerState struct {
	Status string `json:"status"`           // "done"
	Object string `json:"object,omitempty"` // object key or path of the layer's output
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // hex
}

// Validate checks the seed's rules: ids set, 0 <= layer_index < totalLayers, and a valid
// config snapshot.
func (c Checkpoint) Validate(totalLayers int) error {
	switch {
	case c.CheckpointID == "":
		return invalid("checkpoint_id", "checkpoint_id is required")
	case c.JobID == "":
		return invalid("job_id", "job_id is required")
	case c.LayerIndex < 0 || c.LayerIndex >= totalLayers:
		return invalid("layer_index", "layer_index %d is out of range (valid: 0..%d)", c.LayerIndex, totalLayers-1)
	}
	if err := c.ConfigSnapshot.Validate(); err != nil {
		return fmt.Errorf("config_snapshot: %w", err)
	}
	return nil
}

// CheckResume returns an error wrapping ErrConfigMismatch, naming the first differing field, if cfg
// would not produce the same output as the snapshot. Fields that only change presentation or
// location (output_dir, output_name, checkpoint_dir, enable_checkpoints, verbosity, output_format)
// may differ. Levels compare case-insensitively.
func (c Checkpoint) CheckResume(cfg QuantizationConfig) error {
	s := c.ConfigSnapshot
	lvlA, _, errA := ParseLevel(s.TargetFormat, s.QuantizationLevel)
	lvlB, _, errB := ParseLevel(cfg.TargetFormat, cfg.QuantizationLevel)
	if errA != nil || errB != nil {
		lvlA, lvlB = s.QuantizationLevel, cfg.QuantizationLevel
	}
	diff := func(field string, a, b any) error {
		return fmt.Errorf("%w: %s is %v in checkpoint %s, %v in the request", ErrConfigMismatch, field, a, c.CheckpointID, b)
	}
	switch {
	case s.TargetFormat != cfg.TargetFormat:
		return diff("target_format", s.TargetFormat, cfg.TargetFormat)
	case lvlA != lvlB:
		return diff("quantization_level", s.QuantizationLevel, cfg.QuantizationLevel)
	case s.CalibrationDataPath != cfg.CalibrationDataPath:
		return diff("calibration_data_path", s.CalibrationDataPath, cfg.CalibrationDataPath)
	case s.CalibrationSamples != cfg.CalibrationSamples:
		return diff("calibration_samples", s.CalibrationSamples, cfg.CalibrationSamples)
	case s.GroupSize != cfg.GroupSize:
		return diff("group_size", s.GroupSize, cfg.GroupSize)
	}
	return nil
}
