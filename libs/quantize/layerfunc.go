package quantize

import (
	"context"

	"quantfleet.dev/libs/transformer"
)

// LayerFunc quantizes a decoder layer as QuantizeLayer does, on other hardware: a GPU
// backend (llamacuda.QuantizeLayer) provides one. It returns handled false for a layer or
// config it does not take, which QuantizeLayer then runs on the CPU.
type LayerFunc func(ctx context.Context, l *transformer.Layer, inputs *transformer.Tensor, cfg LayerConfig) (r *LayerResult, handled bool, err error)

type layerFuncKey struct{}

// WithLayerFunc returns a context under which QuantizeLayer offers every layer to f first.
// A context carries it so that the local pipeline and the fleet's workers reach the device
// a command chose (--device) without a parameter through every layer between.
func WithLayerFunc(ctx context.Context, f LayerFunc) context.Context {
	return context.WithValue(ctx, layerFuncKey{}, f)
}

func layerFuncOf(ctx context.Context) LayerFunc {
	f, _ := ctx.Value(layerFuncKey{}).(LayerFunc)
	return f
}

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
