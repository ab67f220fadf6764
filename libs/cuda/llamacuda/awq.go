package llamacuda

import (
	"context"
	"fmt"

	"quantfleet.dev/libs/awq"
	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/transformer"
)

var _ quantize.AWQCompute = (*Compute)(nil)

// lossBlocks is the fixed grid of sq_diff_sum: each candidate's loss is the sum, in block
// order, of lossBlocks float64 partials, so it does not depend on how the outputs are chunked.
const lossBlocks = 512

// AWQLayer implements quantize.AWQCompute on the GPU. The description of l (linears, norms,
// groups) is the CPU's; with the shard x, the layer and x are uploaded once, the
// full-precision forward pass keeps every linear group's input on the device, and the
// awq.Layer's Arithmetic computes the steps' sums there: channel sums of |x|, the scale
// grid's losses (weights scaled and pseudo-quantized by a kernel that rounds as libs/awq's
// quantizer, the compared module run with cuBLAS and the layer kernels, squared errors reduced
// on the device, one download per group), and the clipping search's Gram matrices (cuBLAS).
// The device is held until release. With x nil only SearchClip runs on the GPU (FinishLayer's
// clipping search, the device held per linear).
func (c *Compute) AWQLayer(ctx context.Context, l *transformer.Layer, x *transformer.Tensor, outputs bool) (*awq.Layer, *transformer.Tensor, func(), error) {
	al, _, _, err := quantize.CPU{}.AWQLayer(ctx, l, nil, false)
	if err != nil {
		return nil, nil, nil, err
	}
	if x == nil {
		al.Arithmetic = &awqArith{c: c}
		return al, nil, func() {}, nil
	}
	release, err := acquire(ctx, c.D)
	if err != nil {
		return nil, nil, nil, err
	}
	a := &awqArith{c: c, held: true, groups: al.Groups, inputs: map[string]*Tensor{}}
	out, err := a.capture(ctx, l, x, outputs)
	if err != nil {
		a.close()
		release()
		return nil, nil, nil, fmt.Errorf("layer %d: %w", l.Index, err)
	}
	al.Tokens, al.Arithmetic = x.Rows(), a
	return al, out, func() { a.close(); release() }, nil
}

// awqArith is awq.Arithmetic on the device: the layer, the captured input of each linear group
// (keyed by the group's first linear, transformer.AttentionInputs[0] …) and two tokens×hidden
// scratch tensors for the compared modules' outputs.
type awqArith struct {
	c      *Compute
	held   bool // the task holds the device (AWQLayer with a shard)
	g      *Layer
	groups []awq.LayerGroup
	inputs map[string]*Tensor
	y0, y  *Tensor
}

var _ awq.Arithmetic = (*awqArith)(nil)

func (a *awqArith) close() {
	for _, t := range a.inputs {
		t.Free()
	}
	a.y0.Free()
	a.y.Free()
	if a.g != nil {
		a.g.Close()
	}
}

// awqInputs are the linear groups whose input AWQ keeps (their first linear names it).
var awqInputs = [][]string{transformer.AttentionInputs, transformer.OutputInputs, transformer.MLPInputs, transformer.DownInputs}

// inputOf returns the captured input the named linear reads.
func (a *awqArith) inputOf(linear string) (*Tensor, error) {
	for _, g := range awqInputs {
		for _, name := range g {
			if name == linear && a.inputs[g[0]] != nil {
				return a.inputs[g[0]], nil
			}
		}
	}
	return nil, fmt.Errorf("%w: no captured input for %q", ErrShape, linear)
}

// capture uploads l and x, runs the full-precision layer keeping every group's input, and
// returns its outputs on the host when outputs is set.
func (a *awqArith) capture(ctx context.Context, l *transformer.Layer, x *transformer.Tensor, outputs bool) (*transformer.Tensor, error) {
	c := a.c
	g, xd, err := c.uploadChecked(ctx, l, x, func() error { return checkAWQMemory(ctx, c.D, l, x.Batch, x.Seq) })
	if err != nil {
		return nil, err
	}
	a.g = g
	// x's buffer becomes y0 after the capture; the outputs' buffer y.
	a.y0 = xd
	if a.y, err = NewTensor(ctx, c.D, x.Batch, x.Seq, x.Dim); err != nil {
		return nil, err
	}
	if err := a.run(ctx, l, xd, a.y); err != nil {
		return nil, err
	}
	if !outputs {
		return nil, nil
	}
	return a.y.Download(ctx)
}

// run runs the uploaded layer a.g on x into out, keeping every group's input in a.inputs.
func (a *awqArith) run(ctx context.Context, l *transformer.Layer, x, out *Tensor) error {
	filled := map[string]int{}
	for _, names := range awqInputs {
		lin := l.Linear(names[0])
		if lin == nil {
			return fmt.Errorf("%w: layer %d has no linear %s", ErrShape, l.Index, names[0])
		}
		t, err := NewTensor(ctx, a.c.D, x.Batch, x.Seq, lin.In)
		if err != nil {
			return err
		}
		a.inputs[names[0]] = t
	}
	// The chunks come in sequence order: each group's input is appended where the last ended.
	keep := func(ctx context.Context, linears []string, in *Tensor) error {
		t := a.inputs[linears[0]]
		n := 4 * in.Rows() * in.Dim
		if t == nil || in.Dim != t.Dim || filled[linears[0]]+n > 4*t.Rows()*t.Dim {
			return fmt.Errorf("%w: unexpected input of %s", ErrShape, linears[0])
		}
		if err := cuda.Copy(ctx, t.buf, t.off+filled[linears[0]], in.buf, in.off, n); err != nil {
			return err
		}
		filled[linears[0]] += n
		return nil
	}
	if err := a.g.forward(ctx, x, out, stages{attention: true, mlp: true}, keep); err != nil {
		return err
	}
	for name, t := range a.inputs {
		if filled[name] != 4*t.Rows()*t.Dim {
			return fmt.Errorf("%w: captured %d of %d input bytes of %s", ErrShape, filled[name], 4*t.Rows()*t.Dim, name)
		}
	}
	return nil
}

var _ quantize.AWQStager = (*Compute)(nil)

// StageAWQ implements quantize.AWQStager: x goes to the device once, and each layer's
// full-precision outputs, which its capture computes anyway, stay there as the next layer's
// inputs. The stage holds the device until Close.
func (c *Compute) StageAWQ(ctx context.Context, l *transformer.Layer, x *transformer.Tensor) (quantize.AWQStage, error) {
	if l.Config() == nil || l.Q == nil || x == nil || x.Rows() == 0 || x.Dim != l.Q.In {
		return nil, fmt.Errorf("%w: an AWQ stage needs a Llama-layout layer and a shard of its hidden size", ErrShape)
	}
	release, err := acquire(ctx, c.D)
	if err != nil {
		return nil, err
	}
	free, _, err := c.D.MemInfo(ctx)
	if err == nil && exceeds(4*int64(x.Rows())*int64(x.Dim)+awqNeedBytes(l, x.Batch, x.Seq), free) {
		err = fmt.Errorf("%w: AWQ on %d×%d tokens kept on %s", quantize.ErrStageMemory, x.Batch, x.Seq, c.D.Name())
	}
	var xd *Tensor
	if err == nil {
		xd, err = UploadTensor(ctx, c.D, x)
	}
	if err != nil {
		release()
		return nil, err
	}
	return &awqStage{c: c, release: release, x: xd}, nil
}

// awqStage is a quantize.AWQStage on one device: x holds the activations entering the next
// layer.
type awqStage struct {
	c       *Compute
	release func()
	x       *Tensor
}

// Layer implements quantize.AWQStage: Compute.AWQLayer's capture on the staged activations,
// whose buffer then serves as y0; the outputs go to a tensor of their own that becomes the
// stage's activations on release.
func (s *awqStage) Layer(ctx context.Context, l *transformer.Layer, next bool) (*awq.Layer, func(), error) {
	x := s.x
	if x == nil {
		return nil, nil, fmt.Errorf("%w: the AWQ stage holds no activations", ErrShape)
	}
	if l.Config() == nil || l.Q == nil || x.Dim != l.Q.In {
		return nil, nil, fmt.Errorf("%w: layer %d does not take the stage's %d features", ErrShape, l.Index, x.Dim)
	}
	al, _, _, err := quantize.CPU{}.AWQLayer(ctx, l, nil, false)
	if err != nil {
		return nil, nil, err
	}
	c := s.c
	if err := checkAWQMemory(ctx, c.D, l, x.Batch, x.Seq); err != nil {
		return nil, nil, err
	}
	// The activations are a's from here: y0 once the capture has read them.
	s.x = nil
	a := &awqArith{c: c, held: true, groups: al.Groups, inputs: map[string]*Tensor{}, y0: x}
	var out *Tensor
	fail := func(err error) (*awq.Layer, func(), error) {
		if out != a.y {
			out.Free()
		}
		a.close()
		return nil, nil, fmt.Errorf("layer %d: %w", l.Index, err)
	}
	if a.g, err = UploadLayer(ctx, c.D, l.Config(), l); err != nil {
		return fail(err)
	}
	if err := c.Options.use(ctx, a.g); err != nil {
		return fail(err)
	}
	if a.y, err = NewTensor(ctx, c.D, x.Batch, x.Seq, x.Dim); err != nil {
		return fail(err)
	}
	out = a.y
	if next {
		if out, err = NewTensor(ctx, c.D, x.Batch, x.Seq, x.Dim); err != nil {
			return fail(err)
		}
	}
	if err := a.run(ctx, l, x, out); err != nil {
		return fail(err)
	}
	al.Tokens, al.Arithmetic = x.Rows(), a
	return al, func() {
		a.close()
		if next {
			s.x = out
		}
	}, nil
}

// Close implements quantize.AWQStage.
func (s *awqStage) Close() {
	s.x.Free()
	s.x = nil
	if s.release != nil {
		s.release()
		s.release = nil
	}
}

// checkAWQMemory fails with one line wrapping ErrMemory when an AWQ task on batch×seq tokens
// of l would not fit in d's free memory: the weights, the shard and the outputs (reused for
// the compared modules' outputs), every group's captured input, one chunk's intermediates,
// a group's candidate weights, gramLosses' matrices and the rope tables.
func checkAWQMemory(ctx context.Context, d *cuda.Device, l *transformer.Layer, batch, seq int) error {
	free, _, err := d.MemInfo(ctx)
	if err != nil {
		return err
	}
	need := awqNeedBytes(l, batch, seq)
	if exceeds(need, free) {
		return fmt.Errorf("%w: AWQ on layer %d with %d×%d calibration tokens needs about %.1f GiB, %s has %.1f GiB free",
			ErrMemory, l.Index, batch, seq, gib(need), d.Name(), gib(free))
	}
	return nil
}

func awqNeedBytes(l *transformer.Layer, batch, seq int) int64 {
	var weights int64
	for _, lin := range l.Linears() {
		weights += 4 * int64(len(lin.Weight)+len(lin.Bias))
	}
	for _, n := range []*transformer.Norm{l.InputNorm, l.PostAttentionNorm, l.QNorm, l.KNorm} {
		if n != nil {
			weights += 4 * int64(len(n.Weight))
		}
	}
	cand := 4 * max(int64(len(l.Q.Weight)+len(l.K.Weight)+len(l.V.Weight)), int64(len(l.Gate.Weight)+len(l.Up.Weight)),
		int64(len(l.O.Weight)), int64(len(l.Down.Weight)))
	tokens, hid := int64(batch)*int64(seq), int64(l.Q.In)
	act := 4 * tokens * (2*hid + hid + int64(l.O.In) + hid + int64(l.Down.In))
	ws := chunkBytes(int64(l.Q.In), int64(l.Q.Out), int64(l.K.Out), int64(l.Gate.Out), layerHeads(l), batch, seq)
	// Options.AWQHalf's rounded copies of a chunk's input, of the weights and of a group's
	// candidate weights
	rows := int64(min(batch, max(1, chunkRows/seq)) * seq)
	half := 2*rows*int64(max(l.Q.In, l.Down.In)) + (weights+cand)/2
	// gramLosses' G, W − Ŵ and (W − Ŵ)·G for o_proj or down_proj
	gram := int64(0)
	for _, lin := range []*transformer.Linear{l.O, l.Down} {
		gram = max(gram, 4*(int64(lin.In)*int64(lin.In)+2*int64(len(lin.Weight))))
	}
	return weights + cand + act + ws + half + gram + 4*int64(seq)*hid
}

// AbsSums implements awq.Arithmetic: libs/awq's sumAbs on the device (same order, same bits).
func (a *awqArith) AbsSums(ctx context.Context, group int) ([]float64, error) {
	in, err := a.groupInput(group)
	if err != nil {
		return nil, err
	}
	sums, err := cuda.Alloc[float64](ctx, a.c.D, in.Dim)
	if err != nil {
		return nil, err
	}
	defer sums.Free()
	k := a.g.k
	if err := k.absSumCols.Launch(ctx, cuda.Dim3{X: (in.Dim + threads - 1) / threads}, cuda.Dim3{X: threads}, 0,
		sums, in.Ptr(), int64(in.Rows()), int32(in.Dim)); err != nil {
		return nil, err
	}
	out := make([]float64, in.Dim)
	return out, cuda.Download(ctx, out, sums, 0)
}

func (a *awqArith) groupInput(group int) (*Tensor, error) {
	if a.g == nil {
		return nil, fmt.Errorf("%w: AWQ arithmetic without a shard", ErrShape)
	}
	if group < 0 || group >= len(a.groups) || len(a.groups[group].Linears) == 0 {
		return nil, fmt.Errorf("%w: AWQ group %d of %d", ErrShape, group, len(a.groups))
	}
	return a.inputOf(a.groups[group].Linears[0])
}

// Losses implements awq.Arithmetic: per candidate, the group's weights scaled and
// pseudo-quantized on the device, the compared module run on the group's input, and the
// squared differences with the original weights' output summed into lossBlocks partials per
// candidate, downloaded once.
func (a *awqArith) Losses(ctx context.Context, group int, cands [][]float32, cfg awq.Config) ([]float64, int64, error) {
	in, err := a.groupInput(group)
	if err != nil {
		return nil, 0, err
	}
	lins := make([]*linear, len(a.groups[group].Linears))
	for i, name := range a.groups[group].Linears {
		if lins[i] = a.g.linear(name); lins[i] == nil || lins[i].in != in.Dim {
			return nil, 0, fmt.Errorf("%w: group %d's linear %q does not read its %d-feature input", ErrShape, group, name, in.Dim)
		}
	}
	cols, k := in.Dim, a.g.k
	gs := groupSize(cfg, cols)
	if gs <= 0 || cols%gs != 0 {
		return nil, 0, fmt.Errorf("%w: group size %d for %d columns", ErrShape, gs, cols)
	}
	d := a.c.D
	flat := make([]float32, 0, len(cands)*cols)
	for _, s := range cands {
		if len(s) != cols {
			return nil, 0, fmt.Errorf("%w: %d scales for %d columns", ErrShape, len(s), cols)
		}
		flat = append(flat, s...)
	}
	scales, err := cuda.Alloc[float32](ctx, d, len(flat))
	if err != nil {
		return nil, 0, err
	}
	defer scales.Free()
	if err := cuda.Upload(ctx, scales, 0, flat); err != nil {
		return nil, 0, err
	}
	qw := make([]*cuda.Buffer, len(lins))
	defer func() {
		for _, b := range qw {
			b.Free()
		}
	}()
	for i, lin := range lins {
		if qw[i], err = cuda.Alloc[float32](ctx, d, lin.out*lin.in); err != nil {
			return nil, 0, err
		}
	}
	part, err := cuda.Alloc[float64](ctx, d, len(cands)*lossBlocks)
	if err != nil {
		return nil, 0, err
	}
	defer part.Free()
	if err := part.Zero(ctx, 0, part.Size()); err != nil {
		return nil, 0, err
	}
	first := a.groups[group].Linears[0]
	module, err := a.module(first)
	if err != nil {
		return nil, 0, err
	}
	maxInt, eps := awq.QuantizerConstants(cfg.Bits)
	quant := func(c int) error {
		s := scales.Ptr().Add(4 * c * cols)
		for i, lin := range lins {
			warps := lin.out * (cols / gs)
			if err := k.scaledQuant.Launch(ctx, cuda.Dim3{X: min((warps+7)/8, 8192)}, cuda.Dim3{X: threads}, 0,
				qw[i], lin.w, s, int32(lin.out), int32(cols), int32(gs), maxInt, eps); err != nil {
				return err
			}
		}
		return nil
	}
	n := int64(in.Rows()) * int64(a.g.q.in)
	if module != nil {
		if len(lins) != 1 || lins[0] != module || module.out != a.g.q.in {
			return nil, 0, fmt.Errorf("%w: group %d is not its module %s alone", ErrShape, group, module.name)
		}
		err = a.gramLosses(ctx, module, in, quant, qw[0], len(cands), part)
	} else {
		err = a.blockLosses(ctx, first, lins, in, quant, qw, len(cands), part)
	}
	if err != nil {
		return nil, 0, err
	}
	parts := make([]float64, len(cands)*lossBlocks)
	if err := cuda.Download(ctx, parts, part, 0); err != nil {
		return nil, 0, err
	}
	sums := make([]float64, len(cands))
	for c := range sums {
		for _, v := range parts[c*lossBlocks : (c+1)*lossBlocks] {
			sums[c] += v
		}
	}
	return sums, n, nil
}

// blockLosses is Losses for a group compared through a block (the attention for q/k/v, the
// MLP for gate/up): the block run on the whole input into y0 with the original weights and, per
// candidate c, with lins' weights replaced by quant(c)'s qw into y, its squared differences
// added to part; in half precision under Options.AWQHalf.
func (a *awqArith) blockLosses(ctx context.Context, first string, lins []*linear, in *Tensor, quant func(c int) error, qw []*cuda.Buffer, cands int, part *cuda.Buffer) error {
	if a.c.Options.AWQHalf {
		a.g.half = true
		defer func() { a.g.half = false; a.g.dropHalves() }()
	}
	if err := a.inspect(ctx, first, in, a.y0); err != nil {
		return err
	}
	n := int64(a.y0.Rows()) * int64(a.y0.Dim)
	for c := range cands {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := quant(c); err != nil {
			return err
		}
		a.g.staleHalves(qw...) // the last candidate's
		if err := a.withWeights(lins, qw, func() error { return a.inspect(ctx, first, in, a.y) }); err != nil {
			return err
		}
		if err := a.g.k.sqDiffSum.Launch(ctx, cuda.Dim3{X: lossBlocks}, cuda.Dim3{X: sqThreads}, 0,
			part.Ptr().Add(8*c*lossBlocks), a.y0.Ptr(), a.y.Ptr(), n); err != nil {
			return err
		}
	}
	return nil
}

// gramLosses is Losses for a group whose compared module is its one linear lin (o_proj,
// down_proj): with G = Σₜ xₜxₜᵀ over the input's tokens, once, each candidate's loss
// Σₜ‖(W − Ŵ)xₜ‖² is Σᵣ dᵣ·(dᵣG), d = W − Ŵ: a rows×cols×cols product per candidate instead of
// a tokens×rows×cols one (the bias cancels). quant(c) writes candidate c's Ŵ into qw; the
// losses are added to part as sqDiffSum's are. The products run with the layer's forward
// arithmetic (TF32 under Options.TF32), whose inputs keep as many significant bits as the
// half-precision grid's.
func (a *awqArith) gramLosses(ctx context.Context, lin *linear, in *Tensor, quant func(c int) error, qw *cuda.Buffer, cands int, part *cuda.Buffer) error {
	d, k, g := a.c.D, a.g.k, a.g
	rows, cols := lin.out, lin.in
	var bufs []*cuda.Buffer
	defer func() {
		for _, b := range bufs {
			b.Free()
		}
	}()
	alloc := func(n int) (*cuda.Buffer, error) {
		b, err := cuda.Alloc[float32](ctx, d, n)
		if err == nil {
			bufs = append(bufs, b)
		}
		return b, err
	}
	gm, err := alloc(cols * cols)
	if err != nil {
		return err
	}
	dm, err := alloc(rows * cols)
	if err != nil {
		return err
	}
	pm, err := alloc(rows * cols)
	if err != nil {
		return err
	}
	if err := g.gemm.Gemm(ctx, true, false, cols, cols, in.Rows(), 1, in.Ptr(), cols, in.Ptr(), cols, 0, gm.Ptr(), cols); err != nil {
		return err
	}
	n := rows * cols
	for c := range cands {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := quant(c); err != nil {
			return err
		}
		if err := k.elementwise(ctx, k.sub, n, dm, lin.w, qw, int64(n)); err != nil {
			return err
		}
		if err := g.gemm.Gemm(ctx, false, false, rows, cols, cols, 1, dm.Ptr(), cols, gm.Ptr(), cols, 0, pm.Ptr(), cols); err != nil {
			return err
		}
		if err := k.dotSum.Launch(ctx, cuda.Dim3{X: lossBlocks}, cuda.Dim3{X: sqThreads}, 0,
			part.Ptr().Add(8*c*lossBlocks), pm, dm, int64(n)); err != nil {
			return err
		}
	}
	return nil
}

// groupSize is the columns per quantization group of a linear of cols inputs (cfg with its
// defaults applied: -1 means one group per row).
func groupSize(cfg awq.Config, cols int) int {
	if cfg.GroupSize == -1 {
		return cols
	}
	return cfg.GroupSize
}

// withWeights runs f with the weights of lins replaced by ws.
func (a *awqArith) withWeights(lins []*linear, ws []*cuda.Buffer, f func() error) error {
	saved := make([]*cuda.Buffer, len(lins))
	for i, lin := range lins {
		saved[i], lin.w = lin.w, ws[i]
	}
	defer func() {
		for i, lin := range lins {
			lin.w = saved[i]
		}
	}()
	return f()
}

// inspect runs the block the scale search compares for the group starting with first on its
// input in (all tokens) into y (tokens × hidden), as quantize's awqShardLayer does on the CPU:
// the attention block (with o_proj) for q/k/v, the MLP for gate/up (a group whose module is a
// single linear takes gramLosses instead).
func (a *awqArith) inspect(ctx context.Context, first string, in, y *Tensor) error {
	g := a.g
	if first != transformer.AttentionInputs[0] && first != transformer.MLPInputs[0] {
		return fmt.Errorf("%w: no AWQ block for the group of %s", ErrShape, first)
	}
	hid := g.q.in
	if y.Dim != hid || y.Rows() != in.Rows() {
		return fmt.Errorf("%w: AWQ module output %d×%d for %d tokens", ErrShape, y.Rows(), y.Dim, in.Rows())
	}
	return g.chunks(ctx, in, func(ws *workspace, lo, hi int) error {
		xi, yi := in.Sequences(lo, hi), y.Sequences(lo, hi)
		rows := xi.Rows()
		if first == transformer.AttentionInputs[0] {
			if err := cuda.Copy(ctx, ws.n, 0, xi.buf, xi.off, 4*rows*xi.Dim); err != nil {
				return err
			}
			if err := g.attend(ctx, ws, xi.Batch, xi.Seq, func([]string, *Tensor) error { return nil }); err != nil {
				return err
			}
		} else if err := g.mlpOut(ctx, ws, xi, rows); err != nil {
			return err
		}
		return cuda.Copy(ctx, yi.buf, yi.off, ws.a, 0, 4*rows*hid)
	})
}

// module returns the linear that is the compared module of the group starting with first
// (o_proj, down_proj), nil for a block (q/k/v: the attention; gate/up: the MLP).
func (a *awqArith) module(first string) (*linear, error) {
	switch first {
	case transformer.OutputInputs[0]:
		return a.g.o, nil
	case transformer.DownInputs[0]:
		return a.g.down, nil
	case transformer.AttentionInputs[0], transformer.MLPInputs[0]:
		return nil, nil
	}
	return nil, fmt.Errorf("%w: no AWQ module for the group of %s", ErrShape, first)
}

// Gram implements awq.Arithmetic: the sampled tokens of the linear's input gathered (divided
// by s) on the device, each column group's Gram matrix by an IEEE float32 cuBLAS SGEMM.
func (a *awqArith) Gram(ctx context.Context, name string, first, step int, s []float32, gs int) ([]float32, int64, error) {
	if a.g == nil {
		return nil, 0, fmt.Errorf("%w: AWQ arithmetic without a shard", ErrShape)
	}
	in, err := a.inputOf(name)
	if err != nil {
		return nil, 0, err
	}
	cols, tokens := in.Dim, in.Rows()
	if first < 0 || first >= tokens || step <= 0 || gs <= 0 || cols%gs != 0 || (s != nil && len(s) != cols) {
		return nil, 0, fmt.Errorf("%w: Gram of %s from token %d step %d of %d, group %d", ErrShape, name, first, step, tokens, gs)
	}
	n := (tokens - first + step - 1) / step
	d, k := a.c.D, a.g.k
	sp := cuda.Ptr(0)
	if s != nil {
		sb, err := cuda.Alloc[float32](ctx, d, cols)
		if err != nil {
			return nil, 0, err
		}
		defer sb.Free()
		if err := cuda.Upload(ctx, sb, 0, s); err != nil {
			return nil, 0, err
		}
		sp = sb.Ptr()
	}
	xs, err := cuda.Alloc[float32](ctx, d, n*cols)
	if err != nil {
		return nil, 0, err
	}
	defer xs.Free()
	if err := k.elementwise(ctx, k.gatherRows, n*cols, xs, in.Ptr(), sp, int64(n), int32(cols), int64(first), int64(step)); err != nil {
		return nil, 0, err
	}
	ng := cols / gs
	gb, err := cuda.Alloc[float32](ctx, d, ng*gs*gs)
	if err != nil {
		return nil, 0, err
	}
	defer gb.Free()
	for i := 0; i < ng; i++ {
		x := xs.Ptr().Add(4 * i * gs)
		if err := k.blas.Gemm(ctx, true, false, gs, gs, n, 1, x, cols, x, cols, 0, gb.Ptr().Add(4*i*gs*gs), gs); err != nil {
			return nil, 0, err
		}
	}
	out := make([]float32, ng*gs*gs)
	return out, int64(n), cuda.Download(ctx, out, gb, 0)
}

// SearchClip implements awq.Arithmetic: one block per row-group tries the bounds as
// searchClipGram does, in the same order with the same roundings, so that on the same Gram
// matrices it picks the CPU's bounds.
func (a *awqArith) SearchClip(ctx context.Context, lin *awq.Linear, gram []float32, n int, cfg awq.Config) ([]float32, error) {
	rows, cols := lin.Rows, lin.Cols
	gs := groupSize(cfg, cols)
	if gs <= 0 || gs%32 != 0 || gs > clipMaxGS || cols%gs != 0 || len(lin.Weight) != rows*cols || len(gram) != cols*gs || n <= 0 {
		return nil, fmt.Errorf("%w: clipping search of %s (%d×%d, group %d, %d Gram values, %d samples; groups of 32..%d columns)",
			ErrShape, lin.Name, rows, cols, gs, len(gram), n, clipMaxGS)
	}
	d := a.c.D
	if !a.held {
		release, err := acquire(ctx, d)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	ng := cols / gs
	free, _, err := d.MemInfo(ctx)
	if err != nil {
		return nil, err
	}
	if need := 4 * int64(rows*cols+len(gram)+rows*ng); need+512<<20 > free {
		return nil, fmt.Errorf("%w: the clipping search of %s needs about %.1f GiB, %s has %.1f GiB free",
			ErrMemory, lin.Name, gib(need), d.Name(), gib(free))
	}
	k, err := loadKernels(ctx, d)
	if err != nil {
		return nil, err
	}
	var bufs []*cuda.Buffer
	defer func() {
		for _, b := range bufs {
			b.Free()
		}
	}()
	up := func(v []float32) (*cuda.Buffer, error) {
		b, err := cuda.Alloc[float32](ctx, d, len(v))
		if err != nil {
			return nil, err
		}
		bufs = append(bufs, b)
		return b, cuda.Upload(ctx, b, 0, v)
	}
	w, err := up(lin.Weight)
	if err != nil {
		return nil, err
	}
	g, err := up(transposeBlocks(gram, gs))
	if err != nil {
		return nil, err
	}
	best := make([]float32, rows*ng)
	bb, err := up(best)
	if err != nil {
		return nil, err
	}
	maxInt, eps := awq.QuantizerConstants(cfg.Bits)
	if err := k.clipSearch.Launch(ctx, cuda.Dim3{X: rows, Y: ng}, cuda.Dim3{X: gs}, 0,
		bb, w, g, int32(cols), int32(gs), int32(awq.ClipShrinks(cfg)), int32(cfg.ClipGrid), maxInt, eps, float64(n)); err != nil {
		return nil, err
	}
	return best, cuda.Download(ctx, best, bb, 0)
}

// transposeBlocks returns the n×n blocks of m (n·n values each) transposed.
func transposeBlocks(m []float32, n int) []float32 {
	t := make([]float32, len(m))
	for b := 0; b+n*n <= len(m); b += n * n {
		for i := 0; i < n; i++ {
			for j := 0; j < n; j++ {
				t[b+j*n+i] = m[b+i*n+j]
			}
		}
	}
	return t
}
