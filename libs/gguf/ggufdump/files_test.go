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
		{"u8", uint8(200)}, {"i8", int8(-100)}, {"u16", uint16(60000)}, {"i16", int16(-30000)},
		{"u32", uint32(4000000000)}, {"i32", int32(-2000000000)}, {"f32", float32(1e-5)},
		{"bool.t", true}, {"bool.f", false}, {"str", "héllo \"w\"\n\x01"},
		{"u64", uint64(math.MaxUint64)}, {"i64", int64(math.MinInt64)}, {"f64", -10000.0},
		{"a.u8", []uint8{1, 2, 255}}, {"a.i8", []int8{-1, 2}}, {"a.u16", []uint16{7}}, {"a.i16", []int16{-7, 7}},
		{"a.u32", []uint32{1, 2}}, {"a.i32", []int32{-1, 0, 1}}, {"a.f32", []float32{0.5, float32(math.Inf(-1))}},
		{"a.bool", []bool{true, false, true}}, {"a.str", []string{"", "a", "日本"}}, {"a.u64", []uint64{1 << 63}},
		{"a.i64", []int64{-5}}, {"a.f64", []float64{math.Pi}}, {"a.empty", []string{}},
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
