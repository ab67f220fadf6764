package fleet

import "quantfleet.dev/libs/domain"

// LayerOptions are a GPTQ or AWQ job's settings beyond domain.QuantizationConfig: the options of
// `quantfleet quantize` (domain.LayerOptions, the same JSON fields) and where the submitter
// uploaded the calibration text.
type LayerOptions struct {
	domain.LayerOptions
	// Calibration is the calibration text in object storage (uploaded by the submitter,
	// content-addressed); nil for RTN.
	Calibration *Location `json:"calibration,omitempty"`
	// CalibrationName is the file's base name (its extension tells text from JSONL).
	CalibrationName string `json:"calibration_name,omitempty"`
}
