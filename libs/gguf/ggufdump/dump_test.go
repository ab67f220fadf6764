package ggufdump

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"quantfleet.dev/libs/ggml"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/sharedtest"
)

// python3 returns the interpreter; tests needing it skip without it unless CI is set.
func python3(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3 not found")
		}
		t.Skip("python3 not found")
	}
	return p
}

func runPython(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(python3(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok || !strings.Contains(strings.Join(args, " "), "--compare") {
			t.Fatalf("python3 %v: %v\n%s", args, err, stderr.String())
		}
	}
	return out
}

func testFloats() []float64 {
	vals := []float64{0, math.Copysign(0, -1), 1, -10000, 1e-5, 1e-4, 0.0001234, 1e16, 1e15, 9999999999999998,
		1.5e16, 123456789012345680, 1e100, 1e-100, 5e-324, math.MaxFloat64, 0.1, 1.0 / 3, 2.5, 100,
		float64(float32(1e-5)), float64(float32(0.1)), float64(float32(9.999999747378752e-06)), 1e22, 1e21,
		math.Inf(1), math.Inf(-1)}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		vals = append(vals, math.Float64frombits(r.Uint64()))
		vals = append(vals, float64(math.Float32frombits(r.Uint32())))
		vals = append(vals, float64(float32(r.NormFloat64()*math.Pow(10, float64(r.IntN(40)-20)))))
	}
	out := vals[:0]
	for _, v := range vals {
		if !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

func TestPyFloatMatchesPython(t *testing.T) {
	vals := testFloats()
	var in strings.Builder
	list := make([]any, len(vals))
	for i, v := range vals {
		fmt.Fprintln(&in, strconv.FormatFloat(v, 'x', -1, 64))
		list[i] = json.Number(pyFloat(v))
	}
	script := `import sys, json
print(json.dumps([float.fromhex(l) for l in sys.stdin.read().split()]), end="")`
	got := runPython(t, []byte(in.String()), "-c", script)
	want := appendPyJSON(nil, list, false, -1, 0)
	if !bytes.Equal(got, want) {
		gs, ws := strings.Split(string(got), ", "), strings.Split(string(want), ", ")
		for i := range min(len(gs), len(ws)) {
			if gs[i] != ws[i] {
				t.Fatalf("value %d (%x): python %s, Go %s", i, vals[i], gs[i], ws[i])
			}
		}
		t.Fatalf("outputs differ in length")
	}
}

// testStrings mixes valid UTF-8, JSON escapes and invalid byte sequences.
func testStrings() []string {
	s := []string{"", "plain", "quote\" back\\slash", "\n\r\t\b\f\x00\x1f\x7f", "héllo 日本 😀", "\u2028\u2029",
		"\xff", "\xe2\x82", "\xe2\x82A", "\xed\xa0\x80", "\xf0\x9f\x98", "\xc0\xaf", "\xf4\x90\x80\x80", "\xe0\x80\xaf",
		"a\xf0\x9f\x98\x80\xf0b", "\x80\x80", "▁the", "<0x0A>"}
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte{'a', 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff, '"', '\\', 0x01}
	for range 3000 {
		b := make([]byte, r.IntN(8))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		s = append(s, string(b))
	}
	return s
}

func TestPyStringsMatchPython(t *testing.T) {
	strs := testStrings()
	var in bytes.Buffer
	decoded := make([]any, len(strs))
	for i, s := range strs {
		in.WriteString(strconv.Itoa(len(s)) + " ")
		in.WriteString(s)
		decoded[i] = pyDecodeReplace(s)
	}
	// Python decodes each byte string with errors="replace" and prints both JSON forms.
	script := `import sys, json
data, out, i = sys.stdin.buffer.read(), [], 0
while i < len(data):
    j = data.index(b" ", i); n = int(data[i:j]); out.append(data[j+1:j+1+n].decode("utf-8", errors="replace")); i = j+1+n
sys.stdout.buffer.write(json.dumps(out).encode() + b"\n" + json.dumps(out, ensure_ascii=False).encode())`
	got := runPython(t, in.Bytes(), "-c", script)
	want := append(appendPyJSON(nil, decoded, true, -1, 0), '\n')
	want = appendPyJSON(want, decoded, false, -1, 0)
	if !bytes.Equal(got, want) {
		g, w := strings.SplitN(string(got), "\n", 2), strings.SplitN(string(want), "\n", 2)
		for k := range 2 {
			if g[k] != w[k] {
				var gl, wl []string
				json.Unmarshal([]byte(g[k]), &gl)
				json.Unmarshal([]byte(w[k]), &wl)
				for i := range min(len(gl), len(wl)) {
					if gl[i] != wl[i] {
						t.Fatalf("string %d %q: python %q, Go %q", i, strs[i], gl[i], wl[i])
					}
				}
				t.Fatalf("line %d differs:\npython %.300s\nGo     %.300s", k, g[k], w[k])
			}
		}
	}
}

// pyTestFile writes a GGUF file that exercises every KV kind, long arrays and odd strings.
func pyTestFile(t *testing.T) (string, *gguf.File) {
	t.Helper()
	floats := testFloats()
	f32 := make([]float32, 40)
	for i := range f32 {
		f32[i] = float32(floats[i])
	}
	strs := testStrings()
	ints := make([]int32, 100)
	for i := range ints {
		ints[i] = int32(i*i) - 300
	}
	kv := append(allKinds(),
		gguf.KV{Key: "long.f32", Value: f32}, gguf.KV{Key: "long.f64", Value: floats[:50]}, gguf.KV{Key: "long.str", Value: strs[:200]}, gguf.KV{Key: "long.i32", Value: ints},
		gguf.KV{Key: "long.u8", Value: bytes.Repeat([]byte{0, 255}, 20)}, gguf.KV{Key: "long.bool", Value: make([]bool, 17)}, gguf.KV{Key: "short.str", Value: strs[:16]},
		gguf.KV{Key: "short.f32", Value: f32[:16]}, gguf.KV{Key: "key\xffbad", Value: "val\xe2\x82"}, gguf.KV{Key: "tokenizer.ggml.scores", Value: []float32{-1000, 0, -2.5}},
	)
	infos, data := testTensors()
	infos = append(infos, gguf.TensorInfo{Name: "q6", Dims: []uint64{256}, Type: ggml.Q6_K}, gguf.TensorInfo{Name: "bad\xffname", Dims: []uint64{1}, Type: ggml.I32})
	data = append(data, bytes.Repeat([]byte{9}, 210), []byte{1, 2, 3, 4})
	path := filepath.Join(t.TempDir(), "py.gguf")
	if err := os.WriteFile(path, writeTestFile(t, &gguf.Header{KV: kv, Tensors: infos}, data), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}

func dumpTool(t *testing.T) string {
	return filepath.Join(sharedtest.Dir(t), "tools", "gguf_dump.py")
}

func TestDumpMatchesPython(t *testing.T) {
	tool := dumpTool(t)
	path, f := pyTestFile(t)
	want := runPython(t, nil, tool, path)
	d, err := NewDump(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := d.MarshalJSON()
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("line %d: Go %q, python %q", i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("Go dump has %d lines, python %d", len(gl), len(wl))
	}
	// Loading the python output gives a dump equal to ours.
	var loaded Dump
	if err := loaded.UnmarshalJSON(want); err != nil {
		t.Fatal(err)
	}
	if diffs := CompareDump(&loaded, d, nil); len(diffs) != 0 {
		t.Errorf("differences: %v", diffs)
	}
	if v, _ := loaded.Get("long.str"); !reflect.DeepEqual(v, mustGet(d, "long.str")) {
		t.Errorf("summary: loaded %v, dumped %v", v, mustGet(d, "long.str"))
	}
}

func mustGet(d *Dump, k string) any { v, _ := d.Get(k); return v }

func TestCompareMatchesPython(t *testing.T) {
	tool := dumpTool(t)
	path, f := pyTestFile(t)
	got, err := NewDump(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A reference that differs from the file in every way compare reports, plus values
	// that Python's == treats as equal (7 == 7.0, True == 1).
	ref := *got
	ref.KV = append([]DumpKV(nil), got.KV...)
	ref.Tensors = append([]DumpTensor(nil), got.Tensors...)
	set := func(k string, v any) {
		for i := range ref.KV {
			if ref.KV[i].Key == k {
				ref.KV[i].Value = v
				return
			}
		}
		ref.KV = append(ref.KV, DumpKV{k, v})
	}
	set("u8", json.Number("200.0"))             // equal
	set("bool.t", json.Number("1"))             // equal
	set("i8", json.Number("-99"))               // differs
	set("f32", json.Number("1e-05"))            // differs: the file holds float32(1e-5)
	set("str", "日本語 "+strings.Repeat("x", 100)) // differs, long, non-ASCII
	set("long.str", ArraySummary{Len: 200, SHA256: "00"})
	set("short.f32", []any{json.Number("1")})
	set("ignored", "x")
	set("missing.key", json.Number("3"))
	ref.Tensors[0].SHA256 = "ff"
	ref.Tensors[1].Type = "F16"
	ref.Tensors[2].Shape = []uint64{1, 2}
	ref.Tensors = append(ref.Tensors[:4], DumpTensor{Name: "gone", Type: "F32", Shape: []uint64{1}})
	refJSON, _ := ref.MarshalJSON()
	refPath := filepath.Join(t.TempDir(), "ref.json")
	if err := os.WriteFile(refPath, refJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	out := runPython(t, nil, tool, "--compare", refPath, path, "--ignore-kv", "ignored,other")
	loaded, err := LoadDump(refPath)
	if err != nil {
		t.Fatal(err)
	}
	same, diffs := CompareDumpCount(loaded, got, []string{"ignored", "other"})
	want := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	gotLines := append(diffs, fmt.Sprintf("%d/%d tensors bit-identical, %d differences", same, len(loaded.Tensors), len(diffs)))
	if !reflect.DeepEqual(gotLines, want) {
		t.Errorf("Go compare:\n%s\npython compare:\n%s", strings.Join(gotLines, "\n"), strings.Join(want, "\n"))
	}
	if len(diffs) != 12 {
		t.Errorf("%d differences, want 12", len(diffs))
	}
}

func TestReferenceDumps(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(sharedtest.Dir(t), "reference", "tiny-llama", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no reference dumps: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			d, err := LoadDump(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Tensors) == 0 || len(d.KV) == 0 || d.Version != 3 {
				t.Fatalf("dump has %d tensors, %d kv, version %d", len(d.Tensors), len(d.KV), d.Version)
			}
			// The files were written by gguf_dump.py: re-encoding must reproduce them.
			raw, _ := os.ReadFile(p)
			enc, _ := d.MarshalJSON()
			if !bytes.Equal(enc, bytes.TrimRight(raw, "\n")) {
				t.Errorf("re-encoded dump differs from the file")
			}
			if diffs := CompareDump(d, d, nil); len(diffs) != 0 {
				t.Errorf("self-compare: %v", diffs)
			}
			if v, ok := d.Get("tokenizer.ggml.tokens"); !ok || v.(ArraySummary).Len != 8192 {
				t.Errorf("tokens = %v", v)
			}
			for _, tt := range d.Tensors {
				typ, err := ggml.ParseType(tt.Type)
				if err != nil {
					t.Fatalf("%s: %v", tt.Name, err)
				}
				info := gguf.TensorInfo{Name: tt.Name, Dims: tt.Shape, Type: typ}
				if info.Size() != tt.NBytes {
					t.Errorf("%s: Size %d, reference nbytes %d", tt.Name, info.Size(), tt.NBytes)
				}
			}
		})
	}
}

func TestPyEqual(t *testing.T) {
	n := func(s string) json.Number { return json.Number(s) }
	tests := []struct {
		a, b any
		want bool
	}{
		{n("1"), n("1.0"), true},
		{true, n("1"), true},
		{false, n("0.0"), true},
		{n("9007199254740993"), n("9007199254740992.0"), false}, // exact int/float comparison
		{n("9007199254740992"), n("9007199254740992.0"), true},
		{n("1e-05"), n("1e-5"), true},
		{n("NaN"), n("NaN"), false},
		{"1", n("1"), false},
		{[]any{n("1"), "a"}, []any{n("1.0"), "a"}, true},
		{[]any{n("1")}, []any{n("1"), n("2")}, false},
		{ArraySummary{3, "ab"}, map[string]any{"array_len": n("3"), "sha256": "ab"}, true},
		{ArraySummary{3, "ab"}, ArraySummary{3, "ac"}, false},
		{nil, nil, true},
		{nil, false, false},
	}
	for _, tc := range tests {
		if got := pyEqual(tc.a, tc.b); got != tc.want {
			t.Errorf("pyEqual(%v, %v) = %v", tc.a, tc.b, got)
		}
		if got := pyEqual(tc.b, tc.a); got != tc.want {
			t.Errorf("pyEqual(%v, %v) = %v", tc.b, tc.a, got)
		}
	}
}
