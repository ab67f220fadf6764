package ggufdump

import (
	"bytes"
	"math"
	"testing"

	"quantfleet.dev/libs/ggml"
	"quantfleet.dev/libs/gguf"
)

// The test files of package gguf that these tests write, built with its public writer.
// allKinds has one KV of every Go type the package maps to GGUF.
func allKinds() []gguf.KV {
	return []gguf.KV{
		{Key: "u8", Value: uint8(200)}, {Key: "i8", Value: int8(-100)}, {Key: "u16", Value: uint16(60000)}, {Key: "i16", Value: int16(-30000)},
		{Key: "u32", Value: uint32(4000000000)}, {Key: "i32", Value: int32(-2000000000)}, {Key: "f32", Value: float32(1e-5)},
		{Key: "bool.t", Value: true}, {Key: "bool.f", Value: false}, {Key: "str", Value: "héllo \"w\"\n\x01"},
		{Key: "u64", Value: uint64(math.MaxUint64)}, {Key: "i64", Value: int64(math.MinInt64)}, {Key: "f64", Value: -10000.0},
		{Key: "a.u8", Value: []uint8{1, 2, 255}}, {Key: "a.i8", Value: []int8{-1, 2}}, {Key: "a.u16", Value: []uint16{7}}, {Key: "a.i16", Value: []int16{-7, 7}},
		{Key: "a.u32", Value: []uint32{1, 2}}, {Key: "a.i32", Value: []int32{-1, 0, 1}}, {Key: "a.f32", Value: []float32{0.5, float32(math.Inf(-1))}},
		{Key: "a.bool", Value: []bool{true, false, true}}, {Key: "a.str", Value: []string{"", "a", "日本"}}, {Key: "a.u64", Value: []uint64{1 << 63}},
		{Key: "a.i64", Value: []int64{-5}}, {Key: "a.f64", Value: []float64{math.Pi}}, {Key: "a.empty", Value: []string{}},
	}
}

// testTensors returns infos and deterministic data for a few tensors of varied types.
func testTensors() ([]gguf.TensorInfo, [][]byte) {
	infos := []gguf.TensorInfo{
		{Name: "token_embd.weight", Dims: []uint64{64, 3}, Type: ggml.Q8_0},
		{Name: "norm", Dims: []uint64{5}, Type: ggml.F32},
		{Name: "blk.0.ffn_down.weight", Dims: []uint64{256, 2, 1}, Type: ggml.Q4_K},
		{Name: "x.bf16", Dims: []uint64{3, 1, 1, 2}, Type: ggml.BF16},
	}
	var data [][]byte
	for i, t := range infos {
		b := make([]byte, t.Size())
		for j := range b {
			b[j] = byte(j*7 + i)
		}
		data = append(data, b)
	}
	return infos, data
}

func writeTestFile(t *testing.T, h *gguf.Header, data [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := gguf.NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for i, ti := range h.Tensors {
		if err := w.WriteTensor(ti.Name, data[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
