package transformer

import (
	"fmt"

	"quantfleet.dev/libs/hfmodel"
)

// Hook observes the input of linear layers during a forward pass: it is called once per
// distinct input with the names of the linears that consume it (q/k/v share one input,
// gate/up share one); a mixture-of-experts block's whole input is reported under the block's
// name (Config.MoEBlock), before its experts' routed inputs. input is valid only during the call and must not be modified.
// A forward pass over many sequences may call a hook several times, each time with whole
// sequences, so hooks accumulate (GPTQ Hessians, AWQ statistics).
type Hook func(linears []string, input *Tensor)

// The linear groups of a decoder layer, in the order Forward feeds them; the names are the
// module paths inside a Hugging Face decoder layer.
var (
	AttentionInputs = []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}
	OutputInputs    = []string{"self_attn.o_proj"}
	MLPInputs       = []string{"mlp.gate_proj", "mlp.up_proj"}
	DownInputs      = []string{"mlp.down_proj"}
)

// Linear is y = x·Wᵀ + b. Weight (Out×In, the checkpoint's layout) and Bias may be read
// and replaced or modified in place between calls: nothing is cached from them.
type Linear struct {
	Name    string // module path inside the layer, e.g. "self_attn.q_proj"
	Out, In int
	Weight  []float32
	Bias    []float32 // nil without bias
}

// Forward returns x·Wᵀ + b.
func (l *Linear) Forward(x *Tensor) (*Tensor, error) {
	if err := x.check(); err != nil {
		return nil, err
	}
	if x.Dim != l.In {
		return nil, fmt.Errorf("transformer: %s takes %d features, input has %d", l.Name, l.In, x.Dim)
	}
	y := NewTensor(x.Batch, x.Seq, l.Out)
	l.apply(y.Data, x.Data, x.Rows())
	return y, nil
}

func (l *Linear) apply(dst, x []float32, rows int) {
	Gemm(false, true, rows, l.Out, l.In, 1, x, l.In, l.Weight, l.In, 0, dst, l.Out)
	if l.Bias != nil {
		rowsParallel(rows, l.Out, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				addInto(dst[r*l.Out:(r+1)*l.Out], l.Bias)
			}
		})
	}
}

// Norm is an RMSNorm: x·rsqrt(mean(x²)+Eps)·Weight.
type Norm struct {
	Name   string
	Weight []float32
	Eps    float64
}

// Forward normalizes every row of x.
func (n *Norm) Forward(x *Tensor) (*Tensor, error) {
	if err := x.check(); err != nil {
		return nil, err
	}
	if x.Dim != len(n.Weight) {
		return nil, fmt.Errorf("transformer: %s normalizes %d features, input has %d", n.Name, len(n.Weight), x.Dim)
	}
	y := NewTensor(x.Batch, x.Seq, x.Dim)
	rmsNorm(y.Data, x.Data, n.Weight, n.Eps)
	return y, nil
}

// Layer is one decoder layer with its weights in float32.
type Layer struct {
	Index             int
	InputNorm         *Norm
	PostAttentionNorm *Norm
	QNorm, KNorm      *Norm // per-head norms of Qwen3, nil otherwise
	Q, K, V, O        *Linear
	Gate, Up, Down    *Linear
	model             *Model
	arch              *archLayer // Gemma, Phi-3 and mixture-of-experts parts; nil for Llama
}

// Config returns the config of the model the layer was loaded from (nil for a layer built
// by hand).
func (l *Layer) Config() *Config {
	if l.model == nil {
		return nil
	}
	return l.model.Config
}

// Linears returns the linears GPTQ/AWQ quantize, in checkpoint order: q, k, v, o, gate, up,
// down (Phi-3: qkv, o, gate_up, down; mixture of experts: q, k, v, o, the shared expert's gate,
// up, down, then each expert's). The router and shared_expert_gate are not among them.
func (l *Layer) Linears() []*Linear {
	all := []*Linear{l.Q, l.K, l.V, l.O, l.Gate, l.Up, l.Down}
	if a := l.arch; a != nil {
		all = []*Linear{l.Q, l.K, l.V, a.QKV, l.O, l.Gate, l.Up, a.GateUp, l.Down}
		for _, x := range append([]*expert{a.Shared}, expertPtrs(a.Experts)...) {
			if x != nil {
				all = append(all, x.Gate, x.Up, x.Down)
			}
		}
	}
	out := all[:0]
	for _, lin := range all {
		if lin != nil {
			out = append(out, lin)
		}
	}
	return out
}

func expertPtrs(xs []expert) []*expert {
	out := make([]*expert, len(xs))
	for i := range xs {
		out[i] = &xs[i]
	}
	return out
}

// Linear returns the linear with the given module path ("self_attn.q_proj"), or nil.
func (l *Layer) Linear(name string) *Linear {
	for _, lin := range l.Linears() {
		if lin.Name == name {
			return lin
		}
	}
	return nil
}

// Router returns the router of a mixture-of-experts layer (experts × hidden, not quantized), or
// nil.
func (l *Layer) Router() *Linear {
	if l.arch == nil {
		return nil
	}
	return l.arch.Router
}

// Norm returns the norm with the given module path ("input_layernorm",
// "pre_feedforward_layernorm"), or nil. Gemma's norms hold 1+w, the factor they multiply by.
func (l *Layer) Norm(name string) *Norm {
	all := []*Norm{l.InputNorm, l.PostAttentionNorm, l.QNorm, l.KNorm}
	if a := l.arch; a != nil {
		all = append(all, a.PostAttnNorm, a.PreFFNorm, a.PostFFNorm)
	}
	for _, n := range all {
		if n != nil && n.Name == name {
			return n
		}
	}
	return nil
}

// Release drops the layer's weights so that their memory can be reclaimed.
func (l *Layer) Release() {
	*l = Layer{Index: l.Index}
}

// Layer loads the weights of decoder layer i.
func (m *Model) Layer(i int) (*Layer, error) {
	c := m.Config
	if i < 0 || i >= c.NumLayers {
		return nil, fmt.Errorf("transformer: layer %d out of range [0, %d)", i, c.NumLayers)
	}
	p := fmt.Sprintf("model.layers.%d.", i)
	l := &Layer{Index: i, model: m}
	if c.Layout != hfmodel.LayoutLlama {
		return m.archLayer(l, p)
	}
	// Shapes come from the table the GGUF conversion checks against too.
	shapes := map[string][]int64{}
	for _, s := range c.Dims().Block(i) {
		shapes[s.Name] = s.Shape
	}
	var err error
	load := func(name string) []float32 {
		var w []float32
		if err == nil {
			w, err = loadTensor(m.Source, name, shapes[name])
		}
		return w
	}
	norm := func(name string) *Norm {
		return &Norm{Name: name, Weight: load(p + name + ".weight"), Eps: c.RMSNormEps}
	}
	linear := func(name string) *Linear {
		shape := shapes[p+name+".weight"]
		lin := &Linear{Name: name, Out: int(shape[0]), In: int(shape[1]), Weight: load(p + name + ".weight")}
		if _, bias := shapes[p+name+".bias"]; bias {
			lin.Bias = load(p + name + ".bias")
		}
		return lin
	}
	l.InputNorm = norm("input_layernorm")
	l.PostAttentionNorm = norm("post_attention_layernorm")
	if c.QKNorm {
		l.QNorm = norm("self_attn.q_norm")
		l.KNorm = norm("self_attn.k_norm")
	}
	l.Q = linear("self_attn.q_proj")
	l.K = linear("self_attn.k_proj")
	l.V = linear("self_attn.v_proj")
	l.O = linear("self_attn.o_proj")
	l.Gate = linear("mlp.gate_proj")
	l.Up = linear("mlp.up_proj")
	l.Down = linear("mlp.down_proj")
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", i, err)
	}
	return l, nil
}

// maxChunkRows bounds the rows processed at once so that temporaries stay small.
const maxChunkRows = 4096

// chunks calls f on groups of whole sequences of x of at most maxChunkRows rows.
func chunks(x *Tensor, f func(lo, hi int) error) error {
	per := max(1, maxChunkRows/max(1, x.Seq))
	for lo := 0; lo < x.Batch; lo += per {
		if err := f(lo, min(x.Batch, lo+per)); err != nil {
			return err
		}
	}
	return nil
}

func (l *Layer) checkInput(x *Tensor) error {
	if l.O == nil { // every layout has o_proj; Phi-3 has no q_proj

		return fmt.Errorf("transformer: layer %d was released", l.Index)
	}
	if err := x.check(); err != nil {
		return err
	}
	if x.Dim != l.model.Config.HiddenSize {
		return fmt.Errorf("transformer: layer %d takes %d features, input has %d", l.Index, l.model.Config.HiddenSize, x.Dim)
	}
	return nil
}

// Forward runs the decoder layer on x (not modified) and returns its output:
// h = x + o_proj(attn(input_layernorm(x))); out = h + down(silu(gate(n))·up(n)) with
// n = post_attention_layernorm(h). hook, if not nil, sees the inputs of the linears.
func (l *Layer) Forward(x *Tensor, hook Hook) (*Tensor, error) {
	if l.arch != nil {
		return l.forwardArch(x, hook, "")
	}
	if err := l.checkInput(x); err != nil {
		return nil, err
	}
	out := NewTensor(x.Batch, x.Seq, x.Dim)
	err := chunks(x, func(lo, hi int) error {
		xs := x.Sequences(lo, hi)
		n, _ := l.InputNorm.Forward(xs)
		a, err := l.attention(n, hook)
		if err != nil {
			return err
		}
		h := out.Sequences(lo, hi)
		for i, v := range xs.Data {
			h.Data[i] = v + a.Data[i]
		}
		rmsNorm(n.Data, h.Data, l.PostAttentionNorm.Weight, l.PostAttentionNorm.Eps)
		mo := l.mlp(n, hook)
		addInto(h.Data, mo.Data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Inputs runs l on x far enough for hook to see the input of the group of the linear named
// linear, exactly as Forward reports it; hook may see other groups' inputs too. A
// mixture-of-experts block runs only the expert (or shared expert) that owns linear, none for
// the attention's linears, so that an expert's calibration costs one expert, not the block.
func (l *Layer) Inputs(x *Tensor, linear string, hook Hook) error {
	var err error
	if l.arch != nil {
		_, err = l.forwardArch(x, hook, linear)
	} else {
		_, err = l.Forward(x, hook)
	}
	return err
}

// Attention runs the self-attention block alone on h, the output of input_layernorm,
// and returns the o_proj output (transformers' self_attn module; Gemma's before its
// post_attention_layernorm).
func (l *Layer) Attention(h *Tensor, hook Hook) (*Tensor, error) {
	if err := l.checkInput(h); err != nil {
		return nil, err
	}
	out := NewTensor(h.Batch, h.Seq, h.Dim)
	err := chunks(h, func(lo, hi int) error {
		var a *Tensor
		var err error
		if l.arch != nil {
			a = l.archAttention(h.Sequences(lo, hi), hook)
		} else {
			a, err = l.attention(h.Sequences(lo, hi), hook)
		}
		if err == nil {
			copy(out.Sequences(lo, hi).Data, a.Data)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MLP runs the MLP block alone on h, the output of the norm before it (Gemma's
// pre_feedforward_layernorm, else post_attention_layernorm), and returns the down_proj output
// (Gemma's before its post_feedforward_layernorm), or a mixture-of-experts layer's whole block
// (router, experts, shared expert).
func (l *Layer) MLP(h *Tensor, hook Hook) (*Tensor, error) {
	if err := l.checkInput(h); err != nil {
		return nil, err
	}
	out := NewTensor(h.Batch, h.Seq, h.Dim)
	err := chunks(h, func(lo, hi int) error {
		mlp := l.mlp
		switch {
		case l.arch != nil && l.arch.Router != nil:
			mlp = func(n *Tensor, hook Hook) *Tensor { return l.moe(n, hook, "") }
		case l.arch != nil:
			mlp = l.archMLP
		}
		copy(out.Sequences(lo, hi).Data, mlp(h.Sequences(lo, hi), hook).Data)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (l *Layer) mlp(n *Tensor, hook Hook) *Tensor {
	rows := n.Rows()
	if hook != nil {
		hook(MLPInputs, n)
	}
	g := NewTensor(n.Batch, n.Seq, l.Gate.Out)
	u := NewTensor(n.Batch, n.Seq, l.Up.Out)
	l.Gate.apply(g.Data, n.Data, rows)
	l.Up.apply(u.Data, n.Data, rows)
	siluMul(g.Data, u.Data)
	if hook != nil {
		hook(DownInputs, g)
	}
	d := NewTensor(n.Batch, n.Seq, l.Down.Out)
	l.Down.apply(d.Data, g.Data, rows)
	return d
}

func (l *Layer) attention(n *Tensor, hook Hook) (*Tensor, error) {
	c := l.model.Config
	rows := n.Rows()
	if hook != nil {
		hook(AttentionInputs, n)
	}
	q := NewTensor(n.Batch, n.Seq, l.Q.Out)
	k := NewTensor(n.Batch, n.Seq, l.K.Out)
	v := NewTensor(n.Batch, n.Seq, l.V.Out)
	l.Q.apply(q.Data, n.Data, rows)
	l.K.apply(k.Data, n.Data, rows)
	l.V.apply(v.Data, n.Data, rows)
	hd := c.HeadDim
	l.normRotate(q, k, l.model.rope(n.Seq))
	ctx := NewTensor(n.Batch, n.Seq, l.Q.Out)
	window := 0
	if l.Index < len(c.SlidingWindow) {
		window = c.SlidingWindow[l.Index]
	}
	attend(ctx.Data, q.Data, k.Data, v.Data, n.Batch, n.Seq, c.NumHeads, c.NumKVHeads, hd, window)
	if hook != nil {
		hook(OutputInputs, ctx)
	}
	o := NewTensor(n.Batch, n.Seq, l.O.Out)
	l.O.apply(o.Data, ctx.Data, rows)
	return o, nil
}

// normRotate applies the per-head q/k norms (Qwen3, Gemma 3) and the rotary embedding to
// every row of q and k.
func (l *Layer) normRotate(q, k *Tensor, rope *ropeTable) {
	c := l.model.Config
	hd := c.HeadDim
	rowsParallel(q.Rows(), q.Dim+k.Dim, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			qr, kr := q.Row(r), k.Row(r)
			if l.QNorm != nil {
				for h := 0; h < c.NumHeads; h++ {
					rmsNormRow(qr[h*hd:(h+1)*hd], qr[h*hd:(h+1)*hd], l.QNorm.Weight, l.QNorm.Eps)
				}
				for h := 0; h < c.NumKVHeads; h++ {
					rmsNormRow(kr[h*hd:(h+1)*hd], kr[h*hd:(h+1)*hd], l.KNorm.Weight, l.KNorm.Eps)
				}
			}
			rope.apply(qr, c.NumHeads, hd, r%q.Seq)
			rope.apply(kr, c.NumKVHeads, hd, r%q.Seq)
		}
	})
}
