package fleet

import "fmt"

// LayerOptions are a GPTQ or AWQ job's settings beyond domain.QuantizationConfig (which holds
// the level, group size and calibration sample count): those of `quantfleet quantize`.
type LayerOptions struct {
	Sym          bool    `json:"sym,omitempty"`
	ActOrder     bool    `json:"act_order,omitempty"`
	StaticGroups bool    `json:"static_groups,omitempty"`
	Damp         float64 `json:"damp,omitempty"`
	RTN          bool    `json:"rtn,omitempty"`
	DuoScaling   bool    `json:"duo_scaling,omitempty"`
	SeqLen       int     `json:"seqlen,omitempty"`
	// CalibrationOffset is the first calibration sample used (--calibration-offset).
	CalibrationOffset int `json:"calibration_offset,omitempty"`
	// Calibration is the calibration text in object storage (uploaded by the submitter,
	// content-addressed); nil for RTN.
	Calibration *Location `json:"calibration,omitempty"`
	// CalibrationName is the file's base name (its extension tells text from JSONL).
	CalibrationName string `json:"calibration_name,omitempty"`
}

// ActivationsKey holds the calibration activations entering decoder layer i of a GPTQ/AWQ job:
// the job's checkpoint between layer tasks.
func ActivationsKey(job string, layer int) string {
	return fmt.Sprintf("%sact/%d.bin", JobPrefix(job), layer)
}
