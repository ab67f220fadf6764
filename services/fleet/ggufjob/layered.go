package ggufjob

import "fmt"

// LayerSpec makes a Plan a GPTQ/AWQ job's (package layerjob): one task per decoder layer, run in
// order when calibrated (each consumes the activations the previous one wrote), and an assembly
// into a Hugging Face checkpoint directory. Tensors, HeaderSize and DataSize are then unused.
type LayerSpec struct {
	Format       string  `json:"format"` // "gptq" or "awq"
	Bits         int     `json:"bits"`
	GroupSize    int     `json:"group_size"`
	Sym          bool    `json:"sym,omitempty"`
	ActOrder     bool    `json:"act_order,omitempty"`
	StaticGroups bool    `json:"static_groups,omitempty"`
	Damp         float64 `json:"damp,omitempty"`
	RTN          bool    `json:"rtn,omitempty"`
	DuoScaling   bool    `json:"duo_scaling,omitempty"`
	// Calibration: Samples samples of SeqLen tokens, from sample CalibrationOffset on, of the
	// text at CalibrationKey (in the fleet's bucket; its base name is CalibrationName).
	Samples           int    `json:"samples,omitempty"`
	SeqLen            int    `json:"seqlen,omitempty"`
	CalibrationOffset int    `json:"calibration_offset,omitempty"`
	CalibrationKey    string `json:"calibration_key,omitempty"`
	CalibrationName   string `json:"calibration_name,omitempty"`
	NumLayers         int    `json:"num_layers"`
}

// Calibrated reports whether the layers run in a chain on calibration activations.
func (s *LayerSpec) Calibrated() bool { return !s.RTN }

// LayerTaskID is the id of layer i's task: ids sort in layer order.
func LayerTaskID(i int) string { return fmt.Sprintf("l%04d", i) }

func (p *Plan) checkLayered() error {
	s := p.Layered
	if s.NumLayers <= 0 || len(p.Tasks) != s.NumLayers {
		return fmt.Errorf("%w: %d layer tasks for %d layers", ErrBadPlan, len(p.Tasks), s.NumLayers)
	}
	for i, t := range p.Tasks {
		if t.ID != LayerTaskID(i) || t.Block != i {
			return fmt.Errorf("%w: task %s is not layer %d's", ErrBadPlan, t.ID, i)
		}
	}
	return nil
}
