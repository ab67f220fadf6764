package quantize

import (
	"context"
	"encoding"
	"fmt"

	"quantfleet.dev/libs/awq"
)

// AWQ's steps in the sharded pipeline (ShardPlan, libs/awq/SHARDS.md): per shard the statistics
// (a), the scale-grid losses (b) and the clipping statistics (c), each merged in shard order by
// the tasks that read them, then the layer's finish (l).

// awqShard locates shard s of a layer's inputs among all the calibration tokens: shards hold
// whole samples of seq tokens.
func (p *ShardPlan) awqShard(s, seq int) awq.Shard {
	return awq.Shard{Offset: p.Shards[s].Lo * seq, Total: p.Shards[len(p.Shards)-1].Hi * seq}
}

// mergedAWQ reads op's partials of layer L in shard order and merges them with merge.
func mergedAWQ[P any, PP interface {
	*P
	encoding.BinaryUnmarshaler
}](ctx context.Context, env *ShardEnv, op ShardOp, layer int, merge func([]*P) (*P, error)) (*P, error) {
	parts := make([]*P, 0, len(env.Plan.Shards))
	for _, t := range env.Plan.shardsOf(op, layer) {
		b, err := env.Store.Get(ctx, t.Key())
		if err != nil {
			return nil, err
		}
		v := new(P)
		if err := PP(v).UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("%s: %w", t.Key(), err)
		}
		parts = append(parts, v)
	}
	return merge(parts)
}

func mergedStats(ctx context.Context, env *ShardEnv, layer int) (*awq.Stats, error) {
	return mergedAWQ(ctx, env, OpAWQStats, layer, awq.MergeStats)
}

func mergedLosses(ctx context.Context, env *ShardEnv, layer int) (*awq.ScaleLosses, error) {
	return mergedAWQ(ctx, env, OpAWQScales, layer, awq.MergeScaleLosses)
}

// runAWQShardTask runs AWQ step a, b or c of one shard: the full-precision layer on the shard,
// its groups' inputs captured, then the step's partial result.
func runAWQShardTask(ctx context.Context, env *ShardEnv, t ShardTask) ([]string, error) {
	p, cfg := env.Plan, env.Plan.Config.AWQ
	x, err := getActivations(ctx, env.Store, t.Layer, t.Shard)
	if err != nil {
		return nil, err
	}
	l, err := env.Layer(t.Layer)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	al, out, release, err := awqCompute(ctx, env, l).AWQLayer(ctx, l, x, t.Op == OpAWQStats && t.Layer+1 < p.Layers)
	if err != nil {
		return nil, err
	}
	defer release()
	sh := p.awqShard(t.Shard, x.Seq)
	var part encoding.BinaryMarshaler
	switch t.Op {
	case OpAWQStats:
		part, err = awq.CollectStats(al, sh, cfg)
	case OpAWQScales:
		var stats *awq.Stats
		if stats, err = mergedStats(ctx, env, t.Layer); err == nil {
			part, err = awq.CollectScaleLosses(ctx, al, sh, stats, cfg)
		}
	case OpAWQClip:
		var scales []*awq.Scales
		if scales, err = pickScales(ctx, env, al, t.Layer); err == nil {
			part, err = awq.CollectClipStats(al, sh, scales, cfg)
		}
	}
	if err != nil {
		return nil, err
	}
	b, err := part.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if err := env.Store.Put(ctx, t.Key(), b); err != nil {
		return nil, err
	}
	keys := []string{t.Key()}
	if t.Op == OpAWQStats && t.Layer+1 < p.Layers {
		// The next layer's inputs are this layer's full-precision outputs (AutoAWQ).
		key := ActivationsKey(t.Layer+1, t.Shard)
		if err := env.Store.Put(ctx, key, MarshalActivations(out)); err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// pickScales picks the scales of layer L from its merged statistics and losses; al must hold the
// original weights.
func pickScales(ctx context.Context, env *ShardEnv, al *awq.Layer, layer int) ([]*awq.Scales, error) {
	stats, err := mergedStats(ctx, env, layer)
	if err != nil {
		return nil, err
	}
	losses, err := mergedLosses(ctx, env, layer)
	if err != nil {
		return nil, err
	}
	return awq.PickScales(al, stats, losses, env.Plan.Config.AWQ)
}

// runAWQFinishTask is AWQ's last step of a layer, which reads no activations: scales picked,
// clipping searched on the merged clip statistics, the layer quantized.
func runAWQFinishTask(ctx context.Context, env *ShardEnv, t ShardTask) ([]string, error) {
	l, err := env.Layer(t.Layer)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	al, _, release, err := awqCompute(ctx, env, l).AWQLayer(ctx, l, nil, false)
	if err != nil {
		return nil, err
	}
	defer release()
	scales, err := pickScales(ctx, env, al, t.Layer)
	if err != nil {
		return nil, err
	}
	clip, err := mergedAWQ(ctx, env, OpAWQClip, t.Layer, awq.MergeClipStats)
	if err != nil {
		return nil, err
	}
	r, err := awq.FinishLayer(ctx, al, scales, clip, env.Plan.Config.AWQ)
	if err != nil {
		return nil, err
	}
	res := &LayerResult{Index: t.Layer}
	awqResult(l, al, r, res)
	return []string{t.Key()}, putLayerResult(ctx, env.Store, t.Key(), res)
}
