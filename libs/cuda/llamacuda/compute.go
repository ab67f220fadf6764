package llamacuda

import (
	"context"
	"errors"
	"fmt"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/cuda/gptqcuda"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/transformer"
)

var _ quantize.LayerCompute = (*Compute)(nil)

// errGroupNotSeen reports a linear group whose input the layer's forward never reported.
var errGroupNotSeen = errors.New("llamacuda: the layer's forward never fed the linear group")

// Compute is the per-task arithmetic of a calibrated GPTQ layer stage on a GPU (satisfies
// quantize.LayerCompute; AWQ's tasks: quantize.AWQCompute, awq.go): each call uploads the layer and its shard once, computes on the
// device and returns host results. Every result is a deterministic function of the arguments
// on a given GPU and driver (fixed chunking, cuBLAS without atomics-based reductions), so a
// task re-run on the same kind of card writes the same bytes; results differ from the CPU's in
// the last bits, so a job's tasks should all run on one kind of device. Calls on one device run
// one at a time, so that concurrent task slots of a worker do not
// race for its memory.
type Compute struct {
	D *cuda.Device
	// Options: TF32 applies to the forward passes (GroupHessian's and Forward's products),
	// AWQHalf to the scale grid's (awqArith.Losses).
	Options Options
}

var _ quantize.Warmer = (*Compute)(nil)

// Warm implements quantize.Warmer: the kernels compiled (NVRTC) and loaded, the cuBLAS handles
// created, so that the first layer does not pay for them.
func (c *Compute) Warm(ctx context.Context) error {
	if _, err := loadKernels(ctx, c.D); err != nil {
		return err
	}
	if err := gptqcuda.Warm(ctx, c.D); err != nil {
		return err
	}
	if c.Options.TF32 {
		_, err := c.D.BLASTF32(ctx)
		return err
	}
	return nil
}

// Supports implements quantize.LayoutSupporter: the GPU runs Llama-layout layers; the sharded
// pipeline computes the others' Hessians and forwards on the CPU.
func (c *Compute) Supports(cfg *transformer.Config) error { return Supports(cfg) }

// GroupHessian returns the partial Hessian of the input of the linear group starting with
// group[0] over the shard x: the input norm's output for q/k/v, the attention context for o,
// the post-attention norm's output for gate/up, silu(gate)·up for down. It runs only as much
// of the layer as the group needs and counts x.Batch samples.
func (c *Compute) GroupHessian(ctx context.Context, l *transformer.Layer, group []string, x *transformer.Tensor) (*gptq.Hessian, error) {
	if len(group) == 0 {
		return nil, fmt.Errorf("%w: empty linear group", ErrShape)
	}
	lin := l.Linear(group[0])
	if lin == nil {
		return nil, fmt.Errorf("%w: layer %d has no linear %s", ErrShape, l.Index, group[0])
	}
	var st stages
	switch group[0] {
	case transformer.AttentionInputs[0]:
		st = stages{qkvInput: true}
	case transformer.OutputInputs[0]:
		st = stages{attention: true}
	case transformer.MLPInputs[0]:
		st = stages{attention: true}
	case transformer.DownInputs[0]:
		st = stages{attention: true, mlp: true, downInput: true}
	default:
		return nil, fmt.Errorf("%w: %s starts no linear group", ErrShape, group[0])
	}
	g, xd, done, err := c.upload(ctx, l, x)
	if err != nil {
		return nil, err
	}
	defer done()
	h, err := gptqcuda.NewHessian(ctx, c.D, lin.In)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	y := xd // q/k/v stops before anything is written
	if !st.qkvInput {
		if y, err = NewTensor(ctx, c.D, x.Batch, x.Seq, x.Dim); err != nil {
			return nil, err
		}
		defer y.Free()
	}
	seen := false
	hook := func(ctx context.Context, linears []string, in *Tensor) error {
		if linears[0] != group[0] {
			return nil
		}
		seen = true
		return h.AddDevice(ctx, in.Ptr(), in.Rows(), in.Batch)
	}
	if err := g.forward(ctx, xd, y, st, hook); err != nil {
		return nil, err
	}
	if !seen {
		return nil, fmt.Errorf("%w: %s of layer %d", errGroupNotSeen, group[0], l.Index)
	}
	return h.ToCPU(ctx)
}

// Forward returns l's output on the shard x, as l.Forward(x, nil).
func (c *Compute) Forward(ctx context.Context, l *transformer.Layer, x *transformer.Tensor) (*transformer.Tensor, error) {
	g, xd, done, err := c.upload(ctx, l, x)
	if err != nil {
		return nil, err
	}
	defer done()
	y, err := g.Forward(ctx, xd, nil)
	if err != nil {
		return nil, err
	}
	defer y.Free()
	return y.Download(ctx)
}

// SolveGPTQ quantizes the linears sharing the merged Hessian h with cfg: one factorization
// on the device, then each linear's solve, as gptq.Prepare and Factor.Quantize.
func (c *Compute) SolveGPTQ(ctx context.Context, h *gptq.Hessian, cfg gptq.Config, linears []*transformer.Linear) ([]*gptq.Result, error) {
	if len(linears) == 0 {
		return nil, fmt.Errorf("%w: no linears to solve", ErrShape)
	}
	release, err := acquire(ctx, c.D)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := checkSolve(ctx, c.D, h.Cols(), linears); err != nil {
		return nil, err
	}
	hd, err := gptqcuda.UploadHessian(ctx, c.D, h)
	if err != nil {
		return nil, err
	}
	defer hd.Close()
	return solveOn(ctx, hd, cfg, linears)
}

// solveOn quantizes the linears on the device Hessian h: one factorization, then each solve.
func solveOn(ctx context.Context, h *gptqcuda.Hessian, cfg gptq.Config, linears []*transformer.Linear) ([]*gptq.Result, error) {
	h.ReleaseScratch()
	f, err := gptqcuda.Prepare(ctx, h, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", linears[0].Name, err)
	}
	defer f.Close()
	out := make([]*gptq.Result, 0, len(linears))
	for _, lin := range linears {
		r, err := f.Quantize(ctx, lin.Weight, lin.Out, lin.In)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", lin.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// upload takes the device (calls on it run one at a time), checks that the layer and its shard
// fit in its free memory (one line wrapping ErrMemory if not) and puts them there; done frees
// them and gives the device back.
func (c *Compute) upload(ctx context.Context, l *transformer.Layer, x *transformer.Tensor) (g *Layer, xd *Tensor, done func(), err error) {
	release, err := acquire(ctx, c.D)
	if err != nil {
		return nil, nil, nil, err
	}
	g, xd, err = c.uploadChecked(ctx, l, x, func() error { return CheckMemory(ctx, c.D, l, x.Batch, x.Seq, true) })
	if err != nil {
		release()
		return nil, nil, nil, err
	}
	return g, xd, func() { xd.Free(); g.Close(); release() }, nil
}

// uploadChecked is upload with the memory check check, run once the shapes are known good.
func (c *Compute) uploadChecked(ctx context.Context, l *transformer.Layer, x *transformer.Tensor, check func() error) (*Layer, *Tensor, error) {
	cfg := l.Config()
	if cfg == nil {
		return nil, nil, fmt.Errorf("%w: layer %d has no model config", ErrShape, l.Index)
	}
	if x == nil || x.Rows() == 0 || x.Dim != l.Q.In {
		return nil, nil, fmt.Errorf("%w: layer %d needs a shard of %d features", ErrShape, l.Index, l.Q.In)
	}
	if err := check(); err != nil {
		return nil, nil, err
	}
	g, err := UploadLayer(ctx, c.D, cfg, l)
	if err != nil {
		return nil, nil, err
	}
	if err := c.Options.use(ctx, g); err != nil {
		g.Close()
		return nil, nil, err
	}
	xd, err := UploadTensor(ctx, c.D, x)
	if err != nil {
		g.Close()
		return nil, nil, err
	}
	return g, xd, nil
}

// checkSolve fails with one line wrapping ErrMemory when a solve of n columns for linears
// would not fit: the Hessian (float64), the factor's matrices and the largest weight's copies.
func checkSolve(ctx context.Context, d *cuda.Device, n int, linears []*transformer.Linear) error {
	free, _, err := d.MemInfo(ctx)
	if err != nil {
		return err
	}
	var rows int64
	for _, lin := range linears {
		rows = max(rows, int64(lin.Out))
	}
	nn := int64(n)
	need := 8*nn*nn + 13*nn*nn + 9*rows*nn
	if exceeds(need, free) {
		return fmt.Errorf("%w: the GPTQ solve of %s (%d×%d) needs about %.1f GiB, %s has %.1f GiB free",
			ErrMemory, linears[0].Name, rows, n, gib(need), d.Name(), gib(free))
	}
	return nil
}
