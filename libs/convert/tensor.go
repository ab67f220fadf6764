package convert

import (
	"encoding/binary"
	"fmt"
	"math"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/ggml"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/safetensors"
)

// Source gives access to a checkpoint's tensors; *hfmodel.Model implements it.
type Source interface {
	Lookup(name string) (safetensors.Tensor, bool)
	ReadRaw(t safetensors.Tensor) ([]byte, error)
}

var _ Source = (*hfmodel.Model)(nil)

// RopeFreqs describes the rope_freqs tensor generated for rope_type llama3.
type RopeFreqs struct {
	Enabled                      bool    `json:"enabled"`
	Dim                          int     `json:"dim"`
	Base                         float64 `json:"base"`
	Factor                       float64 `json:"factor"`
	LowFreq                      float64 `json:"low_freq_factor"`
	HighFreq                     float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbedding float64 `json:"original_max_position_embeddings"`
	// LongFactors and ShortFactors are Phi-3 LongRoPE's rope_factors_long/short.
	LongFactors  []float64 `json:"long_factors,omitempty"`
	ShortFactors []float64 `json:"short_factors,omitempty"`
}

func ropeFreqsFrom(c *hfmodel.Config) RopeFreqs {
	if c.RopeType() != "llama3" {
		return RopeFreqs{}
	}
	get := func(key string, def float64) float64 {
		if v, ok := c.RopeFloat(key); ok {
			return v
		}
		return def
	}
	return RopeFreqs{Enabled: true, Dim: c.RopeDim(), Base: get("rope_theta", 10000),
		Factor: get("factor", 8), LowFreq: get("low_freq_factor", 1), HighFreq: get("high_freq_factor", 4),
		OriginalMaxPositionEmbedding: get("original_max_position_embeddings", 8192)}
}

// values computes LlamaModel.generate_extra_tensors' rope factors the way torch evaluates that
// Python code on float32 tensors: Python scalars are rounded to float32 first, a scalar divided by
// a tensor is the tensor's reciprocal times the scalar (Tensor.__rtruediv__), and every step
// rounds to float32 (no fused multiply-adds).
func (r RopeFreqs) values() []float32 {
	out := make([]float32, r.Dim/2)
	lowWavelen := float32(r.OriginalMaxPositionEmbedding / r.LowFreq)
	highWavelen := float32(r.OriginalMaxPositionEmbedding / r.HighFreq)
	base, factor := float32(r.Base), float32(r.Factor)
	twoPi, orig, low := float32(2*math.Pi), float32(r.OriginalMaxPositionEmbedding), float32(r.LowFreq)
	span := float32(r.HighFreq - r.LowFreq)
	for i := range out {
		freq := 1 / powf(base, float32(2*i)/float32(r.Dim))
		wavelen := float32(1/freq) * twoPi
		switch {
		case wavelen < highWavelen:
			out[i] = 1
		case wavelen > lowWavelen:
			out[i] = factor
		default:
			smooth := (float32(float32(1/wavelen)*orig) - low) / span
			out[i] = 1 / (float32((1-smooth)/factor) + smooth)
		}
	}
	return out
}

// powf stands for torch's float32 pow (SLEEF's powf, within one ulp) with the correctly rounded
// result; the two can differ in the last bit (see TestRopeFreqsMatchConverter).
func powf(x, y float32) float32 {
	return float32(math.Pow(float64(x), float64(y)))
}

// Produce computes the tensor's GGUF bytes (without padding): read, widen to float32, permute,
// round through the converter's intermediate type, then convert or quantize to the target type.
func (t TensorPlan) Produce(src Source, rope RopeFreqs) ([]byte, error) {
	var data []float32
	switch t.Generated {
	case "rope_freqs":
		data = rope.values()
	case "rope_factors_long", "rope_factors_short":
		f := rope.LongFactors
		if t.Generated == "rope_factors_short" {
			f = rope.ShortFactors
		}
		data = make([]float32, len(f))
		for i, v := range f {
			data[i] = float32(v)
		}
	case "":
		sources := t.Sources
		if len(sources) == 0 {
			sources = []string{t.Source}
		}
		for _, name := range sources {
			part, st, err := readFloat32(src, name)
			if err != nil {
				return nil, err
			}
			if t.AddOne {
				addOne(part, st.DType)
			}
			if t.PermuteHeads > 0 {
				cols := 1
				if len(st.Shape) > 1 {
					cols = int(st.NumElements() / st.Shape[0])
				}
				part = permuteRows(part, int(st.Shape[0]), cols, t.PermuteHeads)
			}
			data = append(data, part...)
		}
	default:
		return nil, fmt.Errorf("tensor %s: unknown generated tensor %q", t.Name, t.Generated)
	}
	if uint64(len(data)) != t.elements() {
		return nil, fmt.Errorf("tensor %s: %d values for dims %v", t.Name, len(data), t.Ne)
	}
	inter, err := encodeFloat(t.Intermediate, data)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if t.Type == t.Intermediate {
		return inter, nil
	}
	if t.Intermediate != ggml.F32 {
		if err := ggml.Dequantize(t.Intermediate, data, inter); err != nil {
			return nil, err
		}
	}
	out := make([]byte, t.Size)
	if t.Size == 0 {
		out = make([]byte, ggml.Type(t.Type).RowSize(int64(len(data))))
	}
	if err := ggml.Quantize(t.Type, out, data, int(t.Ne[0])); err != nil {
		return nil, fmt.Errorf("tensor %s to %s: %w", t.Name, t.Type, err)
	}
	if err := ggml.ValidateRowData(t.Type, out); err != nil {
		return nil, fmt.Errorf("tensor %s: quantized data validation failed: %w", t.Name, err)
	}
	return out, nil
}

// readFloat32 reads one source tensor as float32 and refuses NaN/Inf.
func readFloat32(src Source, name string) ([]float32, safetensors.Tensor, error) {
	st, ok := src.Lookup(name)
	if !ok {
		return nil, st, fmt.Errorf("%w: %s", safetensors.ErrNotFound, name)
	}
	raw, err := src.ReadRaw(st)
	if err != nil {
		return nil, st, err
	}
	data := make([]float32, st.NumElements())
	if err := safetensors.DecodeFloat32(st.DType, raw, data); err != nil {
		return nil, st, fmt.Errorf("tensor %s: %w", name, err)
	}
	if err := checkFinite(data); err != nil {
		return nil, st, fmt.Errorf("tensor %s: %w", name, err)
	}
	return data, st, nil
}

// addOne is Gemma's norm shift, `data_torch + 1` in the converter: bf16 has been widened to
// float32 there first, float16 stays float16, so its sum is rounded to float16.
func addOne(v []float32, dt safetensors.DType) {
	for i := range v {
		v[i]++
	}
	if dt == safetensors.F16 {
		b := make([]byte, 2*len(v))
		if ggml.Quantize(ggml.F16, b, v, len(v)) == nil {
			_ = ggml.Dequantize(ggml.F16, v, b)
		}
	}
}

func (t TensorPlan) elements() uint64 {
	n := uint64(1)
	for _, d := range t.Ne {
		n *= d
	}
	return n
}

// ErrNotFinite reports a NaN or Inf in a source tensor; llama-quantize refuses such input too.
var ErrNotFinite = fault.New(fault.ErrBadInput, "value is NaN or Inf")

func checkFinite(v []float32) error {
	for i, f := range v {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return fmt.Errorf("element %d: %w", i, ErrNotFinite)
		}
	}
	return nil
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

// encodeFloat writes float32 values as F32, F16 or BF16 with ggml's rounding.
func encodeFloat(t ggml.Type, v []float32) ([]byte, error) {
	switch t {
	case ggml.F32:
		return f32Bytes(v), nil
	case ggml.F16, ggml.BF16:
		out := make([]byte, 2*len(v))
		if err := ggml.Quantize(t, out, v, len(v)); err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, fmt.Errorf("intermediate type %s is not a float type", t)
}
