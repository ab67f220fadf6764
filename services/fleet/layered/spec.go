package layered

import (
	"encoding/json"
	"fmt"
	"strings"

	"quantfleet.dev/libs/quantize"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/services/fleet"
)

// KindName names the GPTQ/AWQ kind in plans.
const KindName = "layered"

// Spec is a GPTQ/AWQ job's part of its plan (fleet.Plan.Spec). Its tasks are the sharded
// pipeline's (quantize.ShardPlan: partial Hessians per calibration shard, solves per linear
// group, forwards per shard for GPTQ; per-shard steps and a finish per layer for AWQ; one task
// per layer for RTN), derived from the
// Spec alone; the plan lists them in quantize.ShardPlan.Tasks order.
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
	// Linears are the decoder layers' linear groups (quantize.StageOf the model's config);
	// absent: the dense layer's (q/k/v; o; gate/up; down).
	Linears quantize.Stage `json:"linears,omitzero"`
}

// view is a plan decoded once: its Spec, the sharded pipeline's plan and its tasks by id.
type view struct {
	spec  *Spec
	shard *quantize.ShardPlan
	tasks map[string]quantize.ShardTask
}

// ShardPlan is the sharded pipeline's plan of a job.
func (s *Spec) ShardPlan() (*quantize.ShardPlan, error) {
	sp, err := quantize.NewShardPlan(LayerConfig(s), s.Linears, s.NumLayers, s.Samples, s.ShardSamples)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", fleet.ErrBadPlan, err)
	}
	return sp, nil
}

// SpecOf is the Spec of a stored plan, decoded once and checked against its tasks.
func SpecOf(p *fleet.Plan) (*Spec, error) {
	v, err := viewOf(p)
	if err != nil {
		return nil, err
	}
	return v.spec, nil
}

func viewOf(p *fleet.Plan) (*view, error) {
	v, err := p.View(func(p *fleet.Plan) (any, error) {
		if p.Kind != KindName {
			return nil, fmt.Errorf("%w: a %q plan is not a GPTQ/AWQ job's", fleet.ErrBadPlan, p.Kind)
		}
		var s Spec
		if err := json.Unmarshal(p.Spec, &s); err != nil {
			return nil, fmt.Errorf("%w: %v", fleet.ErrBadPlan, err)
		}
		if s.NumLayers <= 0 {
			return nil, fmt.Errorf("%w: %d layers", fleet.ErrBadPlan, s.NumLayers)
		}
		sp, err := s.ShardPlan()
		if err != nil {
			return nil, err
		}
		tasks := sp.Tasks()
		if len(p.Tasks) != len(tasks) {
			return nil, fmt.Errorf("%w: %d tasks, the sharded plan has %d", fleet.ErrBadPlan, len(p.Tasks), len(tasks))
		}
		v := &view{spec: &s, shard: sp, tasks: make(map[string]quantize.ShardTask, len(tasks))}
		for i, t := range p.Tasks {
			if t.ID != tasks[i].ID() || t.Block != tasks[i].Layer {
				return nil, fmt.Errorf("%w: task %s is not %s", fleet.ErrBadPlan, t.ID, tasks[i].ID())
			}
			v.tasks[t.ID] = tasks[i]
		}
		return v, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*view), nil
}

// taskLabel describes a task for people ("layer 3 h q_proj s2").
func taskLabel(sp *quantize.ShardPlan, t quantize.ShardTask) string {
	group := func() string {
		g := sp.Stage.Groups[t.Group]
		return strings.Join(g, ",")
	}
	switch t.Op {
	case quantize.OpHessian:
		return fmt.Sprintf("layer %d hessian %s shard %d", t.Layer, group(), t.Shard)
	case quantize.OpSolve:
		return fmt.Sprintf("layer %d solve %s", t.Layer, group())
	case quantize.OpForward:
		return fmt.Sprintf("layer %d forward shard %d", t.Layer, t.Shard)
	case quantize.OpAWQStats:
		return fmt.Sprintf("layer %d awq statistics shard %d", t.Layer, t.Shard)
	case quantize.OpAWQScales:
		return fmt.Sprintf("layer %d awq scale losses shard %d", t.Layer, t.Shard)
	case quantize.OpAWQClip:
		return fmt.Sprintf("layer %d awq clip statistics shard %d", t.Layer, t.Shard)
	}
	return fmt.Sprintf("layer %d", t.Layer)
}
