package layered

import (
	"encoding/json"
	"fmt"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/services/fleet"
)

// KindName names the GPTQ/AWQ kind in plans.
const KindName = "layered"

// Spec is a GPTQ/AWQ job's part of its plan (fleet.Plan.Spec): one task per decoder layer, run
// in order when calibrated (each consumes the activations the previous one wrote), and an
// assembly into a Hugging Face checkpoint directory.
type Spec struct {
	Format    string `json:"format"` // "gptq" or "awq"
	Bits      int    `json:"bits"`
	GroupSize int    `json:"group_size"`
	// The job's options as submitted (sym, act_order, …, seqlen, calibration_offset).
	domain.LayerOptions
	// Calibration: Samples samples of SeqLen tokens, from sample CalibrationOffset on, of the
	// text at CalibrationKey (in the fleet's bucket; its base name is CalibrationName).
	Samples         int    `json:"samples,omitempty"`
	CalibrationKey  string `json:"calibration_key,omitempty"`
	CalibrationName string `json:"calibration_name,omitempty"`
	NumLayers       int    `json:"num_layers"`
}

// LayerTaskID is the id of layer i's task: ids sort in layer order.
func LayerTaskID(i int) string { return fmt.Sprintf("l%04d", i) }

// SpecOf is the Spec of a stored plan, decoded once and checked against its tasks.
func SpecOf(p *fleet.Plan) (*Spec, error) {
	v, err := p.View(func(p *fleet.Plan) (any, error) {
		if p.Kind != KindName {
			return nil, fmt.Errorf("%w: a %q plan is not a GPTQ/AWQ job's", fleet.ErrBadPlan, p.Kind)
		}
		var s Spec
		if err := json.Unmarshal(p.Spec, &s); err != nil {
			return nil, fmt.Errorf("%w: %v", fleet.ErrBadPlan, err)
		}
		if s.NumLayers <= 0 || len(p.Tasks) != s.NumLayers {
			return nil, fmt.Errorf("%w: %d layer tasks for %d layers", fleet.ErrBadPlan, len(p.Tasks), s.NumLayers)
		}
		for i, t := range p.Tasks {
			if t.ID != LayerTaskID(i) || t.Block != i {
				return nil, fmt.Errorf("%w: task %s is not layer %d's", fleet.ErrBadPlan, t.ID, i)
			}
		}
		return &s, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Spec), nil
}
