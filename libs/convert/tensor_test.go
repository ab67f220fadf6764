package convert

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"quantfleet.dev/libs/ggml"
	"quantfleet.dev/libs/safetensors"
)

// memSource is one in-memory F32 tensor.
type memSource struct {
	t    safetensors.Tensor
	data []byte
}

func (m memSource) Lookup(name string) (safetensors.Tensor, bool) { return m.t, name == m.t.Name }
func (m memSource) ReadRaw(safetensors.Tensor) ([]byte, error)    { return m.data, nil }

func f32Source(name string, rows, cols int, vals func(i int) float32) memSource {
	b := make([]byte, 4*rows*cols)
	for i := 0; i < rows*cols; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(vals(i)))
	}
	return memSource{safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: []int64{int64(rows), int64(cols)}, End: int64(len(b))}, b}
}

func TestProduceRejectsNonFinite(t *testing.T) {
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		src := f32Source("w", 2, 32, func(i int) float32 {
			if i == 40 {
				return bad
			}
			return float32(i)
		})
		tp := TensorPlan{Name: "blk.0.ffn_up.weight", Source: "w", Ne: []uint64{32, 2}, Intermediate: ggml.F16, Type: ggml.Q8_0}
		if _, err := tp.Produce(src, RopeFreqs{}); !errors.Is(err, ErrNotFinite) {
			t.Errorf("value %v: err = %v, want ErrNotFinite", bad, err)
		}
	}
	ok := f32Source("w", 2, 32, func(i int) float32 { return float32(i) / 7 })
	tp := TensorPlan{Name: "blk.0.ffn_up.weight", Source: "w", Ne: []uint64{32, 2}, Intermediate: ggml.F16, Type: ggml.Q8_0}
	out, err := tp.Produce(ok, RopeFreqs{})
	if err != nil || len(out) != 2*ggml.Q8_0.TypeSize() {
		t.Fatalf("finite input: %d bytes, %v", len(out), err)
	}
}
