package quantize

import (
	"context"
	"sync"
)

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

// Warmer is a LayerCompute with start-up work (a GPU's kernels to compile, libraries to load)
// that the local pipeline starts while it prepares the calibration inputs.
type Warmer interface {
	Warm(ctx context.Context) error
}

// warm starts ctx's compute's start-up when it has one and the job uses it (calibrated), and
// returns a wait for its end, which may be called more than once.
func warm(ctx context.Context, calibrated bool) func() error {
	w, ok := computeOf(ctx).(Warmer)
	if !ok || !calibrated {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() { done <- w.Warm(ctx) }()
	return sync.OnceValue(func() error { return <-done })
}
