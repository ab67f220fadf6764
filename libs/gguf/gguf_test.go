package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"quantfleet.dev/libs/ggml"
)

// allKinds has one KV of every Go type the package maps to GGUF.
func allKinds() []KV {
	return []KV{
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
func testTensors() ([]TensorInfo, [][]byte) {
	infos := []TensorInfo{
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

func writeTestFile(t *testing.T, h *Header, data [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
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

func TestRoundTrip(t *testing.T) {
	infos, data := testTensors()
	h := &Header{KV: allKinds(), Tensors: infos}
	file := writeTestFile(t, h, data)
	// Sizes from the ggml block tables: Q8_0 2 blocks × 34 × 3 rows, Q4_K 1 × 144 × 2.
	wantSizes := []uint64{204, 20, 288, 12}
	wantOffsets := []uint64{0, 224, 256, 544}
	f, err := Read(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 {
		t.Errorf("version %d", f.Version)
	}
	if !reflect.DeepEqual(f.KV, allKinds()) {
		t.Errorf("KV =\n%#v\nwant\n%#v", f.KV, allKinds())
	}
	if f.DataOffset%32 != 0 {
		t.Errorf("DataOffset %d not aligned", f.DataOffset)
	}
	if int64(len(file)) != f.DataOffset+576 {
		t.Errorf("file size %d, want data offset %d + 576", len(file), f.DataOffset)
	}
	for i, ti := range f.Tensors {
		if ti.Size() != wantSizes[i] || ti.Offset != wantOffsets[i] {
			t.Errorf("%s: size %d offset %d, want %d %d", ti.Name, ti.Size(), ti.Offset, wantSizes[i], wantOffsets[i])
		}
		if !reflect.DeepEqual(ti.Dims, infos[i].Dims) || ti.Type != infos[i].Type || ti.Name != infos[i].Name {
			t.Errorf("tensor %d = %+v, want %+v", i, ti, infos[i])
		}
		got, err := f.TensorData(ti.Name)
		if err != nil || !bytes.Equal(got, data[i]) {
			t.Errorf("TensorData(%s): %v", ti.Name, err)
		}
		// The padding after each tensor, including the last, is zero.
		end := f.DataOffset + int64(ti.Offset+ti.Size())
		for _, b := range file[end : end+int64(DataPadding(ti.Size()))] {
			if b != 0 {
				t.Fatalf("non-zero padding after %s", ti.Name)
			}
		}
	}
	if _, err := f.TensorData("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tensor: %v", err)
	}
	if n := infos[3].NumElements(); n != 6 {
		t.Errorf("NumElements = %d", n)
	}
}

func TestOpenFile(t *testing.T) {
	infos, data := testTensors()
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, writeTestFile(t, &Header{Tensors: infos}, data), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := f.TensorReader("norm")
	if err != nil || r.Size() != 20 {
		t.Fatalf("TensorReader: %v", err)
	}
	os.WriteFile(path, []byte("GGUF\x03"), 0o644)
	if _, err := Open(path); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), path) {
		t.Errorf("truncated Open: %v", err)
	}
}

func TestMarshalBinaryBytes(t *testing.T) {
	// Expected bytes spelled out from the format description (notes/gguf.md §1.2).
	h := &Header{KV: []KV{{"a", uint32(7)}, {"s", []string{"xy"}}}, Tensors: []TensorInfo{{Name: "t", Dims: []uint64{32, 2}, Type: ggml.Q8_0}}}
	if err := h.Layout(); err != nil {
		t.Fatal(err)
	}
	got, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var w []byte
	le := binary.LittleEndian
	w = append(w, 'G', 'G', 'U', 'F', 3, 0, 0, 0)
	w = le.AppendUint64(w, 1)                     // tensors
	w = le.AppendUint64(w, 2)                     // kv
	w = append(le.AppendUint64(w, 1), 'a')        // key
	w = le.AppendUint32(le.AppendUint32(w, 4), 7) // UINT32 7
	w = append(le.AppendUint64(w, 1), 's')
	w = le.AppendUint64(le.AppendUint32(le.AppendUint32(w, 9), 8), 1) // ARRAY of STRING, 1 element
	w = append(le.AppendUint64(w, 2), 'x', 'y')
	w = append(le.AppendUint64(w, 1), 't')
	w = le.AppendUint32(w, 2)
	w = le.AppendUint64(le.AppendUint64(w, 32), 2)
	w = le.AppendUint64(le.AppendUint32(w, 8), 0) // Q8_0, offset 0
	for len(w)%32 != 0 {
		w = append(w, 0)
	}
	if !bytes.Equal(got, w) {
		t.Errorf("got\n% x\nwant\n% x", got, w)
	}
}

func TestSetRemove(t *testing.T) {
	h := &Header{KV: []KV{{"a", uint32(1)}, {"general.file_type", uint32(7)}, {"b", "x"}}}
	h.Set("general.file_type", uint32(15))
	h.Set("c", true)
	want := []KV{{"a", uint32(1)}, {"b", "x"}, {"general.file_type", uint32(15)}, {"c", true}}
	if !reflect.DeepEqual(h.KV, want) {
		t.Errorf("KV = %v, want %v", h.KV, want)
	}
	if v, ok := h.Get("b"); !ok || v != "x" {
		t.Errorf("Get(b) = %v, %v", v, ok)
	}
	if !h.Remove("a") || h.Remove("a") {
		t.Error("Remove reported wrongly")
	}
	if _, ok := h.Get("a"); ok || len(h.KV) != 3 {
		t.Errorf("after Remove: %v", h.KV)
	}
}

func TestValidate(t *testing.T) {
	ok := TensorInfo{Name: "t", Dims: []uint64{32}, Type: ggml.Q4_0}
	tests := []struct {
		name string
		h    Header
		msg  string
	}{
		{"empty key", Header{KV: []KV{{"", uint8(1)}}}, "empty"},
		{"duplicate key", Header{KV: []KV{{"k", uint8(1)}, {"k", uint8(2)}}}, "duplicate key"},
		{"int type", Header{KV: []KV{{"k", 5}}}, "Go type int"},
		{"nested array", Header{KV: []KV{{"k", [][]int32{{1}}}}}, "Go type"},
		{"alignment type", Header{KV: []KV{{KeyAlignment, uint64(32)}}}, "must be uint32"},
		{"alignment value", Header{KV: []KV{{KeyAlignment, uint32(12)}}}, "power of 2"},
		{"long name", Header{Tensors: []TensorInfo{{Name: strings.Repeat("n", 64), Dims: []uint64{1}, Type: ggml.F32}}}, "must be < 64"},
		{"duplicate tensor", Header{Tensors: []TensorInfo{ok, ok}}, "duplicate tensor"},
		{"no dims", Header{Tensors: []TensorInfo{{Name: "t", Type: ggml.F32}}}, "0 dimensions"},
		{"five dims", Header{Tensors: []TensorInfo{{Name: "t", Dims: []uint64{1, 1, 1, 1, 1}, Type: ggml.F32}}}, "5 dimensions"},
		{"block size", Header{Tensors: []TensorInfo{{Name: "t", Dims: []uint64{48}, Type: ggml.Q4_0}}}, "not a multiple of block size 32"},
		{"unknown type", Header{Tensors: []TensorInfo{{Name: "t", Dims: []uint64{1}, Type: 4}}}, "unknown ggml type"},
		{"too many elements", Header{Tensors: []TensorInfo{{Name: "t", Dims: []uint64{1 << 32, 1 << 32}, Type: ggml.F32}}}, "too many elements"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			_, err := NewWriter(&bytes.Buffer{}, &h)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want ErrInvalid containing %q", err, tc.msg)
			}
		})
	}
	// MarshalBinary without Layout: offsets must match.
	h := Header{Tensors: []TensorInfo{ok, {Name: "u", Dims: []uint64{32}, Type: ggml.Q4_0}}}
	if _, err := h.MarshalBinary(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "expected 32") {
		t.Errorf("unlaid-out offsets: %v", err)
	}
}

func TestWriterMisuse(t *testing.T) {
	infos, data := testTensors()
	h := &Header{Tensors: infos}
	w, err := NewWriter(&bytes.Buffer{}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("norm", data[1]); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `expected "token_embd.weight"`) {
		t.Errorf("out of order: %v", err)
	}
	if err := w.WriteTensor(infos[0].Name, data[0][1:]); !errors.Is(err, ErrInvalid) {
		t.Errorf("short data: %v", err)
	}
	if err := w.WriteTensor(infos[0].Name, data[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensorFrom(infos[1].Name, bytes.NewReader(data[1])); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "2 of 4") {
		t.Errorf("Close with missing tensors: %v", err)
	}
	if err := w.WriteTensorFrom(infos[2].Name, bytes.NewReader(data[2][:10])); !errors.Is(err, ErrInvalid) {
		t.Errorf("short reader: %v", err)
	}
	if err := w.Close(); err == nil {
		t.Error("Close after failed write succeeded")
	}
}

// raw builds hand-crafted GGUF bytes, like test-gguf.cpp's handcrafted files.
type raw struct{ b []byte }

func (r *raw) u32(v uint32) *raw             { r.b = binary.LittleEndian.AppendUint32(r.b, v); return r }
func (r *raw) u64(v uint64) *raw             { r.b = binary.LittleEndian.AppendUint64(r.b, v); return r }
func (r *raw) str(s string) *raw             { r.u64(uint64(len(s))); r.b = append(r.b, s...); return r }
func (r *raw) bytes(p ...byte) *raw          { r.b = append(r.b, p...); return r }
func (r *raw) kvU32(k string, v uint32) *raw { return r.str(k).u32(uint32(TypeUint32)).u32(v) }
func (r *raw) head(nT, nKV uint64) *raw      { return r.bytes('G', 'G', 'U', 'F').u32(3).u64(nT).u64(nKV) }
func (r *raw) tensor(name string, typ ggml.Type, off uint64, dims ...uint64) *raw {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.u64(d)
	}
	return r.u32(uint32(typ)).u64(off)
}
func (r *raw) pad(align int) *raw {
	for len(r.b)%align != 0 {
		r.b = append(r.b, 0)
	}
	return r
}
func (r *raw) zeros(n int) *raw { r.b = append(r.b, make([]byte, n)...); return r }

func TestReadCorrupt(t *testing.T) {
	h := func(nT, nKV uint64) *raw { return new(raw).head(nT, nKV) }
	long := strings.Repeat("x", 64)
	tests := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty file", nil, ErrTruncated, "magic"},
		{"bad magic", new(raw).bytes('F', 'U', 'G', 'G').u32(3).u64(0).u64(0).b, ErrBadMagic, "FUGG"},
		{"version 0", new(raw).bytes('G', 'G', 'U', 'F').u32(0).u64(0).u64(0).b, ErrVersion, "version 0"},
		{"version 1", new(raw).bytes('G', 'G', 'U', 'F').u32(1).u64(0).u64(0).b, ErrVersion, "v1"},
		{"version future", new(raw).bytes('G', 'G', 'U', 'F').u32(4).u64(0).u64(0).b, ErrVersion, "version 4"},
		{"big endian", new(raw).bytes('G', 'G', 'U', 'F').u32(0x03000000).u64(0).u64(0).b, ErrVersion, "big-endian"},
		{"n_tensors -1", h(math.MaxUint64, 0).b, ErrCorrupt, "cannot fit"},
		{"n_kv -1", h(0, math.MaxUint64).b, ErrCorrupt, "cannot fit"},
		{"n_kv absurd", h(0, 1<<40).zeros(1000).b, ErrCorrupt, "cannot fit"},
		{"truncated counts", new(raw).bytes('G', 'G', 'U', 'F').u32(3).u64(0).b, ErrTruncated, ""},
		{"key size -1", h(0, 1).u64(math.MaxUint64).zeros(40).b, ErrCorrupt, "exceeds maximum"},
		{"key beyond file", h(0, 1).u64(1000).zeros(40).b, ErrTruncated, "exceeds remaining"},
		{"empty key", h(0, 1).str("").u32(uint32(TypeUint8)).bytes(1).zeros(20).b, ErrCorrupt, "empty"},
		{"bad type", h(0, 1).str("k").u32(13).zeros(20).b, ErrCorrupt, "invalid value type 13"},
		{"array of arrays", h(0, 1).str("k").u32(9).u32(9).u64(0).zeros(20).b, ErrCorrupt, "invalid array element type 9"},
		{"array bad elem", h(0, 1).str("k").u32(9).u32(13).u64(0).zeros(20).b, ErrCorrupt, "element type 13"},
		{"array count absurd", h(0, 1).str("k").u32(9).u32(uint32(TypeUint32)).u64(1 << 62).zeros(20).b, ErrTruncated, "array of"},
		{"string array count absurd", h(0, 1).str("k").u32(9).u32(uint32(TypeString)).u64(1 << 40).zeros(20).b, ErrTruncated, "array of"},
		{"string too long", h(0, 1).str("k").u32(uint32(TypeString)).u64(1<<30 + 1).zeros(20).b, ErrCorrupt, "exceeds maximum"},
		{"duplicate key", h(0, 2).kvU32("k", 1).kvU32("k", 2).b, ErrCorrupt, `duplicate key "k"`},
		{"bad alignment", h(0, 1).kvU32(KeyAlignment, 13).pad(32).b, ErrCorrupt, "power of 2"},
		{"alignment not u32", h(0, 1).str(KeyAlignment).u32(uint32(TypeUint64)).u64(32).pad(32).b, ErrCorrupt, "uint32"},
		{"name too long", h(1, 0).tensor(long, ggml.F32, 0, 1).pad(32).zeros(32).b, ErrCorrupt, "must be < 64"},
		{"n_dims 5", h(1, 0).tensor("t", ggml.F32, 0, 1, 1, 1, 1, 1).pad(32).zeros(32).b, ErrCorrupt, "5 dimensions"},
		{"n_dims 0", h(1, 0).tensor("t", ggml.F32, 0).pad(32).zeros(32).b, ErrCorrupt, "0 dimensions"},
		{"negative dim", h(1, 0).tensor("t", ggml.F32, 0, math.MaxUint64).pad(32).zeros(32).b, ErrCorrupt, "beyond int64"},
		{"ne too big", h(1, 0).tensor("t", ggml.F32, 0, 4*math.MaxInt32, 4*math.MaxInt32, 4*math.MaxInt32).pad(32).zeros(32).b, ErrCorrupt, "too many elements"},
		{"nbytes too big", h(1, 0).tensor("t", ggml.I64, 0, 1<<31, 1<<31).pad(32).zeros(32).b, ErrCorrupt, "byte size"},
		{"bad ggml type", h(1, 0).tensor("t", 39, 0, 1).pad(32).zeros(32).b, ErrCorrupt, "unknown ggml type 39"},
		{"removed ggml type", h(1, 0).tensor("t", 4, 0, 32).pad(32).zeros(32).b, ErrCorrupt, "unknown ggml type 4"},
		{"block size", h(1, 0).tensor("t", ggml.Q4_0, 0, 33).pad(32).zeros(64).b, ErrCorrupt, "not a multiple of block size"},
		{"bad offset", h(1, 0).tensor("t", ggml.F32, math.MaxUint64, 8).pad(32).zeros(32).b, ErrCorrupt, `"t" has offset 18446744073709551615, expected 0`},
		{"gap offset", h(2, 0).tensor("a", ggml.F32, 0, 8).tensor("b", ggml.F32, 64, 8).pad(32).zeros(96).b, ErrCorrupt, `"b" has offset 64, expected 32`},
		{"duplicate tensor", h(2, 0).tensor("a", ggml.F32, 0, 8).tensor("a", ggml.F32, 32, 8).pad(32).zeros(64).b, ErrCorrupt, `duplicate tensor name "a"`},
		{"inconsistent alignment", h(2, 0).tensor("a", ggml.F32, 0, 3).tensor("b", ggml.F32, 12, 3).pad(32).zeros(64).b, ErrCorrupt, "expected 32"},
		{"not enough data", h(1, 0).tensor("a", ggml.F32, 0, 3).pad(32).zeros(31).b, ErrTruncated, "beyond the file size"},
		{"no data", h(1, 0).tensor("a", ggml.F32, 0, 3).b, ErrTruncated, "beyond the file size"},
		{"mem size overflow", h(2, 0).tensor("a", ggml.I8, 0, 0x7FFFFFFFFFFFFFC0).tensor("b", ggml.I8, 0x7FFFFFFFFFFFFFC0, 0x7FFFFFFFFFFFFFC0).pad(32).zeros(32).b, ErrCorrupt, "overflow"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tc.data), int64(len(tc.data)))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestReadValid(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		nT, nKV int
		dataOff int64
	}{
		{"header only", new(raw).head(0, 0).pad(32).b, 0, 0, 32},
		{"no padding without tensors", new(raw).head(0, 0).b, 0, 0, 32},
		{"kv only", new(raw).head(0, 1).kvU32("k", 1).b, 0, 1, 64},
		{"version 2", new(raw).bytes('G', 'G', 'U', 'F').u32(2).u64(0).u64(0).b, 0, 0, 32},
		{"name of 63 bytes", new(raw).head(1, 0).tensor(strings.Repeat("n", 63), ggml.F32, 0, 1).pad(32).zeros(32).b, 1, 0, 128},
		{"custom alignment 1", new(raw).head(2, 1).kvU32(KeyAlignment, 1).tensor("a", ggml.F32, 0, 3).tensor("b", ggml.F32, 12, 3).zeros(24).b, 2, 1, 123},
		{"custom alignment 64", new(raw).head(2, 1).kvU32(KeyAlignment, 64).tensor("a", ggml.F32, 0, 3).tensor("b", ggml.F32, 64, 3).pad(64).zeros(128).b, 2, 1, 128},
		{"bool any non-zero", new(raw).head(0, 1).str("b").u32(uint32(TypeBool)).bytes(7).b, 0, 1, 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Read(bytes.NewReader(tc.data), int64(len(tc.data)))
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Tensors) != tc.nT || len(f.KV) != tc.nKV || f.DataOffset != tc.dataOff {
				t.Fatalf("%d tensors, %d kv, data at %d; want %d %d %d", len(f.Tensors), len(f.KV), f.DataOffset, tc.nT, tc.nKV, tc.dataOff)
			}
			if tc.name == "bool any non-zero" && f.KV[0].Value != true {
				t.Fatalf("bool = %v", f.KV[0].Value)
			}
		})
	}
}

func TestReadEveryPrefix(t *testing.T) {
	infos, data := testTensors()
	file := writeTestFile(t, &Header{KV: allKinds(), Tensors: infos}, data)
	for n := 0; n < len(file); n++ {
		_, err := Read(bytes.NewReader(file[:n]), int64(n))
		if err == nil || !(errors.Is(err, ErrTruncated) || errors.Is(err, ErrCorrupt)) {
			t.Fatalf("prefix of %d bytes: err = %v", n, err)
		}
	}
}

func FuzzRead(f *testing.F) {
	infos, data := testTensors()
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, &Header{KV: allKinds(), Tensors: infos})
	for i, ti := range infos {
		w.WriteTensor(ti.Name, data[i])
	}
	valid := buf.Bytes()
	f.Add(valid)
	f.Add(valid[:100])
	f.Add(new(raw).head(0, 1).str("k").u32(9).u32(uint32(TypeString)).u64(1 << 40).zeros(20).b)
	f.Add(new(raw).head(2, 1).kvU32(KeyAlignment, 1).tensor("a", ggml.F32, 0, 3).tensor("b", ggml.F32, 12, 3).zeros(24).b)
	f.Add(new(raw).head(1, 0).tensor("t", ggml.Q4_0, 0, 32, 2).pad(32).zeros(36).b)
	f.Add(new(raw).head(1<<20, 1<<20).zeros(64).b)
	f.Fuzz(func(t *testing.T, b []byte) {
		gf, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		// Whatever is accepted must re-encode and read back identically.
		if _, err := gf.Header.MarshalBinary(); err != nil {
			t.Fatalf("accepted header does not marshal: %v", err)
		}
		for _, ti := range gf.Tensors {
			d, err := gf.TensorData(ti.Name)
			if err != nil || uint64(len(d)) != ti.Size() {
				t.Fatalf("tensor %q unreadable: %v", ti.Name, err)
			}
		}
	})
}

func BenchmarkWrite(b *testing.B) {
	infos := []TensorInfo{{Name: "w", Dims: []uint64{4096, 1024}, Type: ggml.Q4_K}}
	data := make([]byte, infos[0].Size())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h := &Header{KV: allKinds(), Tensors: infos}
		w, _ := NewWriter(sha256.New(), h)
		w.WriteTensor("w", data)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
