package llamacuda

import (
	"context"
	"fmt"
	"slices"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/cuda/gptqcuda"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/transformer"
)

var _ quantize.StageCompute = (*Compute)(nil)

// OpenStages implements quantize.StageCompute: the shards stay on the device from layer to
// layer, each layer's weights go there once, and the passes of a layer reuse what an earlier
// pass computed with the same weights: the attention context of o_proj's pass (q, k, v are
// solved by then) for gate/up's, the residual after the solved attention for down_proj's and
// for the layer's output. Each reused tensor is what the task path recomputes, with the same
// kernels on the same chunks, so the results are the same bits as Compute's task by task.
// The session holds the device (other work on it waits) until Close.
func (c *Compute) OpenStages(ctx context.Context, l *transformer.Layer, n int, shard func(int) (*transformer.Tensor, error)) (quantize.StageSession, error) {
	if l.Config() == nil || l.Q == nil || n <= 0 {
		return nil, fmt.Errorf("%w: a staged session needs a Llama-layout layer and shards", ErrShape)
	}
	release, err := acquire(ctx, c.D)
	if err != nil {
		return nil, err
	}
	s := &stage{c: c, release: release}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	for i := range n {
		x, err := shard(i)
		if err != nil {
			return nil, err
		}
		if x.Dim != l.Q.In || x.Rows() == 0 {
			return nil, fmt.Errorf("%w: shard %d is %d×%d×%d, layer %d takes %d features", ErrShape, i, x.Batch, x.Seq, x.Dim, l.Index, l.Q.In)
		}
		if i == 0 {
			if err := checkStageMemory(ctx, c, l, n, x); err != nil {
				return nil, err
			}
		}
		sh := &stageShard{}
		s.shards = append(s.shards, sh)
		if sh.x, err = UploadTensor(ctx, c.D, x); err != nil {
			return nil, err
		}
		if sh.res, err = NewTensor(ctx, c.D, x.Batch, x.Seq, x.Dim); err != nil {
			return nil, err
		}
		if sh.ctx, err = NewTensor(ctx, c.D, x.Batch, x.Seq, l.O.In); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

// checkStageMemory fails with an error wrapping quantize.ErrStageMemory when n shards like x
// (balanced: at most one sample more each), their residuals and attention contexts, and a
// layer's work (weights, a chunk's workspace, the largest group's Hessian, a partial and the
// solve) would not fit in the device's free memory.
func checkStageMemory(ctx context.Context, c *Compute, l *transformer.Layer, n int, x *transformer.Tensor) error {
	free, _, err := c.D.MemInfo(ctx)
	if err != nil {
		return err
	}
	batch := x.Batch
	if n > 1 {
		batch = n * (x.Batch + 1)
	}
	need := needBytes(l, batch, x.Seq, true)
	if n > 1 { // a shard's partial Hessian beside the merged one
		var cols int64
		for _, lin := range l.Linears() {
			cols = max(cols, int64(lin.In))
		}
		need += 8 * cols * cols
	}
	if exceeds(need, free) {
		return fmt.Errorf("%w: %d shards of %d×%d tokens need about %.1f GiB, %s has %.1f GiB free",
			quantize.ErrStageMemory, n, x.Batch, x.Seq, gib(need), c.D.Name(), gib(free))
	}
	return nil
}

// stage is a quantize.StageSession on one device.
type stage struct {
	c       *Compute
	release func()
	shards  []*stageShard
	g       *Layer             // the current layer's weights on the device
	l       *transformer.Layer // its host weights
	h       *gptqcuda.Hessian  // the last group's merged Hessian
}

// stageShard is one shard's tensors: x entering the current layer, and what passes of the
// layer left behind for later ones, valid while the weights they used stay.
type stageShard struct {
	x   *Tensor
	ctx *Tensor // the attention context (o_proj's input) with the current q, k, v
	res *Tensor // x + attention(x) with the current q, k, v, o
	// ctxOK and resOK say whether ctx and res hold those.
	ctxOK, resOK bool
}

// Load implements quantize.StageSession.
func (s *stage) Load(ctx context.Context, l *transformer.Layer) error {
	s.closeLayer()
	g, err := UploadLayer(ctx, s.c.D, l.Config(), l)
	if err != nil {
		return err
	}
	if err := s.c.Options.use(ctx, g); err != nil {
		g.Close()
		return err
	}
	s.g, s.l = g, l
	for _, sh := range s.shards {
		sh.ctxOK, sh.resOK = false, false
	}
	return nil
}

// Hessian implements quantize.StageSession: per shard, the pass Compute.GroupHessian runs
// (from a reused tensor where one is valid), into a partial merged in shard order.
func (s *stage) Hessian(ctx context.Context, group []string) (int64, error) {
	s.closeHessian()
	if s.g == nil || len(group) == 0 {
		return 0, fmt.Errorf("%w: no layer loaded or empty group", ErrShape)
	}
	lin := s.l.Linear(group[0])
	if lin == nil {
		return 0, fmt.Errorf("%w: layer %d has no linear %s", ErrShape, s.l.Index, group[0])
	}
	for i, sh := range s.shards {
		h, err := gptqcuda.NewHessian(ctx, s.c.D, lin.In)
		if err != nil {
			return 0, err
		}
		if err := s.pass(ctx, sh, group, h); err != nil {
			h.Close()
			return 0, fmt.Errorf("shard %d: %w", i, err)
		}
		if s.h == nil {
			s.h = h
			continue
		}
		err = s.h.Merge(ctx, h)
		h.Close()
		if err != nil {
			return 0, err
		}
	}
	return s.h.Tokens(), nil
}

// pass runs the part of the layer that feeds group on shard sh, adding the group's input to h.
func (s *stage) pass(ctx context.Context, sh *stageShard, group []string, h *gptqcuda.Hessian) error {
	seen := false
	add := func(ctx context.Context, linears []string, in *Tensor) error {
		if linears[0] != group[0] {
			return nil
		}
		seen = true
		return h.AddDevice(ctx, in.Ptr(), in.Rows(), in.Batch)
	}
	var err error
	switch group[0] {
	case transformer.AttentionInputs[0]:
		err = s.g.forward(ctx, sh.x, sh.x, stages{qkvInput: true}, add)
	case transformer.OutputInputs[0]:
		err = s.attention(ctx, sh, add)
	case transformer.MLPInputs[0]:
		err = s.residual(ctx, sh, add)
	case transformer.DownInputs[0]:
		if err = s.residual(ctx, sh, nil); err == nil {
			err = s.g.forward(ctx, sh.res, sh.res, stages{mlp: true, downInput: true}, add)
		}
	default:
		return fmt.Errorf("%w: %s starts no linear group", ErrShape, group[0])
	}
	if err != nil {
		return err
	}
	if !seen {
		return fmt.Errorf("%w: %s of layer %d", errGroupNotSeen, group[0], s.l.Index)
	}
	return nil
}

// attention runs the attention block on sh.x, keeping the attention context in sh.ctx and the
// residual in sh.res; hook sees the linears' inputs.
func (s *stage) attention(ctx context.Context, sh *stageShard, hook Hook) error {
	kept := 0
	keep := func(ctx context.Context, linears []string, in *Tensor) error {
		if slices.Equal(linears, transformer.OutputInputs) {
			n := 4 * in.Rows() * in.Dim
			if err := cuda.Copy(ctx, sh.ctx.buf, sh.ctx.off+kept, in.buf, in.off, n); err != nil {
				return err
			}
			kept += n
		}
		if hook == nil {
			return nil
		}
		return hook(ctx, linears, in)
	}
	if err := s.g.forward(ctx, sh.x, sh.res, stages{attention: true}, keep); err != nil {
		return err
	}
	sh.ctxOK, sh.resOK = true, true
	return nil
}

// residual makes sh.res hold x + attention(x) with the current weights: o_proj applied to the
// kept context when it is valid (the chunked forward then computes exactly the recomputation's
// values), else the attention block again; hook sees post_attention_layernorm's output.
func (s *stage) residual(ctx context.Context, sh *stageShard, hook Hook) error {
	if sh.resOK && hook == nil {
		return nil
	}
	if !sh.ctxOK {
		return s.attention(ctx, sh, hook)
	}
	if err := s.g.forward(ctx, sh.x, sh.res, stages{attention: true, saved: sh.ctx}, hook); err != nil {
		return err
	}
	sh.resOK = true
	return nil
}

// Solve implements quantize.StageSession: Compute.SolveGPTQ on the merged Hessian, which never
// leaves the device.
func (s *stage) Solve(ctx context.Context, cfg gptq.Config, linears []*transformer.Linear) ([]*gptq.Result, error) {
	if s.h == nil {
		return nil, fmt.Errorf("%w: no Hessian to solve on", ErrShape)
	}
	return solveOn(ctx, s.h, cfg, linears)
}

// SetWeights implements quantize.StageSession; it invalidates what the passes kept with the
// old weights.
func (s *stage) SetWeights(ctx context.Context, linears []*transformer.Linear) error {
	for _, lin := range linears {
		if err := s.g.SetWeight(ctx, lin.Name, lin.Weight); err != nil {
			return err
		}
		attn := slices.Contains(transformer.AttentionInputs, lin.Name)
		for _, sh := range s.shards {
			if attn {
				sh.ctxOK = false
			}
			if attn || lin.Name == transformer.OutputInputs[0] {
				sh.resOK = false
			}
		}
	}
	return nil
}

// Advance implements quantize.StageSession: each shard becomes res + mlp(res), the layer's
// output, as Compute.Forward computes it.
func (s *stage) Advance(ctx context.Context) error {
	for i, sh := range s.shards {
		if err := s.residual(ctx, sh, nil); err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
		if err := s.g.forward(ctx, sh.res, sh.res, stages{mlp: true}, nil); err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
		sh.x, sh.res = sh.res, sh.x
		sh.ctxOK, sh.resOK = false, false
	}
	return nil
}

// Close implements quantize.StageSession.
func (s *stage) Close() {
	s.closeLayer()
	for _, sh := range s.shards {
		for _, t := range []*Tensor{sh.x, sh.ctx, sh.res} {
			if t != nil {
				t.Free()
			}
		}
	}
	s.shards = nil
	if s.release != nil {
		s.release()
		s.release = nil
	}
}

func (s *stage) closeLayer() {
	s.closeHessian()
	if s.g != nil {
		s.g.Close()
		s.g, s.l = nil, nil
	}
}

func (s *stage) closeHessian() {
	if s.h != nil {
		s.h.Close()
		s.h = nil
	}
}
