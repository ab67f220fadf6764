package quantize

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"quantfleet.dev/libs/awq"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/transformer"
)

// ErrStageMemory reports calibration shards that do not fit on a StageCompute's device all at
// once; the local pipeline then runs the job task by task.
var ErrStageMemory = errors.New("quantize: the calibration shards do not fit on the device")

// StageCompute is a LayerCompute (a GPU's) that can hold a GPTQ job's calibration shards on its
// device from the first layer to the last. `quantfleet quantize` then runs each layer's tasks on
// them in place (RunStages): no shard, partial Hessian or activation goes through the host
// between tasks or layers, and a layer's weights go to the device once. Every result must be the
// same bits as the task-by-task path's with the same compute (RunShardTask: the same forward
// passes, partial Hessians merged in shard order as MergeHessians does, the same solve), so that
// a checkpoint does not depend on which path, or which fleet, wrote it.
type StageCompute interface {
	LayerCompute
	// OpenStages puts the activations entering layer 0 on the device, shard by shard (shard(s)
	// for s in 0..n-1, read one at a time). An error wrapping ErrStageMemory says they and the
	// work of a layer like l would not fit.
	OpenStages(ctx context.Context, l *transformer.Layer, n int, shard func(s int) (*transformer.Tensor, error)) (StageSession, error)
}

// StageSession is a job's shards on a device, on their way through the decoder layers.
type StageSession interface {
	// Load makes l (its weights as loaded, none solved) the layer the shards are in.
	Load(ctx context.Context, l *transformer.Layer) error
	// Hessian computes the Hessian of the linear group's input over every shard, with the
	// layer's weights as SetWeights left them: the partials of LayerCompute.GroupHessian merged
	// in shard order. It returns the tokens it counts (an expert's routed tokens, or all).
	Hessian(ctx context.Context, group []string) (tokens int64, err error)
	// Solve quantizes the group's linears on the last Hessian with cfg, as SolveGPTQ does.
	Solve(ctx context.Context, cfg gptq.Config, linears []*transformer.Linear) ([]*gptq.Result, error)
	// SetWeights puts the linears' weights (solved, reconstructed) into the current layer.
	SetWeights(ctx context.Context, linears []*transformer.Linear) error
	// Advance replaces every shard by the current layer's output on it.
	Advance(ctx context.Context) error
	// Close frees the device memory.
	Close()
}

// AWQStager is an AWQCompute (a GPU's) that can keep the activations of an AWQ job of one
// shard on its device from the first layer to the last (runAWQInPlace): each layer's
// full-precision outputs, which its capture computes anyway, stay there as the next layer's
// inputs instead of going through the host. The results are those of AWQLayer's.
type AWQStager interface {
	AWQCompute
	// StageAWQ puts x, the activations entering the first layer, on the device. An error
	// wrapping ErrStageMemory says they and the work of a layer like l would not fit.
	StageAWQ(ctx context.Context, l *transformer.Layer, x *transformer.Tensor) (AWQStage, error)
}

// AWQStage is an AWQ job's activations on a device, on their way through the decoder layers.
type AWQStage interface {
	// Layer is AWQCompute.AWQLayer of l on the activations held; with next set, release
	// replaces them by l's outputs (else the stage holds none after it).
	Layer(ctx context.Context, l *transformer.Layer, next bool) (al *awq.Layer, release func(), err error)
	// Close frees the device memory.
	Close()
}

// openStages opens a StageSession for env's staged GPTQ plan when the job's compute offers one
// and the shards fit, and returns it with layer 0, which it loaded to decide; a nil session (and
// no error) means: run the tasks one by one.
func openStages(ctx context.Context, env *ShardEnv) (StageSession, *transformer.Layer, error) {
	p := env.Plan
	if !p.Staged() || !p.Stage.sequential() {
		return nil, nil, nil
	}
	l, err := env.Layer(0)
	if err != nil {
		return nil, nil, err
	}
	sc, ok := env.compute(ctx, l).(StageCompute)
	var sess StageSession
	if ok {
		sess, err = sc.OpenStages(ctx, l, len(p.Shards), func(s int) (*transformer.Tensor, error) {
			return getActivations(ctx, env.Store, 0, s)
		})
	}
	if sess == nil || err != nil {
		l.Release()
		if errors.Is(err, ErrStageMemory) {
			err = nil
		}
		return nil, nil, err
	}
	return sess, l, nil
}

// RunStages runs every task of env's plan, in Tasks order, in this process: on a StageSession
// of the job's compute when it offers one that fits (the layer's tasks done in place on the
// device, only each solve's result written to env.Store); AWQ on a single shard with one capture
// of each layer's inputs for all its steps (runAWQInPlace); else one RunShardTask after another,
// deleting what plan.Consumed says. done is called after each task, or after the in-place work
// that stands for it. Either way the store ends with what ShardedLayerResult reads.
func RunStages(ctx context.Context, env *ShardEnv, del func(key string) error, done func(t ShardTask)) error {
	if env.Plan.awqSharded() && len(env.Plan.Shards) == 1 {
		return runAWQInPlace(ctx, env, del, done)
	}
	sess, l0, err := openStages(ctx, env)
	if err != nil {
		return err
	}
	if sess == nil {
		for _, t := range env.Plan.Tasks() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if _, err := RunShardTask(ctx, env, t); err != nil {
				return err
			}
			for _, key := range env.Plan.Consumed(t) {
				if err := del(key); err != nil {
					return err
				}
			}
			done(t)
		}
		return nil
	}
	defer sess.Close()
	// The layer-0 inputs are on the device now.
	for s := range env.Plan.Shards {
		if err := del(ActivationsKey(0, s)); err != nil {
			return err
		}
	}
	next := preload(env, l0)
	for range env.Plan.Layers {
		l, err := next()
		if err != nil {
			return err
		}
		err = runLayerStages(ctx, env, sess, l, done)
		l.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// loadedLayer is a layer loaded in the background (loadAsync), or the error loading it.
type loadedLayer struct {
	l   *transformer.Layer
	err error
}

// loadAsync starts load(L) and returns where its result will be.
func loadAsync(load func(int) (*transformer.Layer, error), L int) chan loadedLayer {
	ch := make(chan loadedLayer, 1)
	go func() {
		l, err := load(L)
		ch <- loadedLayer{l, err}
	}()
	return ch
}

// preload returns the decoder layers one after the other, each loaded (and converted to
// float32) while the caller works on the one before; l0, when not nil, is layer 0, loaded
// already.
func preload(env *ShardEnv, l0 *transformer.Layer) func() (*transformer.Layer, error) {
	var ch chan loadedLayer
	if l0 != nil {
		ch = make(chan loadedLayer, 1)
		ch <- loadedLayer{l: l0}
	} else {
		ch = loadAsync(env.Layer, 0)
	}
	L := 0
	return func() (*transformer.Layer, error) {
		ld := <-ch
		if L++; ld.err == nil && L < env.Plan.Layers {
			ch = loadAsync(env.Layer, L)
		}
		return ld.l, ld.err
	}
}

// loadAhead starts loading layer index with load now, for the first call of the returned get
// that asks for it; every other call loads on the spot. release frees the layer if no call
// took it. quantize loads layer 0 this way while the calibration inputs are prepared.
func loadAhead(load func(int) (*transformer.Layer, error), index int) (get func(int) (*transformer.Layer, error), release func()) {
	ch := loadAsync(load, index)
	var taken atomic.Bool
	take := func() bool { return !taken.Swap(true) }
	get = func(L int) (*transformer.Layer, error) {
		if L != index || !take() {
			return load(L)
		}
		ld := <-ch
		return ld.l, ld.err
	}
	release = func() {
		if take() {
			if ld := <-ch; ld.l != nil {
				ld.l.Release()
			}
		}
	}
	return get, release
}

// runLayerStages is layer l's tasks on the session: each group's Hessian and solve, then the
// shards through the quantized layer.
func runLayerStages(ctx context.Context, env *ShardEnv, sess StageSession, l *transformer.Layer, done func(t ShardTask)) error {
	p, L := env.Plan, l.Index
	if err := sess.Load(ctx, l); err != nil {
		return fmt.Errorf("layer %d: %w", L, err)
	}
	for g, group := range p.Stage.Groups {
		tokens, err := sess.Hessian(ctx, group)
		if err != nil {
			return fmt.Errorf("task %s: %w", ShardTask{Op: OpHessian, Layer: L, Group: g}.ID(), err)
		}
		for _, t := range p.shardsOf(OpHessian, L) {
			t.Group = g
			done(t)
		}
		t := ShardTask{Op: OpSolve, Layer: L, Group: g}
		cfg := p.Config.gptqConfig()
		r, lins, err := solveGroupWith(ctx, l, group, tokens, p.tokens(), cfg, func(lins []*transformer.Linear) ([]*gptq.Result, error) {
			return sess.Solve(ctx, cfg, lins)
		})
		if err == nil {
			err = putLayerResult(ctx, env.Store, t.Key(), r)
		}
		if err == nil {
			err = replaceSolved(l, r)
		}
		if err == nil {
			err = sess.SetWeights(ctx, lins)
		}
		if err != nil {
			return fmt.Errorf("task %s: %w", t.ID(), err)
		}
		done(t)
	}
	if L+1 == p.Layers {
		return nil
	}
	if err := sess.Advance(ctx); err != nil {
		return fmt.Errorf("layer %d forward: %w", L, err)
	}
	for _, t := range p.shardsOf(OpForward, L) {
		done(t)
	}
	return nil
}

// runAWQInPlace runs an AWQ plan of one shard: per layer, the steps of tasks a, b, c and l on
// one capture of the layer's inputs (AWQCompute.AWQLayer) instead of one per task, the partials
// merged as the tasks merge them and the next layer's inputs kept in memory, or on the device
// of a compute that stages them (AWQStager), rather than in env.Store: the same bytes as the
// tasks, a third of the forward passes. Only each layer's result goes to the store.
func runAWQInPlace(ctx context.Context, env *ShardEnv, del func(key string) error, done func(t ShardTask)) error {
	p := env.Plan
	next := preload(env, nil) // layer 0's weights load while its inputs are read
	x, err := takeActivations(ctx, env.Store, del, 0, 0)
	if err != nil {
		return err
	}
	l0, err := next()
	if err != nil {
		return err
	}
	var st AWQStage
	if s, ok := awqCompute(ctx, env, l0).(AWQStager); ok {
		switch st, err = s.StageAWQ(ctx, l0, x); {
		case errors.Is(err, ErrStageMemory):
			st = nil
		case err != nil:
			l0.Release()
			return err
		default:
			defer st.Close()
			x = nil
		}
	}
	// Each layer's host half (clipping, quantizing, writing the result) runs while the device
	// captures the next layer: AWQ feeds the next layer full-precision outputs, so nothing
	// waits for it but the following layer's own host half.
	var tail chan error
	wait := func() error {
		if tail == nil {
			return nil
		}
		err := <-tail
		tail = nil
		return err
	}
	defer func() { _ = wait() }() // after an error: so that nothing runs on
	for L := range p.Layers {
		l := l0
		if L > 0 {
			if l, err = next(); err != nil {
				return err
			}
		}
		last := L+1 == p.Layers
		var (
			al      *awq.Layer
			release func()
		)
		if st != nil {
			al, release, err = st.Layer(ctx, l, !last)
		} else {
			al, x, release, err = awqCompute(ctx, env, l).AWQLayer(ctx, l, x, !last)
		}
		var cl *awq.Clipped
		if err == nil {
			cl, err = clipAWQInPlace(ctx, env, al)
			release()
		}
		if err == nil {
			err = wait()
		}
		if err != nil {
			l.Release()
			return fmt.Errorf("layer %d: %w", L, err)
		}
		al.DropActivations() // the capture's memory need not wait for the host half
		tail = make(chan error, 1)
		go func() {
			err := finishAWQInPlace(ctx, env, l, al, cl)
			l.Release()
			if err != nil {
				tail <- fmt.Errorf("layer %d: %w", L, err)
				return
			}
			for _, op := range awqSteps {
				done(ShardTask{Op: op, Layer: L})
			}
			done(ShardTask{Op: OpLayer, Layer: L})
			tail <- nil
		}()
	}
	return wait()
}

// clipAWQInPlace is runAWQInPlace's steps of a layer that use its capture al, whose one shard
// is every calibration token: tasks a, b and c (each partial merged alone, as the tasks merge
// theirs), the scales picked and the clipping searched.
func clipAWQInPlace(ctx context.Context, env *ShardEnv, al *awq.Layer) (*awq.Clipped, error) {
	cfg, sh := env.Plan.Config.AWQ, awq.Whole(al)
	part, err := awq.CollectStats(al, sh, cfg)
	if err != nil {
		return nil, err
	}
	stats, err := awq.MergeStats([]*awq.Stats{part})
	if err != nil {
		return nil, err
	}
	lp, err := awq.CollectScaleLosses(ctx, al, sh, stats, cfg)
	if err != nil {
		return nil, err
	}
	losses, err := awq.MergeScaleLosses([]*awq.ScaleLosses{lp})
	if err != nil {
		return nil, err
	}
	scales, err := awq.PickScales(al, stats, losses, cfg)
	if err != nil {
		return nil, err
	}
	cp, err := awq.CollectClipStats(al, sh, scales, cfg)
	if err != nil {
		return nil, err
	}
	clip, err := awq.MergeClipStats([]*awq.ClipStats{cp})
	if err != nil {
		return nil, err
	}
	return awq.ClipLayer(ctx, al, scales, clip, cfg)
}

// finishAWQInPlace is the rest of layer l's task l: the linears clipped and quantized, the
// result written to the store.
func finishAWQInPlace(ctx context.Context, env *ShardEnv, l *transformer.Layer, al *awq.Layer, cl *awq.Clipped) error {
	r, err := cl.Quantize(ctx)
	if err != nil {
		return err
	}
	res := &LayerResult{Index: l.Index}
	awqResult(l, al, r, res)
	return putLayerResult(ctx, env.Store, ShardTask{Op: OpLayer, Layer: l.Index}.Key(), res)
}
