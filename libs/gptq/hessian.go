package gptq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// hessianChunk is the number of tokens whose Gram matrix is formed in float32 before it is
// added to the float64 sum.
const hessianChunk = 512

// Hessian accumulates the GPTQ Hessian H = 2/n · Σ x xᵀ of one linear layer's inputs x,
// where n counts calibration samples (sequences), as the reference implementation's running
// average does. The scale of H does not change the result, because damping is relative to
// its mean diagonal.
//
// Each chunk of up to 512 tokens is multiplied in float32 (like the reference) and added to
// a float64 sum, so the accumulated rounding error does not grow with the number of tokens.
// The zero value is not usable; create one with NewHessian.
type Hessian struct {
	cols    int
	sum     []float64 // Σ x xᵀ, cols×cols, upper triangle (the lower one is not kept up to date)
	samples int
	tokens  int64
	tmp     []float32
}

// NewHessian returns an empty Hessian for a linear layer with cols input features.
func NewHessian(cols int) *Hessian {
	if cols <= 0 {
		panic(fmt.Sprintf("gptq: NewHessian(%d)", cols))
	}
	return &Hessian{cols: cols, sum: make([]float64, cols*cols)}
}

// HessianFromSum wraps an already accumulated Σ x xᵀ (cols×cols, row-major; only the upper
// triangle is read) over the given numbers of samples and tokens, e.g. one computed by another
// process or on a GPU. The slice is used in place.
func HessianFromSum(cols int, sum []float64, samples int, tokens int64) (*Hessian, error) {
	if cols <= 0 || len(sum) != cols*cols {
		return nil, fmt.Errorf("%w: sum has %d elements for %d columns", ErrShape, len(sum), cols)
	}
	if samples <= 0 {
		return nil, fmt.Errorf("%w: %d samples", ErrNoSamples, samples)
	}
	return &Hessian{cols: cols, sum: sum, samples: samples, tokens: tokens}, nil
}

// Cols returns the number of input features.
func (h *Hessian) Cols() int { return h.cols }

// Samples returns the number of samples (sequences) added so far.
func (h *Hessian) Samples() int { return h.samples }

// Tokens returns the number of input vectors added so far.
func (h *Hessian) Tokens() int64 { return h.tokens }

// Add adds the inputs x of tokens vectors (row-major tokens×cols, one row per token, padding
// already removed) that came from the given number of samples. The reference counts the
// batch dimension of each forward pass as samples; pass tokens to count tokens instead.
func (h *Hessian) Add(x []float32, tokens, samples int) error {
	if tokens < 0 || len(x) != tokens*h.cols {
		return fmt.Errorf("%w: %d values for %d tokens of %d features", ErrShape, len(x), tokens, h.cols)
	}
	if samples <= 0 {
		return fmt.Errorf("%w: %d samples", ErrNoSamples, samples)
	}
	n := h.cols
	if h.tmp == nil {
		h.tmp = make([]float32, n*n)
	}
	for t0 := 0; t0 < tokens; t0 += hessianChunk {
		t1 := min(t0+hessianChunk, tokens)
		chunk := x[t0*n : t1*n]
		gemm(true, false, n, n, t1-t0, 1, chunk, n, chunk, n, 0, h.tmp, n)
		for i := 0; i < n; i++ {
			s, t := h.sum[i*n+i:(i+1)*n], h.tmp[i*n+i:(i+1)*n]
			for j := range s {
				s[j] += float64(t[j])
			}
		}
	}
	h.samples += samples
	h.tokens += int64(tokens)
	return nil
}

// Merge adds the sums of o, a Hessian of the same layer accumulated on other samples.
func (h *Hessian) Merge(o *Hessian) error {
	if o.cols != h.cols {
		return fmt.Errorf("%w: merging a Hessian of %d columns into one of %d", ErrShape, o.cols, h.cols)
	}
	n := h.cols
	for i := 0; i < n; i++ {
		s, t := h.sum[i*n+i:(i+1)*n], o.sum[i*n+i:(i+1)*n]
		for j := range s {
			s[j] += t[j]
		}
	}
	h.samples += o.samples
	h.tokens += o.tokens
	return nil
}

// Matrix returns H = 2/samples · Σ x xᵀ as a full symmetric cols×cols row-major matrix.
// It also releases Add's float32 scratch matrix (accumulation is normally done by then).
func (h *Hessian) Matrix() ([]float64, error) {
	if h.samples == 0 {
		return nil, ErrNoSamples
	}
	h.tmp = nil
	n := h.cols
	out := make([]float64, n*n)
	f := 2 / float64(h.samples)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			v := f * h.sum[i*n+j]
			out[i*n+j] = v
			out[j*n+i] = v
		}
	}
	return out, nil
}

// hessianMagic starts the binary form of a Hessian.
const hessianMagic = "GPTQH\x00\x00\x01"

// MarshalBinary encodes the Hessian (upper triangle of the sum, counts) so that a partial
// sum can travel between processes.
func (h *Hessian) MarshalBinary() ([]byte, error) {
	n := h.cols
	buf := make([]byte, 0, len(hessianMagic)+24+8*n*(n+1)/2)
	buf = append(buf, hessianMagic...)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(n))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(h.samples))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(h.tokens))
	for i := 0; i < n; i++ {
		for _, v := range h.sum[i*n+i : (i+1)*n] {
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
		}
	}
	return buf, nil
}

// UnmarshalBinary decodes what MarshalBinary produced.
func (h *Hessian) UnmarshalBinary(data []byte) error {
	if len(data) < len(hessianMagic)+24 || string(data[:len(hessianMagic)]) != hessianMagic {
		return errors.New("gptq: not an encoded Hessian")
	}
	p := data[len(hessianMagic):]
	n64 := binary.LittleEndian.Uint64(p)
	samples := binary.LittleEndian.Uint64(p[8:])
	tokens := binary.LittleEndian.Uint64(p[16:])
	p = p[24:]
	if n64 == 0 || n64 > 1<<20 || uint64(len(p)) != 8*n64*(n64+1)/2 || samples > math.MaxInt32 || tokens > math.MaxInt64 {
		return errors.New("gptq: encoded Hessian has inconsistent sizes")
	}
	n := int(n64)
	sum := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			sum[i*n+j] = math.Float64frombits(binary.LittleEndian.Uint64(p))
			p = p[8:]
		}
	}
	*h = Hessian{cols: n, sum: sum, samples: int(samples), tokens: int64(tokens)}
	return nil
}
