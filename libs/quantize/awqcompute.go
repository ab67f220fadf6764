package quantize

import (
	"context"

	"quantfleet.dev/libs/awq"
	"quantfleet.dev/libs/transformer"
)

// AWQCompute is the arithmetic of AWQ's shard tasks (awqshard.go), the sibling of LayerCompute:
// a LayerCompute in the task's environment (ShardEnv.Compute or WithCompute) that also
// implements AWQCompute runs them; CPU does on the host. Package awq keeps the steps'
// bookkeeping (spans, keys, candidates, picks, merges) and the partial objects' formats; an
// implementation supplies the sums through awq.Layer.Arithmetic, so its tasks write the same
// kinds of objects, mergeable with any other's in shard order (SHARDS.md).
type AWQCompute interface {
	// AWQLayer describes the decoder layer l to package awq for one task (as the CPU's
	// awqShardLayer: linears and norms sharing l's weights, the groups in AutoAWQ's order) and
	// returns a release of what it holds (device memory). With the shard x it runs the
	// full-precision layer on x, keeping every linear group's input for the steps' sums, and
	// returns the layer's outputs too when outputs is set (the next layer's inputs, as AutoAWQ
	// propagates them); with x nil the layer is for awq.PickScales and awq.FinishLayer only.
	AWQLayer(ctx context.Context, l *transformer.Layer, x *transformer.Tensor, outputs bool) (al *awq.Layer, out *transformer.Tensor, release func(), err error)
}

var _ AWQCompute = CPU{}

// AWQLayer implements AWQCompute on the host: the layer's inputs captured in memory, the
// groups' Inspect functions on the transformer runtime.
func (CPU) AWQLayer(ctx context.Context, l *transformer.Layer, x *transformer.Tensor, _ bool) (*awq.Layer, *transformer.Tensor, func(), error) {
	al, out, err := awqShardLayer(ctx, l, x)
	return al, out, func() {}, err
}

// awqCompute is the AWQCompute of env's tasks on layer l: its LayerCompute's when it has one
// that runs l, else the CPU.
func awqCompute(ctx context.Context, env *ShardEnv, l *transformer.Layer) AWQCompute {
	if c, ok := env.compute(ctx, l).(AWQCompute); ok {
		return c
	}
	return CPU{}
}
