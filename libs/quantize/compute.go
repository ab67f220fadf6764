package quantize

import (
	"context"
	"errors"
	"fmt"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/transformer"
)

// LayerCompute is the arithmetic of the tasks of a calibrated (GPTQ) layer stage: everything a
// task computes, as opposed to what it reads and writes. The sharded pipeline (ShardPlan,
// RunShardTask) calls it, the same way in `quantfleet quantize` and on fleet workers; CPU is
// the implementation on the host, and a GPU implementation can replace it whole. AWQ's tasks
// use its sibling AWQCompute, when the same value implements it.
//
// The data model, for an implementer who reads nothing else:
//
//   - A shard x is a *transformer.Tensor of x.Batch calibration sequences × x.Seq positions ×
//     x.Dim (= hidden size) features, float32, row-major: the activations entering the layer for
//     one shard of the calibration samples (a job has a fixed number of shards; every method
//     sees one shard or none).
//   - l is one decoder layer with its weights in float32 on the host (transformer.Layer:
//     InputNorm, PostAttentionNorm, optional per-head QNorm/KNorm, linears Q, K, V, O, Gate, Up,
//     Down with Weight Out×In row-major and optional Bias; the model config, rotary tables and
//     attention window come from the layer's model: l.Forward is the reference forward). Linears
//     that were already quantized earlier in the stage carry their reconstructed weight
//     (gptq.Result.Reconstruct: float32 scale·(code−zero)), so the methods never need to know
//     which ones are quantized. Methods must not modify l or x.
//   - A linear group is the names of linears that read one input (transformer.AttentionInputs
//     q/k/v, OutputInputs o, MLPInputs gate/up, DownInputs down; other layouts' groups are
//     transformer.Config.LinearGroups, an expert's input being the tokens routed to it); group[0]
//     is the name a transformer.Hook reports first for that input. A compute that runs only
//     some layouts implements LayoutSupporter; the pipeline runs the others on the CPU.
//
// Determinism: every method's result must be a deterministic function of its arguments (the
// same bits whatever the thread count or the order in which tasks ran), because the fleet
// re-runs tasks on other workers and compares nothing. A job's tasks should all run on one
// implementation: two implementations may differ in the last bits, and then the checkpoint is no
// longer byte-identical to the one a single implementation writes.
type LayerCompute interface {
	// GroupHessian returns the partial GPTQ Hessian of the input of the linear group over
	// shard x: the input is exactly what a transformer.Hook sees with linears[0] == group[0]
	// during l.Forward(x, hook) (input_layernorm(x) for q/k/v; the attention context before
	// o_proj for o; post_attention_layernorm(x + attention(x)) for gate/up;
	// silu(gate(n))·up(n) for down), over all x.Rows() tokens. The Hessian counts x.Batch
	// samples and x.Rows() tokens (gptq.Hessian.Add(input, x.Rows(), x.Batch), or
	// gptq.HessianFromSum(cols, Σ inputᵀ·input, x.Batch, x.Rows()) for an implementation that sums
	// elsewhere; the upper triangle is what counts). The CPU sums float32 Gram matrices of
	// 512-token chunks (in sequence order) into float64.
	GroupHessian(ctx context.Context, l *transformer.Layer, group []string, x *transformer.Tensor) (*gptq.Hessian, error)

	// Forward returns l's output on shard x (x.Batch × x.Seq × hidden): the input of the next
	// layer, as l.Forward(x, nil) computes it.
	Forward(ctx context.Context, l *transformer.Layer, x *transformer.Tensor) (*transformer.Tensor, error)

	// SolveGPTQ quantizes the linears of one group, which share the merged Hessian h (the sum
	// of the shards' partials, merged in shard order 0..S-1 by the caller), with cfg: one
	// result per linear, in the order given, as gptq.Prepare(h, cfg) then Factor.Quantize(
	// lin.Weight, lin.Out, lin.In) compute it. It neither modifies h's meaning nor the linears.
	SolveGPTQ(ctx context.Context, h *gptq.Hessian, cfg gptq.Config, linears []*transformer.Linear) ([]*gptq.Result, error)
}

// CPU is the LayerCompute of the host: the transformer runtime's forward with hooks and package
// gptq's solver.
type CPU struct{}

var _ LayerCompute = CPU{}

// errGroupNotSeen reports a linear group whose input the layer's forward never reported.
var errGroupNotSeen = errors.New("quantize: the layer's forward never fed the linear group")

// GroupHessian implements LayerCompute. On a Llama-layout layer it runs only as much of the
// layer as the group needs: the input norm for q/k/v, the attention block for o, attention and
// the post-attention norm for gate/up, the whole layer for the rest; other layouts (Gemma,
// Phi-3, mixtures of experts) run the layer with transformer.Layer.Inputs, a mixture-of-experts
// block running only the group's expert. An expert's group sees the tokens routed to
// it, possibly none: the Hessian then counts no token (solveGroup rounds such a group).
func (CPU) GroupHessian(ctx context.Context, l *transformer.Layer, group []string, x *transformer.Tensor) (*gptq.Hessian, error) {
	if len(group) == 0 {
		return nil, fmt.Errorf("%w: empty linear group", ErrLayerConfig)
	}
	lin := l.Linear(group[0])
	if lin == nil {
		return nil, fmt.Errorf("%w: layer %d has no linear %s", ErrLayerConfig, l.Index, group[0])
	}
	h := gptq.NewHessian(lin.In)
	var hookErr error
	seen := false
	hook := func(linears []string, in *transformer.Tensor) {
		if linears[0] == group[0] && hookErr == nil {
			seen = true
			if in.Rows() > 0 { // an expert's input may hold no routed token
				hookErr = h.Add(in.Data, in.Rows(), in.Batch)
			}
		}
	}
	// The shortcuts below are the Llama layer's; other layouts run the whole layer.
	llama := l.Config() == nil || l.Config().Layout == hfmodel.LayoutLlama
	err := eachChunk(ctx, x, func(_ int, xs *transformer.Tensor) error {
		if !llama {
			return errors.Join(l.Inputs(xs, group[0], hook), hookErr)
		}
		n, err := l.InputNorm.Forward(xs)
		if err != nil {
			return err
		}
		switch group[0] {
		case transformer.AttentionInputs[0]:
			hook(transformer.AttentionInputs, n)
		case transformer.OutputInputs[0]:
			_, err = l.Attention(n, hook)
		case transformer.MLPInputs[0]:
			a, err := l.Attention(n, nil)
			if err != nil {
				return err
			}
			hs := transformer.NewTensor(xs.Batch, xs.Seq, xs.Dim)
			for i, v := range xs.Data {
				hs.Data[i] = v + a.Data[i]
			}
			n2, err := l.PostAttentionNorm.Forward(hs)
			if err != nil {
				return err
			}
			hook(transformer.MLPInputs, n2)
		default:
			_, err = l.Forward(xs, hook)
		}
		return errors.Join(err, hookErr)
	})
	if err != nil {
		return nil, err
	}
	if !seen {
		return nil, fmt.Errorf("%w: %s of layer %d", errGroupNotSeen, group[0], l.Index)
	}
	return h, nil
}

// Forward implements LayerCompute.
func (CPU) Forward(ctx context.Context, l *transformer.Layer, x *transformer.Tensor) (*transformer.Tensor, error) {
	out := transformer.NewTensor(x.Batch, x.Seq, x.Dim)
	err := eachChunk(ctx, x, func(off int, xs *transformer.Tensor) error {
		y, err := l.Forward(xs, nil)
		if err != nil {
			return err
		}
		copy(out.Data[off:], y.Data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SolveGPTQ implements LayerCompute: one factorization shared by the group.
func (CPU) SolveGPTQ(ctx context.Context, h *gptq.Hessian, cfg gptq.Config, linears []*transformer.Linear) ([]*gptq.Result, error) {
	if len(linears) == 0 {
		return nil, fmt.Errorf("%w: no linears to solve", ErrLayerConfig)
	}
	f, err := gptq.Prepare(h, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", linears[0].Name, err)
	}
	out := make([]*gptq.Result, 0, len(linears))
	for _, lin := range linears {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := f.Quantize(lin.Weight, lin.Out, lin.In)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", lin.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}
