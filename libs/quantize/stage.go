package quantize

import (
	"context"
	"errors"
	"fmt"

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
	// Each layer's weights load (and convert to float32) while the device works on the one
	// before.
	type loaded struct {
		l   *transformer.Layer
		err error
	}
	load := func(L int) chan loaded {
		ch := make(chan loaded, 1)
		go func() {
			l, err := env.Layer(L)
			ch <- loaded{l, err}
		}()
		return ch
	}
	next := make(chan loaded, 1)
	next <- loaded{l: l0} // openStages loaded it
	for L := range env.Plan.Layers {
		ld := <-next
		if ld.err != nil {
			return ld.err
		}
		if L+1 < env.Plan.Layers {
			next = load(L + 1)
		}
		err := runLayerStages(ctx, env, sess, ld.l, done)
		ld.l.Release()
		if err != nil {
			return err
		}
	}
	return nil
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
// merged as the tasks merge them and the next layer's inputs kept in memory (or on the device
// the compute uses) rather than in env.Store: the same bytes as the tasks, a third of the
// forward passes. Only each layer's result goes to the store.
func runAWQInPlace(ctx context.Context, env *ShardEnv, del func(key string) error, done func(t ShardTask)) error {
	p := env.Plan
	x, err := getActivations(ctx, env.Store, 0, 0)
	if err != nil {
		return err
	}
	if err := del(ActivationsKey(0, 0)); err != nil {
		return err
	}
	for L := range p.Layers {
		if x, err = runAWQLayerInPlace(ctx, env, L, x); err != nil {
			return fmt.Errorf("layer %d: %w", L, err)
		}
		for _, op := range awqSteps {
			done(ShardTask{Op: op, Layer: L})
		}
		done(ShardTask{Op: OpLayer, Layer: L})
	}
	return nil
}

// runAWQLayerInPlace is runAWQInPlace's layer L on its inputs x; it returns the next layer's.
func runAWQLayerInPlace(ctx context.Context, env *ShardEnv, L int, x *transformer.Tensor) (*transformer.Tensor, error) {
	p, cfg := env.Plan, env.Plan.Config.AWQ
	l, err := env.Layer(L)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	c := awqCompute(ctx, env, l)
	al, out, release, err := c.AWQLayer(ctx, l, x, L+1 < p.Layers)
	if err != nil {
		return nil, err
	}
	sh := p.awqShard(0, x.Seq)
	stats, losses, clip, err := awqSteps3(ctx, al, sh, cfg)
	release() // FinishLayer's clipping search may take the device again
	if err != nil {
		return nil, err
	}
	w, _, release, err := c.AWQLayer(ctx, l, nil, false)
	if err != nil {
		return nil, err
	}
	defer release()
	scales, err := awq.PickScales(w, stats, losses, cfg)
	if err != nil {
		return nil, err
	}
	r, err := awq.FinishLayer(ctx, w, scales, clip, cfg)
	if err != nil {
		return nil, err
	}
	res := &LayerResult{Index: L}
	awqResult(l, w, r, res)
	return out, putLayerResult(ctx, env.Store, ShardTask{Op: OpLayer, Layer: L}.Key(), res)
}

// awqSteps3 is steps a, b and c of one shard that is the whole calibration set, each partial
// merged alone as the tasks merge theirs.
func awqSteps3(ctx context.Context, al *awq.Layer, sh awq.Shard, cfg awq.Config) (*awq.Stats, *awq.ScaleLosses, *awq.ClipStats, error) {
	part, err := awq.CollectStats(al, sh, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	stats, err := awq.MergeStats([]*awq.Stats{part})
	if err != nil {
		return nil, nil, nil, err
	}
	lp, err := awq.CollectScaleLosses(ctx, al, sh, stats, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	losses, err := awq.MergeScaleLosses([]*awq.ScaleLosses{lp})
	if err != nil {
		return nil, nil, nil, err
	}
	scales, err := awq.PickScales(al, stats, losses, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	cp, err := awq.CollectClipStats(al, sh, scales, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	clip, err := awq.MergeClipStats([]*awq.ClipStats{cp})
	return stats, losses, clip, err
}
