package llamacuda

import (
	"context"
	"fmt"
	"math"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/perplexity"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/transformer"
)

// headRows bounds the rows whose logits exist at once on the device.
const headRows = 1024

// Evaluate is quantize.Evaluate on device d: the same documents, windows and model files
// (GPTQ/AWQ checkpoints dequantized on the host as the loaders do), the forward pass and the
// log-likelihoods on the GPU.
func Evaluate(ctx context.Context, d *cuda.Device, req quantize.EvalRequest) (*perplexity.Result, error) {
	return quantize.EvaluateWith(ctx, req, func(ctx context.Context, m *transformer.Model, windows [][]int, opt perplexity.Options) (*perplexity.Result, error) {
		return EvaluateModel(ctx, d, m, windows, opt)
	})
}

// EvaluateModel is perplexity.EvaluateWith on device d. The windows go through the model
// layer by layer in as few groups as the device's free memory holds (one for an ordinary
// evaluation), so that each decoder layer is uploaded once per group; the token embeddings
// are looked up on the host, the final norm, lm_head and log-softmax run on the device.
// opt.BatchWindows, when positive, bounds a group.
func EvaluateModel(ctx context.Context, d *cuda.Device, m *transformer.Model, windows [][]int, opt perplexity.Options) (*perplexity.Result, error) {
	c := m.Config
	if err := Supports(c); err != nil {
		return nil, err
	}
	if len(windows) == 0 || len(windows[0]) < 2 {
		return nil, fmt.Errorf("perplexity: no windows of at least 2 tokens")
	}
	width := len(windows[0])
	for i, w := range windows {
		if len(w) != width {
			return nil, fmt.Errorf("perplexity: window %d has %d tokens, window 0 has %d", i, len(w), width)
		}
	}
	seq := width - 1
	h, err := uploadHead(ctx, d, m)
	if err != nil {
		return nil, err
	}
	defer h.close()
	group, err := evalGroup(ctx, d, c, seq, len(windows))
	if err != nil {
		return nil, err
	}
	if opt.BatchWindows > 0 {
		group = min(group, opt.BatchWindows)
	}
	res := &perplexity.Result{WindowNLL: make([]float64, len(windows))}
	var sum float64
	for lo := 0; lo < len(windows); lo += group {
		hi := min(len(windows), lo+group)
		nll, err := groupNLL(ctx, d, m, h, windows[lo:hi])
		if err != nil {
			return nil, fmt.Errorf("perplexity: windows %d..%d: %w", lo, hi-1, err)
		}
		for i, v := range nll {
			res.WindowNLL[lo+i] = v / float64(seq)
			sum += v
		}
		if opt.Progress != nil {
			opt.Progress(hi, len(windows))
		}
	}
	res.Tokens = len(windows) * seq
	res.MeanNLL = sum / float64(res.Tokens)
	res.Perplexity = math.Exp(res.MeanNLL)
	return res, nil
}

// Supports returns nil when the GPU runs models of config c (the Llama layout: Llama,
// Mistral, Qwen2, Qwen3, without final logit soft-capping), else an error wrapping ErrShape.
func Supports(c *transformer.Config) error {
	if err := c.CheckLlamaLayout(); err != nil {
		return fmt.Errorf("%w: the GPU forward pass runs the Llama layout (%v)", ErrShape, err)
	}
	if c.FinalSoftcap > 0 {
		return fmt.Errorf("%w: final logit soft-capping", ErrShape)
	}
	return nil
}

// evalGroup is the number of windows of seq inputs whose hidden states (input and output of
// a layer) fit in the device's free memory beside one layer, its workspace and the head; an
// error wrapping ErrMemory when not even one does.
func evalGroup(ctx context.Context, d *cuda.Device, c *transformer.Config, seq, windows int) (int, error) {
	free, _, err := d.MemInfo(ctx)
	if err != nil {
		return 0, err
	}
	hid, inter := int64(c.HiddenSize), int64(c.IntermediateSize)
	qd, kd := int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim)
	layer := 4 * (hid*(qd+2*kd) + qd*hid + 3*hid*inter + 2*hid)
	ws := chunkBytes(hid, qd, kd, inter, c.NumHeads, windows, seq)
	head := 4 * int64(headRows) * (hid + int64(c.VocabSize)) // the head's weights are already uploaded
	per := 2 * 4 * int64(seq) * hid                          // x and y of one window
	avail := free - layer - ws - head - 4*int64(seq)*hid - 512<<20
	if avail < per {
		return 0, fmt.Errorf("%w: evaluating windows of %d tokens needs about %.1f GiB, %s has %.1f GiB free",
			ErrMemory, seq, gib(layer+ws+head+per+512<<20), d.Name(), gib(free))
	}
	return int(min(int64(windows), avail/per)), nil
}

// head is the final norm and lm_head on the device with the scratch of their row chunks.
type head struct {
	norm          norm
	w             *cuda.Buffer // vocab × hidden
	n, logits     *cuda.Buffer // headRows × hidden, headRows × vocab
	nll           *cuda.Buffer // headRows float64
	hidden, vocab int
}

func (h *head) close() {
	for _, b := range []*cuda.Buffer{h.norm.w, h.w, h.n, h.logits, h.nll} {
		b.Free()
	}
}

func uploadHead(ctx context.Context, d *cuda.Device, m *transformer.Model) (*head, error) {
	c := m.Config
	if c.FinalSoftcap > 0 {
		return nil, fmt.Errorf("%w: final logit soft-capping", ErrShape)
	}
	h := &head{hidden: c.HiddenSize, vocab: c.VocabSize, norm: norm{eps: c.RMSNormEps}}
	ok := false
	defer func() {
		if !ok {
			h.close()
		}
	}()
	read := func(name string, n int) ([]float32, error) {
		v, _, err := m.Source.Float32(name)
		if err != nil {
			return nil, err
		}
		if len(v) != n {
			return nil, fmt.Errorf("%w: %s has %d values, want %d", ErrShape, name, len(v), n)
		}
		return v, nil
	}
	up := func(v []float32) (*cuda.Buffer, error) {
		b, err := cuda.Alloc[float32](ctx, d, len(v))
		if err != nil {
			return nil, err
		}
		return b, cuda.Upload(ctx, b, 0, v)
	}
	nw, err := read("model.norm.weight", c.HiddenSize)
	if err != nil {
		return nil, err
	}
	if h.norm.w, err = up(nw); err != nil {
		return nil, err
	}
	name := "lm_head.weight"
	if c.TieWordEmbeddings {
		name = "model.embed_tokens.weight"
	}
	hw, err := read(name, c.VocabSize*c.HiddenSize)
	if err != nil {
		return nil, err
	}
	if h.w, err = up(hw); err != nil {
		return nil, err
	}
	if h.n, err = cuda.Alloc[float32](ctx, d, headRows*c.HiddenSize); err != nil {
		return nil, err
	}
	if h.logits, err = cuda.Alloc[float32](ctx, d, headRows*c.VocabSize); err != nil {
		return nil, err
	}
	if h.nll, err = cuda.Alloc[float64](ctx, d, headRows); err != nil {
		return nil, err
	}
	ok = true
	return h, nil
}

// groupNLL runs the model on windows (inputs: all tokens but the last; targets: all but the
// first) and returns each window's summed NLL.
func groupNLL(ctx context.Context, d *cuda.Device, m *transformer.Model, h *head, windows [][]int) ([]float64, error) {
	c := m.Config
	seq := len(windows[0]) - 1
	in := make([][]int, len(windows))
	targets := make([]int32, 0, len(windows)*seq)
	for i, w := range windows {
		in[i] = w[:seq]
		for _, t := range w[1:] {
			if t < 0 || t >= c.VocabSize {
				return nil, fmt.Errorf("transformer: token id %d in window %d is outside the vocabulary [0, %d)", t, i, c.VocabSize)
			}
			targets = append(targets, int32(t))
		}
	}
	e, err := m.Embed(in)
	if err != nil {
		return nil, err
	}
	x, err := UploadTensor(ctx, d, e)
	e = nil
	if err != nil {
		return nil, err
	}
	defer func() { x.Free() }()
	for i := 0; i < c.NumLayers; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		y, err := layerForward(ctx, d, m, i, x)
		if err != nil {
			return nil, err
		}
		x.Free()
		x = y
	}
	tg, err := cuda.Alloc[int32](ctx, d, len(targets))
	if err != nil {
		return nil, err
	}
	defer tg.Free()
	if err := cuda.Upload(ctx, tg, 0, targets); err != nil {
		return nil, err
	}
	k, err := loadKernels(ctx, d)
	if err != nil {
		return nil, err
	}
	rows := x.Rows()
	nll := make([]float64, rows)
	for r0 := 0; r0 < rows; r0 += headRows {
		nr := min(headRows, rows-r0)
		xr := x.Ptr().Add(4 * r0 * h.hidden)
		if err := k.rmsNorm.Launch(ctx, cuda.Dim3{X: min(nr, maxBlocks)}, cuda.Dim3{X: threads}, 0,
			h.n, xr, h.norm.w, int32(nr), int32(h.hidden), h.norm.eps); err != nil {
			return nil, err
		}
		if err := k.blas.Gemm(ctx, false, true, nr, h.vocab, h.hidden, 1, h.n.Ptr(), h.hidden, h.w.Ptr(), h.hidden, 0, h.logits.Ptr(), h.vocab); err != nil {
			return nil, fmt.Errorf("lm_head: %w", err)
		}
		if err := k.nll.Launch(ctx, cuda.Dim3{X: min(nr, maxBlocks)}, cuda.Dim3{X: threads}, 0,
			h.nll, h.logits, tg.Ptr().Add(4*r0), int32(nr), int32(h.vocab)); err != nil {
			return nil, err
		}
		if err := cuda.Download(ctx, nll[r0:r0+nr], h.nll, 0); err != nil {
			return nil, err
		}
	}
	sums := make([]float64, len(windows))
	for r, v := range nll {
		sums[r/seq] += v
	}
	return sums, nil
}

// layerForward loads decoder layer i on the host, uploads it and runs it on x.
func layerForward(ctx context.Context, d *cuda.Device, m *transformer.Model, i int, x *Tensor) (*Tensor, error) {
	l, err := m.Layer(i)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	g, err := UploadLayer(ctx, d, m.Config, l)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	return g.Forward(ctx, x, nil)
}
