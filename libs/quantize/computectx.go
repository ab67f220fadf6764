package quantize

import "context"

type computeKey struct{}

// WithCompute returns a context under which the sharded pipeline's tasks whose ShardEnv names
// no Compute use c (a GPU's): the local pipeline and the fleet's workers reach the device a
// command chose without a parameter through every layer between.
func WithCompute(ctx context.Context, c LayerCompute) context.Context {
	return context.WithValue(ctx, computeKey{}, c)
}

func computeOf(ctx context.Context) LayerCompute {
	c, _ := ctx.Value(computeKey{}).(LayerCompute)
	return c
}
