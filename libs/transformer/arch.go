package transformer

import (
	"fmt"
	"math"

	"quantfleet.dev/libs/hfmodel"
)

// archLayer holds the parts of a Gemma 2/3, Phi-3 or mixture-of-experts decoder layer that
// the Llama layer does not have (Gemma's attention and GeGLU: arch_gemma.go; routing:
// arch_moe.go). Their forward reports the linears' inputs to a Hook as the Llama layer's does
// (LinearGroups names the groups); an expert's input is the tokens routed to it.
type archLayer struct {
	PostAttnNorm, PreFFNorm, PostFFNorm *Norm      // Gemma's sandwich norms
	QKV, GateUp                         *Linear    // Phi-3's fused projections
	Router                              *Linear    // experts × hidden
	Experts                             []expert   // routed experts
	Shared                              *expert    // Qwen2-MoE's shared expert
	SharedGate                          *Linear    // 1 × hidden, sigmoid-gated
	rope                                *ropeTable // set per forward call for the layer's type
}

type expert struct{ Gate, Up, Down *Linear }

// archLayer loads decoder layer l.Index of a non-Llama layout.
func (m *Model) archLayer(l *Layer, p string) (*Layer, error) {
	c := m.Config
	shapes := map[string][]int64{}
	for _, s := range c.Dims().Block(l.Index) {
		shapes[s.Name] = s.Shape
	}
	var err error
	load := func(name string) []float32 {
		var w []float32
		if err == nil {
			w, err = loadTensor(m.Source, p+name, shapes[p+name])
		}
		return w
	}
	norm := func(name string) *Norm {
		w := load(name + ".weight")
		if c.Gemma { // Gemma's RMSNorm scales by 1+w, computed in float32
			for i := range w {
				w[i]++
			}
		}
		return &Norm{Name: name, Weight: w, Eps: c.RMSNormEps}
	}
	linear := func(name string) *Linear {
		shape := shapes[p+name+".weight"]
		if shape == nil {
			if err == nil {
				err = fmt.Errorf("%w: no tensor %s%s.weight in the table", ErrBadConfig, p, name)
			}
			return nil
		}
		lin := &Linear{Name: name, Out: int(shape[0]), In: int(shape[1]), Weight: load(name + ".weight")}
		if _, bias := shapes[p+name+".bias"]; bias {
			lin.Bias = load(name + ".bias")
		}
		return lin
	}
	a := &archLayer{}
	l.arch = a
	l.InputNorm = norm("input_layernorm")
	if c.QKNorm {
		l.QNorm, l.KNorm = norm("self_attn.q_norm"), norm("self_attn.k_norm")
	}
	if c.Layout == hfmodel.LayoutPhi3 {
		a.QKV = linear("self_attn.qkv_proj")
	} else {
		l.Q, l.K, l.V = linear("self_attn.q_proj"), linear("self_attn.k_proj"), linear("self_attn.v_proj")
	}
	l.O = linear("self_attn.o_proj")
	switch c.Layout {
	case hfmodel.LayoutGemma:
		a.PostAttnNorm = norm("post_attention_layernorm")
		a.PreFFNorm, a.PostFFNorm = norm("pre_feedforward_layernorm"), norm("post_feedforward_layernorm")
		l.Gate, l.Up, l.Down = linear("mlp.gate_proj"), linear("mlp.up_proj"), linear("mlp.down_proj")
	case hfmodel.LayoutPhi3:
		l.PostAttentionNorm = norm("post_attention_layernorm")
		a.GateUp, l.Down = linear("mlp.gate_up_proj"), linear("mlp.down_proj")
	case hfmodel.LayoutMixtral, hfmodel.LayoutQwenMoE:
		l.PostAttentionNorm = norm("post_attention_layernorm")
		a.Router = linear(c.moeModule() + "gate")
		a.Experts = make([]expert, c.Experts)
		for x := range a.Experts {
			n := c.expertLinears(x)
			a.Experts[x] = expert{linear(n[0]), linear(n[1]), linear(n[2])}
		}
		if _, ok := shapes[p+"mlp.shared_expert_gate.weight"]; ok {
			n := sharedExpertLinears
			a.Shared = &expert{linear(n[0]), linear(n[1]), linear(n[2])}
			a.SharedGate = linear("mlp.shared_expert_gate")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", l.Index, err)
	}
	return l, nil
}

// forwardArch is Forward for the non-Llama layouts:
// Gemma: h = x + post_attn_norm(attn(input_norm(x))); out = h + post_ff_norm(mlp(pre_ff_norm(h)));
// others: h = x + attn(input_norm(x)); out = h + ffn(post_attention_norm(h)).
// A non-empty only restricts a mixture-of-experts block to the expert (or shared expert) that
// owns the linear of that name, none for other linears (Inputs).
func (l *Layer) forwardArch(x *Tensor, hook Hook, only string) (*Tensor, error) {
	if err := x.check(); err != nil {
		return nil, err
	}
	c := l.model.Config
	if x.Dim != c.HiddenSize {
		return nil, fmt.Errorf("transformer: layer %d takes %d features, input has %d", l.Index, c.HiddenSize, x.Dim)
	}
	out := NewTensor(x.Batch, x.Seq, x.Dim)
	err := chunks(x, func(lo, hi int) error {
		xs := x.Sequences(lo, hi)
		n, _ := l.InputNorm.Forward(xs)
		a := l.archAttention(n, hook)
		if l.arch.PostAttnNorm != nil {
			rmsNorm(a.Data, a.Data, l.arch.PostAttnNorm.Weight, l.arch.PostAttnNorm.Eps)
		}
		h := out.Sequences(lo, hi)
		for i, v := range xs.Data {
			h.Data[i] = v + a.Data[i]
		}
		var f *Tensor
		switch {
		case l.arch.PreFFNorm != nil:
			rmsNorm(n.Data, h.Data, l.arch.PreFFNorm.Weight, l.arch.PreFFNorm.Eps)
			f = l.archMLP(n, hook)
			rmsNorm(f.Data, f.Data, l.arch.PostFFNorm.Weight, l.arch.PostFFNorm.Eps)
		case l.arch.Router != nil:
			rmsNorm(n.Data, h.Data, l.PostAttentionNorm.Weight, l.PostAttentionNorm.Eps)
			f = l.moe(n, hook, only)
		default:
			rmsNorm(n.Data, h.Data, l.PostAttentionNorm.Weight, l.PostAttentionNorm.Eps)
			f = l.archMLP(n, hook)
		}
		addInto(h.Data, f.Data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// archAttention: q/k/v (Phi-3 splits its fused projection: q rows, then k, then v), Gemma 3's
// per-head q/k norms, the layer type's rotary table, query_pre_attn_scalar scaling and
// Gemma 2's soft-capping.
func (l *Layer) archAttention(n *Tensor, hook Hook) *Tensor {
	c := l.model.Config
	rows, hd := n.Rows(), c.HeadDim
	qd, kd := c.NumHeads*hd, c.NumKVHeads*hd
	q, k, v := NewTensor(n.Batch, n.Seq, qd), NewTensor(n.Batch, n.Seq, kd), NewTensor(n.Batch, n.Seq, kd)
	if hook != nil {
		if l.arch.QKV != nil {
			hook(FusedQKVInputs, n)
		} else {
			hook(AttentionInputs, n)
		}
	}
	if l.arch.QKV != nil {
		qkv := NewTensor(n.Batch, n.Seq, l.arch.QKV.Out)
		l.arch.QKV.apply(qkv.Data, n.Data, rows)
		for r := 0; r < rows; r++ {
			row := qkv.Row(r)
			copy(q.Row(r), row[:qd])
			copy(k.Row(r), row[qd:qd+kd])
			copy(v.Row(r), row[qd+kd:])
		}
	} else {
		l.Q.apply(q.Data, n.Data, rows)
		l.K.apply(k.Data, n.Data, rows)
		l.V.apply(v.Data, n.Data, rows)
	}
	window := 0
	if l.Index < len(c.SlidingWindow) {
		window = c.SlidingWindow[l.Index]
	}
	rope := l.model.rope(n.Seq)
	if window > 0 && c.LocalRope != nil {
		rope = l.model.localRope(n.Seq)
	}
	l.normRotate(q, k, rope)
	ctx := NewTensor(n.Batch, n.Seq, qd)
	scale := 1 / math.Sqrt(float64(hd))
	if c.QueryScale != 0 {
		scale = c.QueryScale
	}
	if c.AttnSoftcap > 0 || c.QueryScale != 0 {
		attendCapped(ctx.Data, q.Data, k.Data, v.Data, n.Batch, n.Seq, c.NumHeads, c.NumKVHeads, hd, window, float32(scale), float32(c.AttnSoftcap))
	} else {
		attend(ctx.Data, q.Data, k.Data, v.Data, n.Batch, n.Seq, c.NumHeads, c.NumKVHeads, hd, window)
	}
	if hook != nil {
		hook(OutputInputs, ctx)
	}
	o := NewTensor(n.Batch, n.Seq, l.O.Out)
	l.O.apply(o.Data, ctx.Data, rows)
	return o
}

// archMLP is Gemma's GeGLU (gelu_pytorch_tanh) or Phi-3's fused SwiGLU (gate rows first).
func (l *Layer) archMLP(n *Tensor, hook Hook) *Tensor {
	rows := n.Rows()
	var g, u *Tensor
	if hook != nil {
		if l.arch.GateUp != nil {
			hook(FusedGateUpInputs, n)
		} else {
			hook(MLPInputs, n)
		}
	}
	if l.arch.GateUp != nil {
		ff := l.arch.GateUp.Out / 2
		gu := NewTensor(n.Batch, n.Seq, 2*ff)
		l.arch.GateUp.apply(gu.Data, n.Data, rows)
		g, u = NewTensor(n.Batch, n.Seq, ff), NewTensor(n.Batch, n.Seq, ff)
		for r := 0; r < rows; r++ {
			copy(g.Row(r), gu.Row(r)[:ff])
			copy(u.Row(r), gu.Row(r)[ff:])
		}
	} else {
		g, u = NewTensor(n.Batch, n.Seq, l.Gate.Out), NewTensor(n.Batch, n.Seq, l.Up.Out)
		l.Gate.apply(g.Data, n.Data, rows)
		l.Up.apply(u.Data, n.Data, rows)
	}
	if l.model.Config.Gemma {
		geluTanhMul(g.Data, u.Data)
	} else {
		siluMul(g.Data, u.Data)
	}
	if hook != nil {
		hook(DownInputs, g)
	}
	d := NewTensor(n.Batch, n.Seq, l.Down.Out)
	l.Down.apply(d.Data, g.Data, rows)
	return d
}
