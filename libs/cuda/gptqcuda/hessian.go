package gptqcuda

import (
	"context"
	"fmt"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/gptq"
)

// chunkTokens is the number of tokens whose Gram matrix cuBLAS forms in float32 (SSYRK)
// before it is added to the float64 sum: as in libs/gptq, the float32 rounding error stays
// that of one chunk however many tokens are added. Larger than the CPU's 512 because each
// flush reads and writes the whole float64 matrix.
const chunkTokens = 2048

// Hessian accumulates H = 2/n · Σ x xᵀ on the GPU with libs/gptq's conventions: n counts
// samples (sequences) as passed to Add, Σ runs over tokens, each chunk of tokens is
// multiplied in float32 and added to a float64 sum (upper triangle kept).
type Hessian struct {
	k       *kernels
	cols    int
	sum     *cuda.Buffer // float64 cols×cols, upper triangle
	tmp     *cuda.Buffer // float32 cols×cols, one chunk's Gram matrix
	stage   *cuda.Buffer // float32 chunkTokens×cols, host inputs on their way
	scale   float64      // H = scale·sum when set (an uploaded matrix), else 2/samples
	samples int
	tokens  int64
}

// NewHessian returns an empty Hessian of a linear with cols inputs on device d.
func NewHessian(ctx context.Context, d *cuda.Device, cols int) (*Hessian, error) {
	if cols <= 0 {
		return nil, fmt.Errorf("%w: Hessian of %d columns", gptq.ErrShape, cols)
	}
	k, err := loadKernels(ctx, d)
	if err != nil {
		return nil, err
	}
	h := &Hessian{k: k, cols: cols}
	if h.sum, err = d.Alloc(ctx, 8*cols*cols); err != nil {
		return nil, fmt.Errorf("Hessian of %d columns: %w", cols, err)
	}
	if err := h.sum.Zero(ctx, 0, h.sum.Size()); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// UploadHessian copies a Hessian accumulated on the CPU to device d.
func UploadHessian(ctx context.Context, d *cuda.Device, c *gptq.Hessian) (*Hessian, error) {
	m, err := c.Matrix()
	if err != nil {
		return nil, err
	}
	h, err := NewHessian(ctx, d, c.Cols())
	if err != nil {
		return nil, err
	}
	if err := cuda.Upload(ctx, h.sum, 0, m); err != nil {
		h.Close()
		return nil, err
	}
	h.scale, h.samples, h.tokens = 1, c.Samples(), c.Tokens()
	return h, nil
}

// Cols returns the number of input features.
func (h *Hessian) Cols() int { return h.cols }

// Samples returns the number of samples added.
func (h *Hessian) Samples() int { return h.samples }

// Tokens returns the number of input vectors added.
func (h *Hessian) Tokens() int64 { return h.tokens }

// factor returns f with H = f·sum.
func (h *Hessian) factor() (float64, error) {
	if h.scale != 0 {
		return h.scale, nil
	}
	if h.samples == 0 {
		return 0, gptq.ErrNoSamples
	}
	return 2 / float64(h.samples), nil
}

func (h *Hessian) check(tokens, samples int) error {
	if h.scale != 0 {
		return fmt.Errorf("%w: adding to an uploaded Hessian matrix", gptq.ErrShape)
	}
	if tokens < 0 {
		return fmt.Errorf("%w: %d tokens", gptq.ErrShape, tokens)
	}
	if samples <= 0 {
		return fmt.Errorf("%w: %d samples", gptq.ErrNoSamples, samples)
	}
	return nil
}

// Add adds the inputs x (row-major tokens×cols, host memory) that came from samples samples.
func (h *Hessian) Add(ctx context.Context, x []float32, tokens, samples int) error {
	if err := h.check(tokens, samples); err != nil {
		return err
	}
	n := h.cols
	if len(x) != tokens*n {
		return fmt.Errorf("%w: %d values for %d tokens of %d features", gptq.ErrShape, len(x), tokens, n)
	}
	if h.stage == nil && tokens > 0 {
		var err error
		if h.stage, err = h.k.d.Alloc(ctx, 4*chunkTokens*n); err != nil {
			return err
		}
	}
	for t0 := 0; t0 < tokens; t0 += chunkTokens {
		t1 := min(t0+chunkTokens, tokens)
		if err := cuda.Upload(ctx, h.stage, 0, x[t0*n:t1*n]); err != nil {
			return err
		}
		if err := h.addChunk(ctx, h.stage.Ptr(), t1-t0); err != nil {
			return err
		}
	}
	h.samples += samples
	h.tokens += int64(tokens)
	return nil
}

// AddDevice adds inputs already on the device: x points to tokens×cols float32 values,
// row-major (e.g. activations a GPU forward pass produced).
func (h *Hessian) AddDevice(ctx context.Context, x cuda.Ptr, tokens, samples int) error {
	if err := h.check(tokens, samples); err != nil {
		return err
	}
	for t0 := 0; t0 < tokens; t0 += chunkTokens {
		if err := h.addChunk(ctx, x.Add(4*t0*h.cols), min(chunkTokens, tokens-t0)); err != nil {
			return err
		}
	}
	h.samples += samples
	h.tokens += int64(tokens)
	return nil
}

func (h *Hessian) addChunk(ctx context.Context, x cuda.Ptr, tokens int) error {
	n := h.cols
	if h.tmp == nil {
		var err error
		if h.tmp, err = h.k.d.Alloc(ctx, 4*n*n); err != nil {
			return err
		}
	}
	if err := h.k.blas.SyrkUpper(ctx, n, tokens, 1, x, n, 0, h.tmp.Ptr(), n); err != nil {
		return err
	}
	g, b := grid2(n, n)
	return h.k.hessAccum.Launch(ctx, g, b, 0, h.sum, h.tmp, int32(n))
}

// Matrix returns H as a full symmetric cols×cols row-major float64 matrix, like
// gptq.Hessian.Matrix.
func (h *Hessian) Matrix(ctx context.Context) ([]float64, error) {
	f, err := h.factor()
	if err != nil {
		return nil, err
	}
	n := h.cols
	s := make([]float64, n*n)
	if err := cuda.Download(ctx, s, h.sum, 0); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			v := f * s[i*n+j]
			s[i*n+j], s[j*n+i] = v, v
		}
	}
	return s, nil
}

// ToCPU returns the Hessian as a libs/gptq Hessian (to merge, encode or quantize on the CPU),
// with its token count (the pipeline rounds a group that too few tokens reached) and, when the
// sums were accumulated here, its sample count.
func (h *Hessian) ToCPU(ctx context.Context) (*gptq.Hessian, error) {
	if h.scale != 0 || h.samples == 0 {
		m, err := h.Matrix(ctx)
		if err != nil {
			return nil, err
		}
		return gptq.HessianFromSum(h.cols, m, 2, h.tokens) // 2/2·m = H
	}
	s := make([]float64, h.cols*h.cols)
	if err := cuda.Download(ctx, s, h.sum, 0); err != nil {
		return nil, err
	}
	return gptq.HessianFromSum(h.cols, s, h.samples, h.tokens)
}

// Merge adds o's sums to h's, as gptq.Hessian.Merge does on the host (the same float64
// additions on the upper triangle), and its sample and token counts.
func (h *Hessian) Merge(ctx context.Context, o *Hessian) error {
	if o.cols != h.cols {
		return fmt.Errorf("%w: merging a Hessian of %d columns into one of %d", gptq.ErrShape, o.cols, h.cols)
	}
	if h.scale != 0 || o.scale != 0 {
		return fmt.Errorf("%w: merging an uploaded Hessian matrix", gptq.ErrShape)
	}
	g, b := grid2(h.cols, h.cols)
	if err := h.k.hessMerge.Launch(ctx, g, b, 0, h.sum, o.sum, int32(h.cols)); err != nil {
		return err
	}
	h.samples += o.samples
	h.tokens += o.tokens
	return nil
}

// ReleaseScratch frees the float32 buffers Add uses (accumulation is normally done by the
// time the Hessian is factored); Add allocates them again if called later.
func (h *Hessian) ReleaseScratch() {
	h.tmp.Free()
	h.stage.Free()
	h.tmp, h.stage = nil, nil
}

// Close frees the Hessian's device memory.
func (h *Hessian) Close() {
	h.ReleaseScratch()
	h.sum.Free()
}
