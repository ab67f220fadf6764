package llamacuda

import (
	"context"
	"fmt"
	"math"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/transformer"
)

// ErrShape reports a layer, config or tensor the GPU layer cannot take.
var ErrShape = fault.New(fault.ErrBadInput, "llamacuda: unsupported shape")

// ErrMemory reports that a layer's work would not fit in the device's free memory.
var ErrMemory = fault.New(fault.ErrPermanent, "llamacuda: not enough device memory")

// Tensor is a batch of sequences of vectors on the device, laid out like transformer.Tensor
// (Batch·Seq rows of Dim float32 values, row-major). A tensor made by Sequences shares its
// parent's memory.
type Tensor struct {
	Batch, Seq, Dim int
	buf             *cuda.Buffer
	off             int // bytes
	owned           bool
}

// NewTensor allocates an uninitialized tensor.
func NewTensor(ctx context.Context, d *cuda.Device, batch, seq, dim int) (*Tensor, error) {
	if batch <= 0 || seq <= 0 || dim <= 0 {
		return nil, fmt.Errorf("%w: tensor %d×%d×%d", ErrShape, batch, seq, dim)
	}
	b, err := cuda.Alloc[float32](ctx, d, batch*seq*dim)
	if err != nil {
		return nil, fmt.Errorf("activations %d×%d×%d: %w", batch, seq, dim, err)
	}
	return &Tensor{Batch: batch, Seq: seq, Dim: dim, buf: b, owned: true}, nil
}

// UploadTensor copies a host tensor to the device.
func UploadTensor(ctx context.Context, d *cuda.Device, x *transformer.Tensor) (*Tensor, error) {
	if x == nil || len(x.Data) != x.Batch*x.Seq*x.Dim {
		return nil, fmt.Errorf("%w: malformed host tensor", ErrShape)
	}
	t, err := NewTensor(ctx, d, x.Batch, x.Seq, x.Dim)
	if err != nil {
		return nil, err
	}
	if err := cuda.Upload(ctx, t.buf, 0, x.Data); err != nil {
		t.Free()
		return nil, err
	}
	return t, nil
}

// Download copies the tensor to the host.
func (t *Tensor) Download(ctx context.Context) (*transformer.Tensor, error) {
	h := transformer.NewTensor(t.Batch, t.Seq, t.Dim)
	if err := cuda.Download(ctx, h.Data, t.buf, t.off/4); err != nil {
		return nil, err
	}
	return h, nil
}

// Rows is Batch·Seq.
func (t *Tensor) Rows() int { return t.Batch * t.Seq }

// Ptr is the device address of the first value.
func (t *Tensor) Ptr() cuda.Ptr { return t.buf.Ptr().Add(t.off) }

// Sequences returns sequences [lo, hi) as a tensor sharing t's memory.
func (t *Tensor) Sequences(lo, hi int) *Tensor {
	return &Tensor{Batch: hi - lo, Seq: t.Seq, Dim: t.Dim, buf: t.buf, off: t.off + 4*lo*t.Seq*t.Dim}
}

// Free releases the memory of a tensor made by NewTensor or UploadTensor (views: no-op).
func (t *Tensor) Free() {
	if t != nil && t.owned {
		t.buf.Free()
	}
}

// Hook sees the input of a linear group (transformer.AttentionInputs, OutputInputs,
// MLPInputs, DownInputs) on the device during Forward, a few whole sequences at a time; in is
// valid only during the call. An error stops the forward pass.
type Hook func(ctx context.Context, linears []string, in *Tensor) error

type linear struct {
	name    string
	out, in int
	w, b    *cuda.Buffer // b nil without bias
}

type norm struct {
	w   *cuda.Buffer
	eps float64
}

// Layer is one decoder layer's weights on the device, with the scratch memory of its forward
// passes; one goroutine uses it at a time.
type Layer struct {
	Index int
	cfg   *transformer.Config
	k     *kernels
	d     *cuda.Device

	inNorm, postNorm norm
	qNorm, kNorm     *norm
	q, kp, v, o      *linear
	gate, up, down   *linear
	window           int

	gemm *cuda.BLAS // the projections' cuBLAS handle: k.blas, or the TF32 one (UseTF32)
	// half runs the projections with half-precision inputs (activations rounded into hx,
	// weights into halves: one copy per weight buffer, made on first use) on the tensor cores,
	// float32 sums: the AWQ grid's Options.AWQHalf.
	half     bool
	hx       *cuda.Buffer
	halves   map[*cuda.Buffer]*halfCopy
	ropeSeq  int
	cos, sin *cuda.Buffer
	ropeHalf int
	ws       *workspace
	wsRows   int
	bufs     []*cuda.Buffer
}

// chunkRows bounds the rows a forward step processes at once (whole sequences), so that
// the MLP's intermediates stay a few GiB whatever the calibration batch.
const chunkRows = 16384

// UploadLayer copies the weights of l (a decoder layer of a model with config c) to d.
func UploadLayer(ctx context.Context, d *cuda.Device, c *transformer.Config, l *transformer.Layer) (*Layer, error) {
	if l == nil || l.Q == nil {
		return nil, fmt.Errorf("%w: no layer weights", ErrShape)
	}
	if err := c.CheckLlamaLayout(); err != nil { // Gemma, Phi-3 and MoE layers differ
		return nil, fmt.Errorf("%w: %v", ErrShape, err)
	}
	if c.HeadDim <= 0 || c.HeadDim > maxHeadDim || c.NumHeads <= 0 || c.NumKVHeads <= 0 || c.NumHeads%c.NumKVHeads != 0 ||
		c.Rope.Dim > c.HeadDim || c.Rope.Dim%2 != 0 {
		return nil, fmt.Errorf("%w: %d heads, %d kv heads of %d (rope %d; at most %d per head)",
			ErrShape, c.NumHeads, c.NumKVHeads, c.HeadDim, c.Rope.Dim, maxHeadDim)
	}
	if l.Q.Out != c.NumHeads*c.HeadDim || l.K.Out != c.NumKVHeads*c.HeadDim || l.V.Out != l.K.Out || l.O.In != l.Q.Out {
		return nil, fmt.Errorf("%w: layer %d's attention shapes disagree with the config", ErrShape, l.Index)
	}
	k, err := loadKernels(ctx, d)
	if err != nil {
		return nil, err
	}
	g := &Layer{Index: l.Index, cfg: c, k: k, d: d, gemm: k.blas}
	if l.Index < len(c.SlidingWindow) {
		g.window = c.SlidingWindow[l.Index]
	}
	fail := func(err error) (*Layer, error) {
		g.Close()
		return nil, fmt.Errorf("uploading layer %d: %w", l.Index, err)
	}
	up := func(v []float32) (*cuda.Buffer, error) {
		b, err := cuda.Alloc[float32](ctx, d, len(v))
		if err != nil {
			return nil, err
		}
		g.bufs = append(g.bufs, b)
		return b, cuda.Upload(ctx, b, 0, v)
	}
	upNorm := func(n *transformer.Norm) (norm, error) {
		b, err := up(n.Weight)
		return norm{w: b, eps: n.Eps}, err
	}
	if g.inNorm, err = upNorm(l.InputNorm); err != nil {
		return fail(err)
	}
	if g.postNorm, err = upNorm(l.PostAttentionNorm); err != nil {
		return fail(err)
	}
	if l.QNorm != nil {
		qn, err := upNorm(l.QNorm)
		if err != nil {
			return fail(err)
		}
		kn, err := upNorm(l.KNorm)
		if err != nil {
			return fail(err)
		}
		g.qNorm, g.kNorm = &qn, &kn
	}
	for _, p := range []struct {
		dst **linear
		src *transformer.Linear
	}{{&g.q, l.Q}, {&g.kp, l.K}, {&g.v, l.V}, {&g.o, l.O}, {&g.gate, l.Gate}, {&g.up, l.Up}, {&g.down, l.Down}} {
		lin := &linear{name: p.src.Name, out: p.src.Out, in: p.src.In}
		if len(p.src.Weight) != lin.out*lin.in {
			return fail(fmt.Errorf("%w: %s has %d weights for %d×%d", ErrShape, lin.name, len(p.src.Weight), lin.out, lin.in))
		}
		if lin.w, err = up(p.src.Weight); err != nil {
			return fail(err)
		}
		if p.src.Bias != nil {
			if lin.b, err = up(p.src.Bias); err != nil {
				return fail(err)
			}
		}
		*p.dst = lin
	}
	return g, nil
}

func (l *Layer) linears() []*linear { return []*linear{l.q, l.kp, l.v, l.o, l.gate, l.up, l.down} }

// SetWeight replaces the weight of the linear named name ("self_attn.q_proj"), e.g. by its
// quantized value, for the forward passes after it.
func (l *Layer) SetWeight(ctx context.Context, name string, w []float32) error {
	lin := l.linear(name)
	if lin == nil {
		return fmt.Errorf("%w: layer %d has no linear %q", ErrShape, l.Index, name)
	}
	if len(w) != lin.out*lin.in {
		return fmt.Errorf("%w: %d weights for %s (%d×%d)", ErrShape, len(w), name, lin.out, lin.in)
	}
	return cuda.Upload(ctx, lin.w, 0, w)
}

// linear returns the linear named name, or nil.
func (l *Layer) linear(name string) *linear {
	for _, lin := range l.linears() {
		if lin.name == name {
			return lin
		}
	}
	return nil
}

// WeightBytes is the device memory of the layer's weights.
func (l *Layer) WeightBytes() int64 {
	var n int64
	for _, b := range l.bufs {
		n += int64(b.Size())
	}
	return n
}

// Close frees the layer's device memory.
func (l *Layer) Close() {
	for _, b := range l.bufs {
		b.Free()
	}
	l.bufs = nil
	l.freeWorkspace()
	l.cos.Free()
	l.sin.Free()
	l.hx.Free()
	l.dropHalves()
	l.cos, l.sin, l.hx = nil, nil, nil
}

// workspace holds one chunk's intermediates: the forward pass's, and the attention's packed
// queries (then its output), keys and values and its scores (allocated on first use).
type workspace struct {
	n, q, k, v, ctx, a, g, u *cuda.Buffer
	qp, kp, vp, s            *cuda.Buffer
}

func (l *Layer) freeWorkspace() {
	if w := l.ws; w != nil {
		for _, b := range []*cuda.Buffer{w.n, w.q, w.k, w.v, w.ctx, w.a, w.g, w.u, w.qp, w.kp, w.vp, w.s} {
			b.Free()
		}
	}
	l.ws, l.wsRows = nil, 0
}

// chunkBytes bounds the device memory of forward's scratch for batch×seq inputs of a layer
// with hid inputs, q/k projections of qd and kd outputs, heads query heads and an MLP of
// inter: one chunk's intermediates, the attention's packed copies and its scores.
func chunkBytes(hid, qd, kd, inter int64, heads, batch, seq int) int64 {
	seqs := int64(min(batch, max(1, chunkRows/seq)))
	rows := seqs * int64(seq)
	b := 4 * rows * (2*hid + qd + 2*kd + qd + 2*inter) // n, q, k, v, ctx, a, g, u
	b += 4 * rows * (qd + 2*kd)                        // qp, kp, vp
	return b + 4*min(int64(attnScoreFloats), seqs*int64(heads)*int64(seq)*int64(seq))
}

// layerHeads is l's number of query heads, or an upper bound for a layer without a config.
func layerHeads(l *transformer.Layer) int {
	if c := l.Config(); c != nil {
		return c.NumHeads
	}
	return l.Q.Out
}

func (l *Layer) workspace(ctx context.Context, rows int) (*workspace, error) {
	if l.ws != nil && l.wsRows >= rows {
		return l.ws, nil
	}
	l.freeWorkspace()
	w := &workspace{}
	for _, p := range []struct {
		b    **cuda.Buffer
		cols int
	}{{&w.n, l.q.in}, {&w.q, l.q.out}, {&w.k, l.kp.out}, {&w.v, l.v.out}, {&w.ctx, l.o.in}, {&w.a, l.q.in}, {&w.g, l.gate.out}, {&w.u, l.up.out},
		{&w.qp, l.q.out}, {&w.kp, l.kp.out}, {&w.vp, l.v.out}} {
		b, err := cuda.Alloc[float32](ctx, l.d, rows*p.cols)
		if err != nil {
			l.ws = w
			l.freeWorkspace()
			return nil, fmt.Errorf("layer %d workspace of %d rows: %w", l.Index, rows, err)
		}
		*p.b = b
	}
	l.ws, l.wsRows = w, rows
	return w, nil
}

func (l *Layer) rope(ctx context.Context, seq int) error {
	if l.cos != nil && l.ropeSeq == seq {
		return nil
	}
	l.cos.Free()
	l.sin.Free()
	l.cos, l.sin = nil, nil
	cs, sn, half := l.cfg.RopeTables(seq)
	l.ropeHalf = half
	if half == 0 {
		l.ropeSeq = seq
		return nil
	}
	var err error
	if l.cos, err = cuda.Alloc[float32](ctx, l.d, len(cs)); err != nil {
		return err
	}
	if l.sin, err = cuda.Alloc[float32](ctx, l.d, len(sn)); err != nil {
		return err
	}
	if err := cuda.Upload(ctx, l.cos, 0, cs); err != nil {
		return err
	}
	if err := cuda.Upload(ctx, l.sin, 0, sn); err != nil {
		return err
	}
	l.ropeSeq = seq
	return nil
}

// UseTF32 runs the layer's projections and the attention's products on the tensor cores with
// TF32 inputs from now on (see Options.TF32); norms, softmax and everything a Hessian sums stay
// IEEE float32.
func (l *Layer) UseTF32(ctx context.Context) error {
	b, err := l.d.BLASTF32(ctx)
	if err != nil {
		return err
	}
	l.gemm = b
	return nil
}

// apply computes y = x·Wᵀ + b for rows rows.
func (l *Layer) apply(ctx context.Context, lin *linear, y, x cuda.Ptr, rows int) error {
	hx, err := l.halfInput(ctx, x, rows*lin.in)
	if err != nil {
		return err
	}
	return l.applyFrom(ctx, lin, y, x, hx, rows)
}

// applyFrom is apply with x already rounded to half at hx in half mode (linears that read one
// input round it once).
func (l *Layer) applyFrom(ctx context.Context, lin *linear, y, x, hx cuda.Ptr, rows int) error {
	var err error
	if l.half {
		err = l.halfProduct(ctx, lin, y, hx, rows, false)
	} else {
		err = l.gemm.Gemm(ctx, false, true, rows, lin.out, lin.in, 1, x, lin.in, lin.w.Ptr(), lin.in, 0, y, lin.out)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", lin.name, err)
	}
	if lin.b != nil {
		return l.k.elementwise(ctx, l.k.addBias, rows*lin.out, y, lin.b, int64(rows), int32(lin.out))
	}
	return nil
}

// halfProduct is y = hx·Wᵀ for rows half-precision rows hx and lin's weight rounded to half,
// float32 sums, y in half precision when halfOut (else float32); no bias.
func (l *Layer) halfProduct(ctx context.Context, lin *linear, y, hx cuda.Ptr, rows int, halfOut bool) error {
	hw, err := l.halfWeight(ctx, lin)
	if err != nil {
		return err
	}
	gemm := l.k.blas.GemmHalf
	if halfOut {
		gemm = l.k.blas.GemmHalfOut
	}
	return gemm(ctx, false, true, rows, lin.out, lin.in, 1, hx, lin.in, hw, lin.in, 0, y, lin.out)
}

// halfInput rounds the n values at x to half precision into l.hx in half mode (else it
// does nothing and returns 0).
func (l *Layer) halfInput(ctx context.Context, x cuda.Ptr, n int) (cuda.Ptr, error) {
	if !l.half {
		return 0, nil
	}
	if l.hx == nil || l.hx.Size() < 2*n {
		l.hx.Free()
		l.hx = nil
		b, err := cuda.Alloc[uint16](ctx, l.d, n)
		if err != nil {
			return 0, err
		}
		l.hx = b
	}
	return l.hx.Ptr(), l.k.elementwise(ctx, l.k.toHalf, n, l.hx, x, int64(n))
}

// halfCopy is a weight buffer's values rounded to half precision; stale when they changed
// since (staleHalves).
type halfCopy struct {
	b     *cuda.Buffer
	stale bool
}

// halfWeight returns lin's weight rounded to half precision: l.halves' copy of its buffer,
// made on first use and rounded again after staleHalves.
func (l *Layer) halfWeight(ctx context.Context, lin *linear) (cuda.Ptr, error) {
	h := l.halves[lin.w]
	if h == nil {
		b, err := cuda.Alloc[uint16](ctx, l.d, lin.out*lin.in)
		if err != nil {
			return 0, err
		}
		if l.halves == nil {
			l.halves = map[*cuda.Buffer]*halfCopy{}
		}
		h = &halfCopy{b: b, stale: true}
		l.halves[lin.w] = h
	}
	if h.stale {
		n := lin.out * lin.in
		if err := l.k.elementwise(ctx, l.k.toHalf, n, h.b, lin.w, int64(n)); err != nil {
			return 0, err
		}
		h.stale = false
	}
	return h.b.Ptr(), nil
}

// mlpOut is the MLP (without its residual) of x's rows into ws.a: mlpHalf in half mode, else
// mlpHidden on a copy of x in ws.n and the down projection.
func (l *Layer) mlpOut(ctx context.Context, ws *workspace, x *Tensor, rows int) error {
	if done, err := l.mlpHalf(ctx, ws, x.Ptr(), rows); done || err != nil {
		return err
	}
	if err := cuda.Copy(ctx, ws.n, 0, x.buf, x.off, 4*rows*x.Dim); err != nil {
		return err
	}
	if err := l.mlpHidden(ctx, ws, rows); err != nil {
		return err
	}
	return l.apply(ctx, l.down, ws.a.Ptr(), ws.g.Ptr(), rows)
}

// mlpHalf is the MLP on x (rows) into ws.a in half mode, as a half-precision forward pass
// computes it: the gate and up products rounded to half (in ws.g's and ws.u's memory),
// silu(gate)·up rounded to half, the down product from those halves (float32 out). False,
// with nothing done, outside half mode or when a linear of the MLP has a bias (mlpHidden and
// apply then).
func (l *Layer) mlpHalf(ctx context.Context, ws *workspace, x cuda.Ptr, rows int) (bool, error) {
	if !l.half || l.gate.b != nil || l.up.b != nil || l.down.b != nil {
		return false, nil
	}
	k, inter := l.k, l.gate.out
	hx, err := l.halfInput(ctx, x, rows*l.gate.in)
	if err != nil {
		return true, err
	}
	for _, p := range []struct {
		lin *linear
		out *cuda.Buffer
	}{{l.gate, ws.g}, {l.up, ws.u}} {
		if err := l.halfProduct(ctx, p.lin, p.out.Ptr(), hx, rows, true); err != nil {
			return true, fmt.Errorf("%s: %w", p.lin.name, err)
		}
	}
	if err := k.elementwise(ctx, k.siluMulHalf, rows*inter, ws.g, ws.u, int64(rows*inter)); err != nil {
		return true, err
	}
	if err := l.halfProduct(ctx, l.down, ws.a.Ptr(), ws.g.Ptr(), rows, false); err != nil {
		return true, fmt.Errorf("%s: %w", l.down.name, err)
	}
	return true, nil
}

// staleHalves marks the half-precision copies of the weight buffers ws out of date (their
// values changed): the next use rounds them again, in the same memory (no free, which would
// wait for the device, per candidate of the AWQ grid).
func (l *Layer) staleHalves(ws ...*cuda.Buffer) {
	for _, w := range ws {
		if h := l.halves[w]; h != nil {
			h.stale = true
		}
	}
}

// dropHalves frees every half-precision copy of a weight (half mode ends).
func (l *Layer) dropHalves() {
	for _, h := range l.halves {
		h.b.Free()
	}
	l.halves = nil
}

func (l *Layer) norm(ctx context.Context, n norm, y, x cuda.Ptr, rows, cols int) error {
	return l.k.rmsNorm.Launch(ctx, cuda.Dim3{X: min(rows, maxBlocks)}, cuda.Dim3{X: threads}, 0, y, x, n.w, int32(rows), int32(cols), n.eps)
}

// stages selects what forward computes of a chunk.
type stages struct {
	attention bool // else the chunk's x is already h (the residual after attention)
	mlp       bool // else y = h
	// qkvInput stops at the input norm's output (for the q/k/v hook); y is not written.
	qkvInput bool
	// downInput stops the MLP at down_proj's input (for its hook): y = h.
	downInput bool
	// saved, with attention, is the attention context (o_proj's input) of the same inputs
	// from an earlier pass with the same q/k/v weights: the attention block is then o_proj
	// applied to it, without recomputing q, k, v and the attention.
	saved *Tensor
}

// forward runs the selected stages on x into y (which may be x) chunk by chunk.
func (l *Layer) forward(ctx context.Context, x, y *Tensor, st stages, hook Hook) error {
	if x.Dim != l.q.in || y.Dim != x.Dim || y.Rows() != x.Rows() || y.Seq != x.Seq {
		return fmt.Errorf("%w: layer %d takes %d features, input is %d×%d×%d", ErrShape, l.Index, l.q.in, x.Batch, x.Seq, x.Dim)
	}
	return l.chunks(ctx, x, func(ws *workspace, lo, hi int) error {
		cst := st
		if st.saved != nil {
			cst.saved = st.saved.Sequences(lo, hi)
		}
		return l.chunk(ctx, ws, x.Sequences(lo, hi), y.Sequences(lo, hi), cst, hook)
	})
}

// chunks calls f for runs [lo, hi) of x's sequences in order, with a workspace of their rows
// and the rope tables of x.Seq positions.
func (l *Layer) chunks(ctx context.Context, x *Tensor, f func(ws *workspace, lo, hi int) error) error {
	// Whole sequences per chunk; the attention grid's y (sequences × heads) stays ≤ 65535.
	per := max(1, min(chunkRows/x.Seq, maxBlocks/l.cfg.NumHeads))
	ws, err := l.workspace(ctx, min(x.Batch, per)*x.Seq)
	if err != nil {
		return err
	}
	if err := l.rope(ctx, x.Seq); err != nil {
		return err
	}
	for lo := 0; lo < x.Batch; lo += per {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f(ws, lo, min(x.Batch, lo+per)); err != nil {
			return fmt.Errorf("layer %d: %w", l.Index, err)
		}
	}
	return nil
}

func (l *Layer) chunk(ctx context.Context, ws *workspace, x, y *Tensor, st stages, hook Hook) error {
	rows, hid := x.Rows(), x.Dim
	view := func(b *cuda.Buffer, dim int) *Tensor {
		return &Tensor{Batch: x.Batch, Seq: x.Seq, Dim: dim, buf: b}
	}
	call := func(names []string, t *Tensor) error {
		if hook == nil {
			return nil
		}
		return hook(ctx, names, t)
	}
	h := x.Ptr()
	if st.qkvInput {
		if err := l.norm(ctx, l.inNorm, ws.n.Ptr(), x.Ptr(), rows, hid); err != nil {
			return err
		}
		return call(transformer.AttentionInputs, view(ws.n, hid))
	}
	if st.attention && st.saved != nil {
		if err := l.apply(ctx, l.o, ws.a.Ptr(), st.saved.Ptr(), rows); err != nil {
			return err
		}
	} else if st.attention {
		if err := l.norm(ctx, l.inNorm, ws.n.Ptr(), x.Ptr(), rows, hid); err != nil {
			return err
		}
		if err := l.attend(ctx, ws, x.Batch, x.Seq, func(names []string, t *Tensor) error { return call(names, t) }); err != nil {
			return err
		}
	}
	if st.attention {
		if err := l.k.elementwise(ctx, l.k.add, rows*hid, y.Ptr(), x.Ptr(), ws.a, int64(rows*hid)); err != nil {
			return err
		}
		h = y.Ptr()
	} else if y.Ptr() != x.Ptr() {
		if err := cuda.Copy(ctx, y.buf, y.off, x.buf, x.off, 4*rows*hid); err != nil {
			return err
		}
		h = y.Ptr()
	}
	if !st.mlp && hook == nil {
		return nil
	}
	// MLP: n = post_attention_layernorm(h); y = h + down(silu(gate(n))·up(n)).
	if err := l.norm(ctx, l.postNorm, ws.n.Ptr(), h, rows, hid); err != nil {
		return err
	}
	if err := call(transformer.MLPInputs, view(ws.n, hid)); err != nil {
		return err
	}
	if !st.mlp {
		return nil
	}
	if err := l.mlpHidden(ctx, ws, rows); err != nil {
		return err
	}
	if err := call(transformer.DownInputs, view(ws.g, l.gate.out)); err != nil {
		return err
	}
	if st.downInput {
		return nil
	}
	if err := l.apply(ctx, l.down, ws.a.Ptr(), ws.g.Ptr(), rows); err != nil {
		return err
	}
	return l.k.elementwise(ctx, l.k.add, rows*hid, h, h, ws.a, int64(rows*hid))
}

// mlpHidden computes down_proj's input silu(gate(n))·up(n) of ws.n (post_attention_layernorm's
// output) into ws.g.
func (l *Layer) mlpHidden(ctx context.Context, ws *workspace, rows int) error {
	if err := l.apply(ctx, l.gate, ws.g.Ptr(), ws.n.Ptr(), rows); err != nil {
		return err
	}
	if err := l.apply(ctx, l.up, ws.u.Ptr(), ws.n.Ptr(), rows); err != nil {
		return err
	}
	return l.k.elementwise(ctx, l.k.siluMul, rows*l.gate.out, ws.g, ws.u, int64(rows*l.gate.out))
}

// attend runs self-attention on ws.n (the input norm's output) into ws.a (o_proj's output).
func (l *Layer) attend(ctx context.Context, ws *workspace, batch, seq int, call func([]string, *Tensor) error) error {
	c := l.cfg
	rows, hd := batch*seq, c.HeadDim
	view := func(b *cuda.Buffer, dim int) *Tensor { return &Tensor{Batch: batch, Seq: seq, Dim: dim, buf: b} }
	if err := call(transformer.AttentionInputs, view(ws.n, l.q.in)); err != nil {
		return err
	}
	hx, err := l.halfInput(ctx, ws.n.Ptr(), rows*l.q.in) // q, k and v read one input: rounded once
	if err != nil {
		return err
	}
	for _, p := range []struct {
		lin *linear
		y   *cuda.Buffer
	}{{l.q, ws.q}, {l.kp, ws.k}, {l.v, ws.v}} {
		if err := l.applyFrom(ctx, p.lin, p.y.Ptr(), ws.n.Ptr(), hx, rows); err != nil {
			return err
		}
	}
	for _, p := range []struct {
		x     *cuda.Buffer
		heads int
		n     *norm
	}{{ws.q, c.NumHeads, l.qNorm}, {ws.k, c.NumKVHeads, l.kNorm}} {
		nw, eps := cuda.Ptr(0), 0.0
		if p.n != nil {
			nw, eps = p.n.w.Ptr(), p.n.eps
		}
		if p.n == nil && l.ropeHalf == 0 {
			continue
		}
		cs, sn := cuda.Ptr(0), cuda.Ptr(0)
		if l.cos != nil {
			cs, sn = l.cos.Ptr(), l.sin.Ptr()
		}
		if err := l.k.normRope.Launch(ctx, cuda.Dim3{X: min(rows, maxBlocks)}, cuda.Dim3{X: 128}, 0,
			p.x, int32(rows), int32(seq), int32(p.heads), int32(hd), nw, eps, cs, sn, int32(l.ropeHalf)); err != nil {
			return err
		}
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	if l.half && l.flashFits() {
		err = l.attendFlash(ctx, ws, batch, seq, scale)
	} else {
		var ok bool
		ok, err = l.attendGemm(ctx, ws, batch, seq, scale)
		if err == nil && !ok {
			err = l.attendKernel(ctx, ws, batch, seq, scale)
		}
	}
	if err != nil {
		return err
	}
	if err := call(transformer.OutputInputs, view(ws.ctx, l.o.in)); err != nil {
		return err
	}
	return l.apply(ctx, l.o, ws.a.Ptr(), ws.ctx.Ptr(), rows)
}

// attendKernel computes the attention of ws.q, ws.k, ws.v into ws.ctx with the attention
// kernel (one warp per query, float32 without tensor cores).
func (l *Layer) attendKernel(ctx context.Context, ws *workspace, batch, seq int, scale float32) error {
	c := l.cfg
	return l.k.attention.Launch(ctx, cuda.Dim3{X: (seq + attnQ - 1) / attnQ, Y: batch * c.NumHeads}, cuda.Dim3{X: 32 * attnQ},
		attnShared(c.HeadDim), ws.ctx, ws.q, ws.k, ws.v, int32(seq), int32(c.NumHeads), int32(c.NumKVHeads), int32(c.HeadDim), int32(l.window), scale)
}

// flashFits reports whether flash_attention takes this layer: heads of a multiple of 16 up to
// flashMaxHeadDim values, and the tensor cores' half-precision mma (compute capability 8.0).
func (l *Layer) flashFits() bool {
	major, _ := l.d.ComputeCapability()
	return l.cfg.HeadDim%16 == 0 && l.cfg.HeadDim <= flashMaxHeadDim && major >= 8
}

// attendFlash computes the attention of ws.q, ws.k, ws.v into ws.ctx in half precision, as
// llm-awq's fp16 forward (the AWQ grid's half mode): q, k and v rounded to half into the
// packed buffers' memory, then flash_attention (tensor cores, no scores in memory).
func (l *Layer) attendFlash(ctx context.Context, ws *workspace, batch, seq int, scale float32) error {
	c, k, rows := l.cfg, l.k, batch*seq
	for _, p := range []struct {
		dst, src *cuda.Buffer
		cols     int
	}{{ws.qp, ws.q, l.q.out}, {ws.kp, ws.k, l.kp.out}, {ws.vp, ws.v, l.v.out}} {
		if err := k.elementwise(ctx, k.toHalf, rows*p.cols, p.dst, p.src, int64(rows*p.cols)); err != nil {
			return err
		}
	}
	f := k.flashAttention
	if c.HeadDim == 128 {
		f = k.flashAttention128
	}
	return f.Launch(ctx, cuda.Dim3{X: (seq + flashQ - 1) / flashQ, Y: batch * c.NumHeads}, cuda.Dim3{X: 128}, flashShared,
		ws.ctx, ws.qp, ws.kp, ws.vp, int32(seq), int32(c.NumHeads), int32(c.NumKVHeads), int32(c.HeadDim), int32(l.window), scale)
}

// attnScoreFloats bounds the attention scores computed at once (1 GiB; a variable for the
// tests). attnQueryBlocks is the number of query blocks whose scores stop at the block's
// last position (skipping most of the causal mask's zeros).
var attnScoreFloats = 1 << 28

const attnQueryBlocks = 8

// attendGemm computes the attention of ws.q, ws.k, ws.v into ws.ctx as the CPU's attend does,
// with the projections' cuBLAS handle (IEEE float32, or TF32 after UseTF32): per sequence and
// kv head, the r query heads' scores (scale·q)·kᵀ by one batched GEMM per query block (keys up
// to the block's end), the masked softmax rows, and p·v. It reports false, computing nothing, when one (sequence, kv
// head) pair's scores exceed attnScoreFloats: the attention kernel handles such lengths.
func (l *Layer) attendGemm(ctx context.Context, ws *workspace, batch, seq int, scale float32) (bool, error) {
	c := l.cfg
	hd, kv := c.HeadDim, c.NumKVHeads
	r := c.NumHeads / kv
	pairScores := r * seq * seq
	if pairScores > attnScoreFloats {
		return false, nil
	}
	pairs := batch * kv
	step := min(pairs, attnScoreFloats/pairScores)
	if ws.s == nil || ws.s.Size() < 4*step*pairScores {
		ws.s.Free()
		ws.s = nil
		b, err := cuda.Alloc[float32](ctx, l.d, step*pairScores)
		if err != nil {
			return false, fmt.Errorf("layer %d attention scores: %w", l.Index, err)
		}
		ws.s = b
	}
	k, rows := l.k, batch*seq
	if err := k.elementwise(ctx, k.attnPack, rows*r*hd*kv, ws.qp, ws.q, int64(rows), int32(seq), int32(kv), int32(r*hd), scale, int32(0)); err != nil {
		return false, err
	}
	for _, p := range [][2]*cuda.Buffer{{ws.kp, ws.k}, {ws.vp, ws.v}} {
		if err := k.elementwise(ctx, k.attnPack, rows*hd*kv, p[0], p[1], int64(rows), int32(seq), int32(kv), int32(hd), float32(1), int32(0)); err != nil {
			return false, err
		}
	}
	qb := (seq + attnQueryBlocks - 1) / attnQueryBlocks
	qStride, kStride, sStride := seq*r*hd, seq*hd, pairScores
	for p0 := 0; p0 < pairs; p0 += step {
		n := min(step, pairs-p0)
		qp, kp, vp := ws.qp.Ptr().Add(4*p0*qStride), ws.kp.Ptr().Add(4*p0*kStride), ws.vp.Ptr().Add(4*p0*kStride)
		sc := ws.s.Ptr()
		for i0 := 0; i0 < seq; i0 += qb {
			m, keys := min(qb, seq-i0)*r, min(seq, i0+qb)
			if err := l.gemm.GemmStridedBatched(ctx, false, true, m, keys, hd, 1, qp.Add(4*i0*r*hd), hd, qStride,
				kp, hd, kStride, 0, sc.Add(4*i0*r*seq), seq, sStride, n); err != nil {
				return false, err
			}
		}
		g, b := flat(n * pairScores / seq * 32)
		if err := k.attnSoftmax.Launch(ctx, g, b, 0, sc, int64(n*seq*r), int32(seq), int32(r), int32(l.window), int32(qb)); err != nil {
			return false, err
		}
		// p·v into the packed queries' place.
		for i0 := 0; i0 < seq; i0 += qb {
			m, keys := min(qb, seq-i0)*r, min(seq, i0+qb)
			if err := l.gemm.GemmStridedBatched(ctx, false, false, m, hd, keys, 1, sc.Add(4*i0*r*seq), seq, sStride,
				vp, hd, kStride, 0, qp.Add(4*i0*r*hd), hd, qStride, n); err != nil {
				return false, err
			}
		}
	}
	return true, k.elementwise(ctx, k.attnPack, rows*r*hd*kv, ws.ctx, ws.qp, int64(rows), int32(seq), int32(kv), int32(r*hd), float32(0), int32(1))
}

// Forward runs the decoder layer on x (not modified) into a new tensor, as
// transformer.Layer.Forward; hook, if not nil, sees the inputs of the linears on the device.
func (l *Layer) Forward(ctx context.Context, x *Tensor, hook Hook) (*Tensor, error) {
	y, err := NewTensor(ctx, l.d, x.Batch, x.Seq, x.Dim)
	if err != nil {
		return nil, err
	}
	if err := l.forward(ctx, x, y, stages{attention: true, mlp: true}, hook); err != nil {
		y.Free()
		return nil, err
	}
	return y, nil
}
