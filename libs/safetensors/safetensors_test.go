package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"quantfleet.dev/libs/sharedtest"
)

// rawFile builds a safetensors file from a literal JSON header and dataLen zero bytes.
func rawFile(header string, dataLen int) []byte {
	b := make([]byte, 8, 8+len(header)+dataLen)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

func TestParseHeaderErrors(t *testing.T) {
	huge := make([]byte, 16)
	binary.LittleEndian.PutUint64(huge, 1<<62)
	lying := rawFile(`{}`, 0)
	binary.LittleEndian.PutUint64(lying, 1000)
	tests := []struct {
		name    string
		data    []byte
		want    error
		wantMsg string
	}{
		{"short", []byte{1, 2, 3}, ErrTruncated, "at least 8"},
		{"length beyond file", lying, ErrTruncated, "exceeds file size"},
		{"absurd length", huge, ErrBadHeader, "exceeds limit"},
		{"not object", rawFile(`[1,2]`, 0), ErrBadHeader, "not a JSON object"},
		{"bad json", rawFile(`{"a":`, 0), ErrBadHeader, ""},
		{"trailing garbage", rawFile(`{} x`, 0), ErrBadHeader, "trailing"},
		{"unknown dtype", rawFile(`{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}`, 2), ErrUnsupportedDType, `"w" has dtype "Q4"`},
		{"missing dtype", rawFile(`{"w":{"shape":[2],"data_offsets":[0,2]}}`, 2), ErrBadHeader, "no dtype"},
		{"missing shape", rawFile(`{"w":{"dtype":"U8","data_offsets":[0,2]}}`, 2), ErrBadHeader, "no shape"},
		{"negative shape", rawFile(`{"w":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}}`, 2), ErrBadHeader, "negative"},
		{"fractional shape", rawFile(`{"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,2]}}`, 2), ErrBadHeader, ""},
		{"overflowing shape", rawFile(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,2]}}`, 2), ErrBadHeader, "too large"},
		{"three offsets", rawFile(`{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,1,2]}}`, 2), ErrBadHeader, "2 entries"},
		{"offsets beyond data", rawFile(`{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, 2), ErrBadHeader, "outside data section"},
		{"reversed offsets", rawFile(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[2,1]}}`, 2), ErrBadHeader, "outside data section"},
		{"size mismatch", rawFile(`{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,2]}}`, 4), ErrBadHeader, "needs 4"},
		{"overlap", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6), ErrOverlap, `"a"`},
		{"overlap around empty", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"z":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},"b":{"dtype":"U8","shape":[4],"data_offsets":[3,7]}}`, 7), ErrOverlap, `"b"`},
		{"duplicate", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), ErrBadHeader, "duplicate"},
		{"metadata not strings", rawFile(`{"__metadata__":{"x":1}}`, 0), ErrBadHeader, "__metadata__"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHeader(bytes.NewReader(tc.data), int64(len(tc.data)))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %q, want it to contain %q", err, tc.wantMsg)
			}
		})
	}
}

func TestParseHeaderValid(t *testing.T) {
	// Entries listed out of offset order, a scalar, an empty tensor, trailing space padding.
	data := rawFile(`{"b":{"dtype":"F32","shape":[2],"data_offsets":[2,10]},"__metadata__":{"format":"pt"},`+
		`"s":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"e":{"dtype":"I64","shape":[0,3],"data_offsets":[10,10]}}   `, 10)
	h, err := ParseHeader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	start := int64(len(data) - 10)
	if h.DataStart != start {
		t.Errorf("DataStart = %d, want %d", h.DataStart, start)
	}
	want := []Tensor{
		{Name: "s", DType: BF16, Shape: []int64{}, Begin: start, End: start + 2},
		{Name: "b", DType: F32, Shape: []int64{2}, Begin: start + 2, End: start + 10},
		{Name: "e", DType: I64, Shape: []int64{0, 3}, Begin: start + 10, End: start + 10},
	}
	if !reflect.DeepEqual(h.Tensors, want) {
		t.Errorf("Tensors = %+v\nwant %+v", h.Tensors, want)
	}
	if h.Metadata["format"] != "pt" {
		t.Errorf("Metadata = %v", h.Metadata)
	}
	if n := want[0].NumElements(); n != 1 {
		t.Errorf("scalar NumElements = %d", n)
	}
	if n := want[2].NumElements(); n != 0 {
		t.Errorf("empty NumElements = %d", n)
	}
}

func TestEncodeHeaderBytes(t *testing.T) {
	// Expected bytes written out by hand from the format description: sorted keys, spaces
	// padding the JSON so that 8+len is a multiple of 8.
	hdr, err := EncodeHeader([]WriteTensor{
		{Name: "z", DType: F32, Shape: []int64{1}, Data: make([]byte, 4)},
		{Name: "a", DType: U8, Shape: []int64{2}, Data: make([]byte, 2)},
	}, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	js := `{"__metadata__":{"format":"pt"},"a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},` +
		`"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	for len(js)%8 != 0 {
		js += " "
	}
	want := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	want = append(want, js...)
	if !bytes.Equal(hdr, want) {
		t.Errorf("header =\n%q\nwant\n%q", hdr, want)
	}
}

func TestWriteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.safetensors")
	f32 := binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.5))
	f32 = binary.LittleEndian.AppendUint32(f32, math.Float32bits(-2))
	in := []WriteTensor{
		{Name: "w.f32", DType: F32, Shape: []int64{1, 2}, Data: f32},
		{Name: "w.bf16", DType: BF16, Shape: []int64{3}, Data: []byte{0x80, 0x3f, 0x00, 0xc0, 0x80, 0x7f}},
		{Name: "w.f16", DType: F16, Shape: []int64{2}, Data: []byte{0x00, 0x3c, 0x01, 0x00}},
		{Name: "q.i32", DType: I32, Shape: []int64{2}, Data: []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}},
		{Name: "scalar", DType: U8, Shape: nil, Data: []byte{7}},
	}
	if err := WriteFile(path, in, map[string]string{"format": "pt", "k": "v"}); err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Metadata(); !reflect.DeepEqual(got, map[string]string{"format": "pt", "k": "v"}) {
		t.Errorf("metadata = %v", got)
	}
	ts := m.Tensors()
	if len(ts) != len(in) {
		t.Fatalf("%d tensors, want %d", len(ts), len(in))
	}
	for i, w := range in {
		got := ts[i]
		if got.Name != w.Name || got.DType != w.DType || got.File != path || got.Size() != int64(len(w.Data)) {
			t.Errorf("tensor %d = %+v, want %s %s", i, got, w.Name, w.DType)
		}
		raw, err := m.ReadRaw(w.Name)
		if err != nil || !bytes.Equal(raw, w.Data) {
			t.Errorf("ReadRaw(%s) = %x, %v; want %x", w.Name, raw, err, w.Data)
		}
	}
	floats := map[string][]float32{
		"w.f32":  {1.5, -2},
		"w.bf16": {1, -2, float32(math.Inf(1))},
		"w.f16":  {1, 0x1p-24},
	}
	for name, want := range floats {
		got, err := m.ReadFloat32(name)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ReadFloat32(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := m.ReadFloat32("q.i32"); !errors.Is(err, ErrUnsupportedDType) {
		t.Errorf("ReadFloat32 of I32: err = %v", err)
	}
	if _, err := m.ReadRaw("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadRaw missing: err = %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("stat = %v, %v", st, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("leftover temp files: %v", ents)
	}
}

func TestWriteFileRejects(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		in   []WriteTensor
		want error
	}{
		{"size mismatch", []WriteTensor{{Name: "a", DType: F32, Shape: []int64{2}, Data: make([]byte, 4)}}, ErrBadHeader},
		{"unknown dtype", []WriteTensor{{Name: "a", DType: "Q4", Shape: []int64{2}, Data: make([]byte, 2)}}, ErrUnsupportedDType},
		{"duplicate", []WriteTensor{{Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}, {Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, ErrBadHeader},
		{"metadata name", []WriteTensor{{Name: "__metadata__", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, ErrBadHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad.safetensors")
			if err := WriteFile(p, tc.in, nil); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Fatalf("file written despite error")
			}
		})
	}
}

func TestDecodeFloat32F16Exhaustive(t *testing.T) {
	// Independent reference: the IEEE binary16 definition evaluated with math.Ldexp.
	raw := make([]byte, 2<<16)
	for i := 0; i < 1<<16; i++ {
		binary.LittleEndian.PutUint16(raw[2*i:], uint16(i))
	}
	dst := make([]float32, 1<<16)
	if err := DecodeFloat32(F16, raw, dst); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1<<16; i++ {
		sign, exp, frac := i>>15, (i>>10)&0x1f, i&0x3ff
		var want float64
		switch {
		case exp == 0x1f && frac == 0:
			want = math.Inf(1)
		case exp == 0x1f:
			want = math.NaN()
		case exp == 0:
			want = math.Ldexp(float64(frac), -24)
		default:
			want = math.Ldexp(float64(1024+frac), exp-25)
		}
		if sign == 1 {
			want = -want
		}
		got := float64(dst[i])
		if math.IsNaN(want) != math.IsNaN(got) || (!math.IsNaN(want) && (got != want || math.Signbit(got) != math.Signbit(want))) {
			t.Fatalf("f16 %#04x -> %v, want %v", i, got, want)
		}
	}
	if err := DecodeFloat32(F16, raw[:3], dst[:1]); err == nil {
		t.Error("odd length accepted")
	}
	if err := DecodeFloat32(I32, raw[:4], dst[:1]); !errors.Is(err, ErrUnsupportedDType) {
		t.Errorf("I32: err = %v", err)
	}
}

func writeShard(t *testing.T, path string, names ...string) {
	t.Helper()
	var ws []WriteTensor
	for i, n := range names {
		ws = append(ws, WriteTensor{Name: n, DType: U8, Shape: []int64{int64(i + 1)}, Data: bytes.Repeat([]byte{byte(i + 1)}, i+1)})
	}
	if err := WriteFile(path, ws, nil); err != nil {
		t.Fatal(err)
	}
}

func TestOpenModelSharded(t *testing.T) {
	dir := t.TempDir()
	writeShard(t, filepath.Join(dir, "model-00002-of-00002.safetensors"), "c", "d")
	writeShard(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), "b", "a")
	idx := `{"metadata":{"total_size":6},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",` +
		`"c":"model-00002-of-00002.safetensors","d":"model-00002-of-00002.safetensors"}}`
	if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(idx), 0o644); err != nil {
		t.Fatal(err)
	}
	// A stray file that the index does not name must be ignored.
	writeShard(t, filepath.Join(dir, "consolidated.safetensors"), "x")
	m, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var names []string
	for _, tt := range m.Tensors() {
		names = append(names, tt.Name)
	}
	if want := []string{"b", "a", "c", "d"}; !reflect.DeepEqual(names, want) {
		t.Errorf("order = %v, want %v", names, want)
	}
	raw, err := m.ReadRaw("d")
	if err != nil || !bytes.Equal(raw, []byte{2, 2}) {
		t.Errorf("ReadRaw(d) = %v, %v", raw, err)
	}
	if tt, ok := m.Lookup("c"); !ok || filepath.Base(tt.File) != "model-00002-of-00002.safetensors" {
		t.Errorf("Lookup(c) = %+v, %v", tt, ok)
	}
	if _, ok := m.Lookup("x"); ok {
		t.Error("tensor of an unindexed file is visible")
	}
}

func TestOpenModelErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  error
	}{
		{"empty dir", func(t *testing.T, dir string) {}, ErrNoWeights},
		{"index names missing tensor", func(t *testing.T, dir string) {
			writeShard(t, filepath.Join(dir, "s1.safetensors"), "a")
			os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}}`), 0o644)
		}, ErrNotFound},
		{"index names wrong shard", func(t *testing.T, dir string) {
			writeShard(t, filepath.Join(dir, "s1.safetensors"), "a")
			writeShard(t, filepath.Join(dir, "s2.safetensors"), "b")
			os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"weight_map":{"a":"s2.safetensors","b":"s2.safetensors"}}`), 0o644)
		}, ErrNotFound},
		{"index shard missing", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"weight_map":{"a":"s1.safetensors"}}`), 0o644)
		}, os.ErrNotExist},
		{"index path escape", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"weight_map":{"a":"../s1.safetensors"}}`), 0o644)
		}, ErrBadHeader},
		{"bad index", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"weight_map":`), 0o644)
		}, ErrBadHeader},
		{"duplicate across shards", func(t *testing.T, dir string) {
			writeShard(t, filepath.Join(dir, "s1.safetensors"), "a")
			writeShard(t, filepath.Join(dir, "s2.safetensors"), "a")
		}, ErrBadHeader},
		{"corrupt shard", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte{1, 2}, 0o644)
		}, ErrTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			m, err := OpenModel(dir)
			if !errors.Is(err, tc.want) {
				if m != nil {
					m.Close()
				}
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestOpenModelGlob(t *testing.T) {
	dir := t.TempDir()
	writeShard(t, filepath.Join(dir, "b.safetensors"), "y")
	writeShard(t, filepath.Join(dir, "a.safetensors"), "x")
	m, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if ts := m.Tensors(); len(ts) != 2 || ts[0].Name != "x" || ts[1].Name != "y" {
		t.Errorf("tensors = %+v", ts)
	}
}

func TestTinyLlama(t *testing.T) {
	dir := filepath.Join(sharedtest.Dir(t), "models", "tiny-llama")
	m, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// Counts and values below were read with Python's json/struct modules from the file.
	var params int64
	for _, tt := range m.Tensors() {
		if tt.DType != BF16 {
			t.Errorf("%s: dtype %s", tt.Name, tt.DType)
		}
		params += tt.NumElements()
	}
	if len(m.Tensors()) != 57 || params != 27269632 {
		t.Errorf("%d tensors, %d params; want 57, 27269632", len(m.Tensors()), params)
	}
	if m.Metadata()["format"] != "pt" {
		t.Errorf("metadata = %v", m.Metadata())
	}
	tt, ok := m.Lookup("model.norm.weight")
	if !ok || !reflect.DeepEqual(tt.Shape, []int64{512}) || tt.Begin != 8+6240+54538240 {
		t.Fatalf("model.norm.weight = %+v", tt)
	}
	v, err := m.ReadFloat32("model.norm.weight")
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{1.984375, 1.984375, 1.8046875, 1.8671875}; !reflect.DeepEqual(v[:4], want) {
		t.Errorf("model.norm.weight[:4] = %v, want %v", v[:4], want)
	}
}

func FuzzParseHeader(f *testing.F) {
	valid, err := EncodeHeader([]WriteTensor{
		{Name: "a", DType: F32, Shape: []int64{2, 1}, Data: make([]byte, 8)},
		{Name: "b", DType: BF16, Shape: []int64{}, Data: make([]byte, 2)},
	}, map[string]string{"format": "pt"})
	if err != nil {
		f.Fatal(err)
	}
	valid = append(valid, make([]byte, 10)...)
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(valid[:20])
	lying := bytes.Clone(valid)
	binary.LittleEndian.PutUint64(lying, 1<<40)
	f.Add(lying)
	f.Add(rawFile(`{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4000000000]}}`, 4))
	f.Add(rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 6))
	f.Add(rawFile(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHeader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrBadHeader) && !errors.Is(err, ErrUnsupportedDType) && !errors.Is(err, ErrOverlap) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		var prevEnd int64
		for _, tt := range h.Tensors {
			if tt.Begin < h.DataStart || tt.End > int64(len(data)) || tt.Size() != tt.NumElements()*tt.DType.Size() {
				t.Fatalf("accepted bad tensor %+v", tt)
			}
			if tt.Size() > 0 {
				if tt.Begin < prevEnd {
					t.Fatalf("accepted overlap at %+v", tt)
				}
				prevEnd = tt.End
			}
		}
	})
}

func BenchmarkDecodeFloat32(b *testing.B) {
	for _, dt := range []DType{BF16, F16, F32} {
		b.Run(string(dt), func(b *testing.B) {
			const n = 1 << 20
			raw := make([]byte, n*dt.Size())
			for i := range raw {
				raw[i] = byte(i * 31)
			}
			dst := make([]float32, n)
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if err := DecodeFloat32(dt, raw, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
