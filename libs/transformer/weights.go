package transformer

import (
	"errors"
	"fmt"
	"slices"

	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/safetensors"
)

// ErrWeightNotFound is wrapped by a WeightSource when it has no tensor of that name.
var ErrWeightNotFound = errors.New("weight not found")

// WeightSource yields a checkpoint's tensors as float32 with their shapes. A GPTQ or AWQ
// checkpoint reader implements it by dequantizing; a quantizer can wrap a source to
// substitute weights. Names are Hugging Face's ("model.layers.0.self_attn.q_proj.weight").
type WeightSource interface {
	Float32(name string) ([]float32, []int64, error)
}

// SafetensorsSource reads BF16, F16 and F32 tensors of a safetensors checkpoint.
type SafetensorsSource struct{ Model *safetensors.Model }

// Float32 implements WeightSource.
func (s SafetensorsSource) Float32(name string) ([]float32, []int64, error) {
	t, ok := s.Model.Lookup(name)
	for _, alt := range hfmodel.LanguageModelNames(name) { // the language model of a multimodal checkpoint
		if ok {
			break
		}
		if t, ok = s.Model.Lookup(alt); ok {
			name = alt
		}
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s in %s", ErrWeightNotFound, name, s.Model.Dir())
	}
	data, err := s.Model.ReadFloat32(name)
	if err != nil {
		return nil, nil, err
	}
	return data, t.Shape, nil
}

// Close closes the checkpoint files.
func (s SafetensorsSource) Close() error { return s.Model.Close() }

// loadTensor reads name and checks its shape.
func loadTensor(src WeightSource, name string, shape []int64) ([]float32, error) {
	data, got, err := src.Float32(name)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(got, shape) {
		return nil, fmt.Errorf("%w: tensor %s has shape %v, config.json implies %v", ErrBadConfig, name, got, shape)
	}
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if int64(len(data)) != n {
		return nil, fmt.Errorf("transformer: tensor %s: source returned %d values for shape %v", name, len(data), shape)
	}
	return data, nil
}
