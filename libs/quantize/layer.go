package quantize

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"quantfleet.dev/libs/awq"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/transformer"
)

// ErrLayerConfig reports an invalid LayerConfig.
var ErrLayerConfig = errors.New("invalid layer quantization config")

// LayerConfig selects how QuantizeLayer quantizes a decoder layer.
type LayerConfig struct {
	// Method is hfquant.GPTQ or hfquant.AWQ.
	Method hfquant.Method
	// RTN rounds every weight to the nearest point of the GPTQ grid without calibration
	// (Method GPTQ only); QuantizeLayer then needs no inputs and returns no outputs.
	RTN bool
	// GPTQ configures GPTQ and RTN. V1Zeros is forced on for asymmetric grids, so that the
	// "gptq" (v1) checkpoint format can store every zero point.
	GPTQ gptq.Config
	// AWQ configures AWQ.
	AWQ awq.Config
	// SeqLen is the tokens per calibration sample (GPTQ): a plan's calibration holds
	// samples × SeqLen tokens, the base of the low-sample fallback (see solveGroup).
	SeqLen int
}

// NewLayerConfig is the one mapping of a job's options to the kernels' configs, for the local
// pipeline and the fleet alike.
func NewLayerConfig(f domain.OutputFormat, bits, groupSize int, o domain.LayerOptions) LayerConfig {
	if f == domain.FormatAWQ {
		ac := DefaultAWQConfig()
		ac.Bits, ac.GroupSize, ac.PlainScaling = bits, groupSize, !o.DuoScaling
		return LayerConfig{Method: hfquant.AWQ, AWQ: ac}
	}
	return LayerConfig{Method: hfquant.GPTQ, RTN: o.RTN, SeqLen: o.SeqLen, GPTQ: gptq.Config{
		Bits: bits, GroupSize: groupSize, Sym: o.Sym, ActOrder: o.ActOrder, StaticGroups: o.StaticGroups, Damp: o.Damp}}
}

func (c LayerConfig) check() error {
	switch c.Method {
	case hfquant.GPTQ:
	case hfquant.AWQ:
		if c.RTN {
			return fmt.Errorf("%w: round-to-nearest is a GPTQ option", ErrLayerConfig)
		}
	default:
		return fmt.Errorf("%w: method %q (want gptq or awq)", ErrLayerConfig, c.Method)
	}
	return nil
}

func (c LayerConfig) gptqConfig() gptq.Config {
	g := c.GPTQ
	if !g.Sym {
		g.V1Zeros = true
	}
	return g
}

// Calibrated reports whether the method needs calibration inputs.
func (c LayerConfig) Calibrated() bool { return !c.RTN }

// LinearStats describes the quantization of one linear (GPTQ).
type LinearStats struct {
	Name string  `json:"name"`
	Damp float64 `json:"damp"` // damp_percent used (raised if Cholesky failed)
	Loss float64 `json:"loss"` // GPTQ objective as the reference reports it
	Dead int     `json:"dead"` // input channels never non-zero in calibration
}

// ScaleStats describes one AWQ scaling group.
type ScaleStats struct {
	Prev    string   `json:"prev"`
	Linears []string `json:"linears"`
	Ratio   float64  `json:"ratio"` // chosen grid exponent
	Loss    float64  `json:"loss"`  // output MSE with the chosen scales
}

// DenseTensor is an unquantized tensor that quantization changed (AWQ folds its scales into
// the norms); it replaces the source tensor of the same name in the checkpoint.
type DenseTensor struct {
	Name  string
	Shape []int64
	Data  []float32
	// DType is the stored type (F16 for AWQ's folded norms, as AutoAWQ stores them).
	DType safetensors.DType
}

// LayerResult is what QuantizeLayer produces for one decoder layer: everything the
// checkpoint needs from the layer, and the next layer's inputs.
type LayerResult struct {
	Index int
	// Outputs are the calibration inputs of the next layer: for GPTQ the outputs of the
	// quantized layer (quantization error propagates, as in the reference), for AWQ the
	// outputs of the full-precision layer (as AutoAWQ and llm-awq). Nil for RTN.
	Outputs *transformer.Tensor
	// Linears are the quantized linears, named "model.layers.<i>.self_attn.q_proj" etc.
	Linears []*hfquant.Linear
	// Tensors are the dense tensors the quantization changed.
	Tensors []DenseTensor
	// Stats per linear (GPTQ) and per scaling group (AWQ).
	Stats  []LinearStats
	Scales []ScaleStats
	// Damp is the largest damp_percent used in the layer (GPTQ).
	Damp float64
}

// Names returns the names of the source tensors the result replaces (quantized weights and
// their biases, changed dense tensors): the checkpoint copies every other source tensor.
func (r *LayerResult) Names() []string {
	var names []string
	for _, l := range r.Linears {
		names = append(names, l.Name+".weight", l.Name+".bias")
	}
	for _, t := range r.Tensors {
		names = append(names, t.Name)
	}
	return names
}

// QuantizeLayer quantizes decoder layer l on its calibration inputs (Batch sequences × Seq
// positions × hidden, the previous layer's Outputs or the embeddings for layer 0).
//
// It is the whole-layer unit of the sharded pipeline (RTN and AWQ layer tasks) and, for GPTQ,
// the sharded pipeline's stage run in memory on shards of DefaultShardSamples sequences (the
// same steps as RunShardTask's Hessian, solve and forward tasks). The result depends only on l,
// inputs and cfg, bit for bit, whatever the number of threads.
//
// GPTQ quantizes true-sequentially inside the layer (notes §1.8): q, k, v on the input
// norm's output, then o_proj on the attention output of the quantized q/k/v, then gate and
// up on the post-attention norm's output, then down_proj; each subset's Hessian comes from
// the layer with the earlier subsets already quantized. AWQ (notes §2.2-2.6) captures every
// linear's input from the full-precision layer, searches the scales of the layout's groups
// (awqScaling; Llama: input norm → q,k,v; v → o when v_proj and o_proj have the same shape;
// post-attention norm → gate,up; up → down), folds them in, searches clipping and quantizes.
//
// The weights of l are modified: GPTQ replaces each linear by its dequantized value, AWQ
// scales and clips them. Inputs are not modified. Calibration batches are processed a few
// sequences at a time, so memory stays near the layer, the inputs and the outputs (AWQ also
// keeps the inputs of every linear, as its searches need them all).
func QuantizeLayer(ctx context.Context, l *transformer.Layer, inputs *transformer.Tensor, cfg LayerConfig) (*LayerResult, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if l == nil || len(l.Linears()) == 0 {
		return nil, fmt.Errorf("%w: no layer weights", ErrLayerConfig)
	}
	res := &LayerResult{Index: l.Index}
	if cfg.RTN {
		if err := rtnLayer(ctx, l, cfg.gptqConfig(), res); err != nil {
			return nil, err
		}
		return res, nil
	}
	hidden := l.Linears()[0].In
	if inputs == nil || inputs.Rows() == 0 || inputs.Dim != hidden || len(inputs.Data) != inputs.Rows()*inputs.Dim {
		return nil, fmt.Errorf("%w: layer %d needs calibration inputs of %d features", ErrLayerConfig, l.Index, hidden)
	}
	if cfg.Method == hfquant.AWQ && l.Config() != nil {
		if err := l.Config().CheckAWQ(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLayerConfig, err)
		}
	}
	var err error
	if cfg.Method == hfquant.GPTQ {
		err = gptqLayer(ctx, l, inputs, cfg.gptqConfig(), res)
	} else {
		err = awqLayer(ctx, l, inputs, cfg.AWQ, res)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", l.Index, err)
	}
	return res, nil
}

func layerPrefix(i int) string { return fmt.Sprintf("model.layers.%d.", i) }

// WriteLayer adds a layer's quantized linears and changed dense tensors to a checkpoint.
func WriteLayer(w *hfquant.Writer, r *LayerResult) error {
	for _, l := range r.Linears {
		if err := w.AddLinear(l); err != nil {
			return err
		}
	}
	for _, t := range r.Tensors {
		if err := w.AddFloat32(t.Name, t.DType, t.Shape, t.Data); err != nil {
			return err
		}
	}
	return nil
}

// CheckpointOptions returns the checkpoint settings for layers quantized with cfg.
// config.json's dtype becomes float16 where the loaders' kernels need half precision
// activations: AWQ, and GPTQ other than symmetric 4 or 8 bits (vLLM's exllama path).
func CheckpointOptions(cfg LayerConfig, sourceDir string) hfquant.Options {
	if cfg.Method == hfquant.AWQ {
		gs := cfg.AWQ.GroupSize
		if gs == 0 {
			gs = awq.DefaultGroupSize
		}
		bits := cfg.AWQ.Bits
		if bits == 0 {
			bits = awq.DefaultBits
		}
		return hfquant.Options{Method: hfquant.AWQ, Bits: bits, GroupSize: gs, SourceDir: sourceDir, DType: "float16", Quantizer: Quantizer}
	}
	g := cfg.GPTQ
	damp := g.Damp
	if damp == 0 {
		damp = gptq.DefaultDamp
	}
	o := hfquant.Options{
		Method: hfquant.GPTQ, Bits: g.Bits, GroupSize: g.GroupSize, Sym: g.Sym, DescAct: g.ActOrder && !cfg.RTN,
		DampPercent: damp, TrueSequential: true, StaticGroups: g.StaticGroups, SourceDir: sourceDir, Quantizer: Quantizer,
	}
	if !g.Sym || (g.Bits != 4 && g.Bits != 8) {
		o.DType = "float16"
	}
	return o
}

// Quantizer names this tool in checkpoint metadata.
const Quantizer = "quantfleet:0.1.0"

// chunkRows bounds the rows (tokens) of the calibration batch processed at once.
const chunkRows = 4096

// eachChunk calls f on groups of whole sequences of x of about chunkRows rows; off is the
// offset of the group in x.Data.
func eachChunk(ctx context.Context, x *transformer.Tensor, f func(off int, xs *transformer.Tensor) error) error {
	per := max(1, chunkRows/max(1, x.Seq))
	for lo := 0; lo < x.Batch; lo += per {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f(lo*x.Seq*x.Dim, x.Sequences(lo, min(x.Batch, lo+per))); err != nil {
			return err
		}
	}
	return nil
}

func rtnLayer(ctx context.Context, l *transformer.Layer, cfg gptq.Config, res *LayerResult) error {
	prefix := layerPrefix(l.Index)
	for _, lin := range l.Linears() {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := gptq.RTN(lin.Weight, lin.Out, lin.In, cfg)
		if err != nil {
			return fmt.Errorf("layer %d %s: %w", l.Index, lin.Name, err)
		}
		lin.Weight = r.Reconstruct()
		res.Linears = append(res.Linears, gptqLinear(prefix+lin.Name, r, lin.Bias))
	}
	return nil
}

func gptqLinear(name string, r *gptq.Result, bias []float32) *hfquant.Linear {
	return &hfquant.Linear{Name: name, Rows: r.Rows, Cols: r.Cols, Bits: r.Bits, GroupSize: r.GroupSize,
		QWeight: r.QWeight, Scales: r.Scales, Zeros: r.Zeros, GIdx: r.GIdx, Bias: bias}
}

// gptqLayer runs the true-sequential stage of notes §1.8 in process with the sharded
// pipeline's own steps (CPU.GroupHessian per shard, merge in shard order, solveGroup,
// replaceSolved, CPU.Forward per shard), on shards of DefaultShardSamples sequences: the layer a
// sharded job with the default shard size computes.
func gptqLayer(ctx context.Context, l *transformer.Layer, x *transformer.Tensor, cfg gptq.Config, res *LayerResult) error {
	var c LayerCompute = CPU{}
	var shards []*transformer.Tensor
	for _, r := range ShardRanges(x.Batch, DefaultShardSamples) {
		shards = append(shards, x.Sequences(r.Lo, r.Hi))
	}
	stage := GPTQStage()
	if c := l.Config(); c != nil {
		stage = StageOf(c)
	}
	for _, group := range stage.Groups {
		var h *gptq.Hessian
		for _, xs := range shards {
			p, err := c.GroupHessian(ctx, l, group, xs)
			if err != nil {
				return err
			}
			if h == nil {
				h = p
			} else if err := h.Merge(p); err != nil {
				return err
			}
		}
		r, err := solveGroup(ctx, c, l, group, h, cfg, int64(x.Rows()))
		if err != nil {
			return err
		}
		if err := replaceSolved(l, r); err != nil {
			return err
		}
		res.Linears = append(res.Linears, r.Linears...)
		res.Stats = append(res.Stats, r.Stats...)
		res.Damp = max(res.Damp, r.Damp)
	}
	// The quantized layer's outputs feed the next layer.
	out := transformer.NewTensor(x.Batch, x.Seq, x.Dim)
	off := 0
	for _, xs := range shards {
		y, err := c.Forward(ctx, l, xs)
		if err != nil {
			return err
		}
		off += copy(out.Data[off:], y.Data)
	}
	res.Outputs = out
	return nil
}

// awqLayer runs AWQ on one layer (notes §2.6): capture, search, fold, clip, quantize; the
// one-shard case of the sharded AWQ tasks (awqShardLayer, awq's shard API, awqResult).
func awqLayer(ctx context.Context, l *transformer.Layer, x *transformer.Tensor, cfg awq.Config, res *LayerResult) error {
	al, out, err := awqShardLayer(ctx, l, x)
	if err != nil {
		return err
	}
	r, err := awq.QuantizeLayer(ctx, al, cfg)
	if err != nil {
		return err
	}
	awqResult(l, al, r, res)
	res.Outputs = out
	return nil
}

// awqShardLayer describes l to package awq. With x (a shard of the layer's inputs, or all of
// them) it runs the full-precision layer on x, keeping the input of every linear group (and of
// a mixture-of-experts block), and returns the layer's outputs too (the next layer's inputs, as
// AutoAWQ propagates them); without x it describes the weights and groups only
// (awq.FinishLayer). The awq.Layer's weights are l's: awq.FinishLayer changes l.
func awqShardLayer(ctx context.Context, l *transformer.Layer, x *transformer.Tensor) (*awq.Layer, *transformer.Tensor, error) {
	if l.Config() == nil {
		return nil, nil, fmt.Errorf("%w: AWQ needs a layer loaded from a model (its layout)", ErrLayerConfig)
	}
	groups := l.Config().LinearGroups()
	var captured map[string]*transformer.Tensor
	var out *transformer.Tensor
	al := &awq.Layer{Linears: map[string]*awq.Linear{}, Inputs: map[string][]float32{}, Rows: map[string]int{},
		Norms: map[string]*awq.Norm{}, Dense: map[string]*awq.Linear{}}
	if x != nil {
		var err error
		if captured, out, err = awqCapture(ctx, l, x); err != nil {
			return nil, nil, err
		}
		if err := awqSetInputs(al, captured, groups, x.Rows()); err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", l.Index, err)
		}
	}
	for _, lin := range l.Linears() {
		al.Linears[lin.Name] = awqLinear(lin)
	}
	for _, sg := range awqScaling(l, groups) {
		lg := awq.LayerGroup{Prev: sg.prev, Linears: sg.linears, Input: sg.input}
		if n := l.Norm(sg.prev); n != nil {
			al.Norms[n.Name] = &awq.Norm{Weight: n.Weight}
		}
		for _, d := range sg.dense {
			al.Dense[d.Name] = awqLinear(d)
			lg.Dense = append(lg.Dense, d.Name)
		}
		if sg.block != nil && x != nil {
			lg.Inspect = awqInspect(l, sg.linears, captured[cmp.Or(sg.input, sg.linears[0])], sg.block)
		}
		al.Groups = append(al.Groups, lg)
	}
	return al, out, nil
}

// awqSetInputs gives al the captured inputs of a shard of tokens: every captured input under
// its name, and every linear its group's input, with its row count when it is not one row per
// token (an expert's: the tokens routed to it).
func awqSetInputs(al *awq.Layer, captured map[string]*transformer.Tensor, groups []transformer.LinearGroup, tokens int) error {
	al.Tokens = tokens
	for name, t := range captured {
		al.Inputs[name] = t.Data
	}
	for _, g := range groups {
		in := captured[g.Linears[0]]
		if in == nil {
			return fmt.Errorf("awq: the forward pass never fed %s", g.Linears[0])
		}
		for _, name := range g.Linears {
			al.Inputs[name] = in.Data
			if in.Rows() != tokens {
				al.Rows[name] = in.Rows()
			}
		}
	}
	return nil
}

// awqLinear is lin for package awq, sharing its weights.
func awqLinear(lin *transformer.Linear) *awq.Linear {
	return &awq.Linear{Name: lin.Name, Rows: lin.Out, Cols: lin.In, Weight: lin.Weight, Bias: lin.Bias}
}

// awqCapture runs the full-precision layer l on x and returns every input its hook reported
// (under the first name reported with it: a linear group's first linear, or a
// mixture-of-experts block), with the layer's outputs. An input of every token keeps x's
// sequences (the attention block needs them); an expert's is one sequence of its routed tokens.
func awqCapture(ctx context.Context, l *transformer.Layer, x *transformer.Tensor) (map[string]*transformer.Tensor, *transformer.Tensor, error) {
	captured := map[string]*transformer.Tensor{}
	out := transformer.NewTensor(x.Batch, x.Seq, x.Dim)
	err := eachChunk(ctx, x, func(off int, xs *transformer.Tensor) error {
		y, err := l.Forward(xs, func(linears []string, in *transformer.Tensor) {
			t := captured[linears[0]]
			if t == nil {
				t = &transformer.Tensor{Dim: in.Dim}
				if in.Rows() == xs.Rows() { // an input of every token: its final size
					t.Data = make([]float32, 0, x.Rows()*in.Dim)
				}
				captured[linears[0]] = t
			}
			t.Data = append(t.Data, in.Data...)
		})
		if err != nil {
			return err
		}
		copy(out.Data[off:], y.Data)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, t := range captured {
		t.Batch, t.Seq = x.Batch, x.Seq
		if len(t.Data) != x.Rows()*t.Dim {
			t.Batch, t.Seq = 1, len(t.Data)/t.Dim
		}
	}
	return captured, out, nil
}

// awqScale is one scaling group of a layer: prev (a norm or a linear of the layer) absorbs 1/s,
// the linears are scaled by s, and block (AutoAWQ's module2inspect), if not nil, is the module
// whose output the scale search compares, on the group's input (input: a captured input's name,
// "" for linears[0]'s); nil compares the single linear's. dense are unquantized linears that read
// the same input (a router): they are scaled by s too.
type awqScale struct {
	prev    string
	linears []string
	input   string
	dense   []*transformer.Linear
	block   func(*transformer.Tensor, transformer.Hook) (*transformer.Tensor, error)
}

// awqScaling is AutoAWQ's get_layers_for_scaling for l's layout, from its linear groups
// (attention input; o_proj; then per MLP or expert its input and its down_proj), the same for
// the Llama layout, Gemma 2, Phi-3, Mixtral and Qwen3-MoE (llama.py, gemma2.py, phi3.py,
// mixtral.py, qwen3_moe.py):
//   - input_layernorm → the attention's input linears (q, k, v or Phi-3's fused qkv_proj),
//     inspecting the attention block;
//   - the linear that produces v (v_proj, or qkv_proj whose last rows are v) → o_proj, when the
//     value rows are o_proj's inputs one to one and o_proj is square (AutoAWQ's shape test;
//     phi3.py adds this group unconditionally, which with grouped-query attention would divide
//     k rows, so it is skipped there too);
//   - the norm before the MLP (Gemma's pre_feedforward_layernorm, else
//     post_attention_layernorm) → gate and up (or Phi-3's fused gate_up_proj), inspecting the
//     MLP; in a mixture-of-experts layer every expert's gate and up at once, on the block's input,
//     inspecting the whole block. AutoAWQ leaves the router out, so that its input is divided by
//     the scales while its weight is not, and routing changes; here the router's columns absorb
//     the scales too (it stays unquantized), so the layer computes what it did;
//   - the linear that produces up (up_proj, or gate_up_proj whose last rows are up) → down_proj,
//     per expert on the tokens routed to it.
func awqScaling(l *transformer.Layer, groups []transformer.LinearGroup) []awqScale {
	c := l.Config()
	attn, o, mlps := groups[0].Linears, groups[1].Linears, groups[2:]
	mlpNorm := "post_attention_layernorm"
	if c.Gemma {
		mlpNorm = "pre_feedforward_layernorm"
	}
	out := []awqScale{{prev: "input_layernorm", linears: attn, block: l.Attention}}
	if c.NumKVHeads*c.HeadDim == l.O.In && l.O.In == l.O.Out {
		out = append(out, awqScale{prev: attn[len(attn)-1], linears: o})
	}
	in := awqScale{prev: mlpNorm, input: c.MoEBlock(), block: l.MLP}
	if r := l.Router(); r != nil {
		in.dense = []*transformer.Linear{r}
	}
	var downs []awqScale
	for i := 0; i+1 < len(mlps); i += 2 { // an MLP's (or expert's) gate/up, then its down
		up := mlps[i].Linears
		in.linears = append(in.linears, up...)
		downs = append(downs, awqScale{prev: up[len(up)-1], linears: mlps[i+1].Linears})
	}
	return append(append(out, in), downs...)
}

// awqInspect is the awq.InspectFunc of block on in: block run with the named linears' weights
// substituted.
func awqInspect(l *transformer.Layer, names []string, in *transformer.Tensor, block func(*transformer.Tensor, transformer.Hook) (*transformer.Tensor, error)) awq.InspectFunc {
	lins := make([]*transformer.Linear, len(names))
	for i, name := range names {
		lins[i] = l.Linear(name)
	}
	return func(ctx context.Context, weights [][]float32) ([]float32, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		saved := make([][]float32, len(lins))
		for i, lin := range lins {
			saved[i], lin.Weight = lin.Weight, weights[i]
		}
		defer func() {
			for i, lin := range lins {
				lin.Weight = saved[i]
			}
		}()
		y, err := block(in, nil)
		if err != nil {
			return nil, err
		}
		return y.Data, nil
	}
}

// awqResult fills res from AWQ's result on l (described by al): the quantized linears, the
// chosen scales and the folded norms.
func awqResult(l *transformer.Layer, al *awq.Layer, r *awq.LayerResult, res *LayerResult) {
	prefix := layerPrefix(l.Index)
	for _, lin := range l.Linears() {
		q := r.Quantized[lin.Name]
		res.Linears = append(res.Linears, &hfquant.Linear{Name: prefix + lin.Name, Rows: q.Rows, Cols: q.Cols, Bits: q.Bits,
			GroupSize: q.GroupSize, QWeight: q.QWeight, Scales: q.Scales, Zeros: q.Zeros, Bias: al.Linears[lin.Name].Bias})
	}
	for i, g := range al.Groups {
		s := r.Scales[i]
		res.Scales = append(res.Scales, ScaleStats{Prev: g.Prev, Linears: g.Linears, Ratio: s.Ratio, Loss: s.Loss})
	}
	res.Tensors = append(res.Tensors, awqNorms(l, al)...)
	for _, g := range al.Groups {
		for _, name := range g.Dense { // a router that absorbed scales, left unquantized
			d := al.Dense[name]
			res.Tensors = append(res.Tensors, DenseTensor{Name: prefix + name + ".weight", Shape: []int64{int64(d.Rows), int64(d.Cols)},
				Data: d.Weight, DType: safetensors.F16})
		}
	}
}

// awqNorms are the norms of l that absorbed scales (the groups' prev norms of al), as the
// checkpoint stores them: in float16, Gemma's as w with the factor 1+w.
func awqNorms(l *transformer.Layer, al *awq.Layer) []DenseTensor {
	var out []DenseTensor
	for _, g := range al.Groups {
		n, ok := al.Norms[g.Prev]
		if !ok {
			continue
		}
		w := n.Weight
		if l.Config().Gemma {
			// Gemma's norms multiply by 1+w and hold 1+w in memory (transformer): the folded
			// factor (1+w)/s is stored as (1+w)/s − 1, as AutoAWQ's scale_ln_fcs does.
			w = make([]float32, len(n.Weight))
			for i, v := range n.Weight {
				w[i] = v - 1
			}
		}
		out = append(out, DenseTensor{Name: layerPrefix(l.Index) + g.Prev + ".weight", Shape: []int64{int64(len(w))}, Data: w, DType: safetensors.F16})
	}
	return out
}
