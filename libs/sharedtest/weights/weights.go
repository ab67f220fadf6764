// Package weights edits the safetensors weights of a test checkpoint: tests that feed a model
// whose tensors disagree with its config.json build it from a valid one with these.
package weights

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"quantfleet.dev/libs/safetensors"
)

// Edit is a change to a checkpoint's list of tensors.
type Edit func(ts []safetensors.WriteTensor) []safetensors.WriteTensor

// Write reads the single-file checkpoint in src, applies edit and writes the result as
// dst/model.safetensors.
func Write(tb testing.TB, src, dst string, edit Edit) {
	tb.Helper()
	st, err := safetensors.OpenModel(src)
	if err != nil {
		tb.Fatal(err)
	}
	defer st.Close()
	var ts []safetensors.WriteTensor
	for _, x := range st.Tensors() {
		raw, err := st.ReadRaw(x.Name)
		if err != nil {
			tb.Fatal(err)
		}
		ts = append(ts, safetensors.WriteTensor{Name: x.Name, DType: x.DType, Shape: x.Shape, Data: raw})
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := safetensors.WriteFile(filepath.Join(dst, "model.safetensors"), edit(ts), nil); err != nil {
		tb.Fatal(err)
	}
}

// Reshape gives tensor name a new shape, with zero data.
func Reshape(name string, shape ...int64) Edit {
	return func(ts []safetensors.WriteTensor) []safetensors.WriteTensor {
		for i, x := range ts {
			if x.Name == name {
				n := x.DType.Size()
				for _, d := range shape {
					n *= d
				}
				ts[i].Shape, ts[i].Data = shape, make([]byte, n)
			}
		}
		return ts
	}
}

// Drop removes tensor name.
func Drop(name string) Edit {
	return func(ts []safetensors.WriteTensor) []safetensors.WriteTensor {
		return slices.DeleteFunc(ts, func(x safetensors.WriteTensor) bool { return x.Name == name })
	}
}

// Copy adds a copy of tensor from under the name to.
func Copy(from, to string) Edit {
	return func(ts []safetensors.WriteTensor) []safetensors.WriteTensor {
		i := slices.IndexFunc(ts, func(x safetensors.WriteTensor) bool { return x.Name == from })
		c := ts[i]
		c.Name = to
		return append(ts, c)
	}
}
