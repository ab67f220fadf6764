package hfquant

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/x448/float16"
	"quantfleet.dev/libs/safetensors"
)

// The worked example of ../shared/notes/gptq_awq.md §3d: 8 outputs × 8 inputs, group 8.
var (
	exampleGPTQAsymCodes = [8][8]uint8{
		{0, 2, 4, 6, 9, 11, 13, 15},
		{14, 6, 11, 0, 10, 8, 4, 15},
		{2, 4, 5, 7, 9, 11, 13, 15},
		{0, 4, 7, 11, 13, 14, 14, 15},
		{7, 7, 7, 7, 7, 7, 7, 7},
		{15, 0, 11, 3, 9, 5, 8, 6},
		{8, 9, 4, 11, 2, 13, 0, 15},
		{0, 6, 7, 7, 7, 8, 8, 15},
	}
	exampleGPTQAsymZeros = []uint8{4, 8, 0, 15, 7, 7, 7, 6}
	exampleGPTQAsymScale = []float32{0.113342, 0.054657, 0.031342, 0.054016, 0.133301, 0.123352, 0.010338, 0.332764}
	exampleGPTQSymCodes  = [8][8]uint8{
		{5, 6, 8, 9, 11, 13, 14, 15},
		{13, 6, 11, 0, 10, 8, 4, 14},
		{10, 12, 13, 15, 15, 15, 15, 15},
		{0, 2, 4, 6, 7, 7, 8, 8},
		{8, 8, 8, 8, 8, 8, 8, 8},
		{15, 1, 12, 4, 10, 7, 9, 7},
		{9, 10, 5, 12, 3, 14, 1, 15},
		{3, 8, 9, 9, 9, 9, 10, 15},
	}
	exampleAWQCodes = [8][8]uint8{
		{0, 2, 4, 6, 9, 11, 13, 15},
		{14, 6, 11, 0, 10, 8, 4, 15},
		{2, 4, 6, 8, 10, 13, 15, 15},
		{0, 3, 7, 11, 13, 14, 14, 15},
		{0, 0, 0, 0, 0, 0, 0, 0},
		{15, 0, 11, 3, 9, 5, 8, 6},
		{8, 9, 4, 11, 2, 13, 0, 15},
		{0, 6, 7, 7, 7, 8, 8, 15},
	}
	exampleAWQZeros = []uint8{4, 8, 0, 15, 0, 7, 7, 6}
	exampleAWQScale = []float32{0.113342, 0.054657, 0.028000, 0.053345, 6.56e-07, 0.123291, 0.010338, 0.332764}
)

func flat(c [8][8]uint8) []uint8 {
	var out []uint8
	for _, r := range c {
		out = append(out, r[:]...)
	}
	return out
}

func halves(v []float32) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float16.Fromfloat32(x).Float32()
	}
	return out
}

// rawInt32 reads an int32 tensor of a written checkpoint with the safetensors package.
func rawInt32(t *testing.T, m *safetensors.Model, name string) ([]uint32, []int64) {
	t.Helper()
	tt, ok := m.Lookup(name)
	if !ok {
		t.Fatalf("tensor %s missing", name)
	}
	if tt.DType != safetensors.I32 {
		t.Fatalf("%s has dtype %s, want I32", name, tt.DType)
	}
	raw, err := m.ReadRaw(name)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]uint32, len(raw)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return out, tt.Shape
}

func writeOne(t *testing.T, opts Options, l *Linear) string {
	t.Helper()
	dir := t.TempDir()
	w, err := Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddLinear(l); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestWorkedExamplePacking checks the packed words of notes §3d.
func TestWorkedExamplePacking(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		codes   [8][8]uint8
		zeros   []uint8
		scales  []float32
		qweight []uint32
		qwShape []int64
		qzeros  uint32
	}{
		{
			name:  "gptq asym v2",
			opts:  Options{Method: GPTQ, Bits: 4, GroupSize: 8, CheckpointFormat: FormatGPTQv2},
			codes: exampleGPTQAsymCodes, zeros: exampleGPTQAsymZeros, scales: exampleGPTQAsymScale,
			qweight: []uint32{0xFDB96420, 0xF48A0B6E, 0xFDB97542, 0xFEEDB740, 0x77777777, 0x68593B0F, 0xF0D2B498, 0xF8877760},
			qwShape: []int64{1, 8}, qzeros: 0x6777F084,
		},
		{
			name:  "gptq sym v1",
			opts:  Options{Method: GPTQ, Bits: 4, GroupSize: 8, Sym: true},
			codes: exampleGPTQSymCodes, zeros: slices.Repeat([]uint8{8}, 8), scales: slices.Repeat([]float32{0.164062}, 8),
			qweight: []uint32{0xFEDB9865, 0xE48A0B6D, 0xFFFFFDCA, 0x88776420, 0x88888888, 0x797A4C1F, 0xF1E3C5A9, 0xFA999983},
			qwShape: []int64{1, 8}, qzeros: 0x77777777,
		},
		{
			name:  "awq gemm",
			opts:  Options{Method: AWQ, Bits: 4, GroupSize: 8},
			codes: exampleAWQCodes, zeros: exampleAWQZeros, scales: exampleAWQScale,
			qweight: []uint32{0x0F0E8020, 0x60369042, 0x7B7B4064, 0x73B0B086, 0x79DA20A9, 0x85E8D0DB, 0x88E400FD, 0xF6FFF0FF},
			qwShape: []int64{8, 1}, qzeros: 0x67F87004,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := &Linear{Name: "model.layers.0.mlp.down_proj", Rows: 8, Cols: 8, Bits: 4, GroupSize: 8,
				QWeight: flat(tc.codes), Scales: tc.scales, Zeros: tc.zeros}
			dir := writeOne(t, tc.opts, l)
			m, err := safetensors.OpenModel(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			qw, shape := rawInt32(t, m, l.Name+".qweight")
			if !slices.Equal(qw, tc.qweight) || !slices.Equal(shape, tc.qwShape) {
				t.Errorf("qweight %v %08X, want %v %08X", shape, qw, tc.qwShape, tc.qweight)
			}
			qz, shape := rawInt32(t, m, l.Name+".qzeros")
			if len(qz) != 1 || qz[0] != tc.qzeros || !slices.Equal(shape, []int64{1, 1}) {
				t.Errorf("qzeros %v %08X, want [1 1] %08X", shape, qz, tc.qzeros)
			}
			sc, _ := m.Lookup(l.Name + ".scales")
			if sc.DType != safetensors.F16 || !slices.Equal(sc.Shape, []int64{1, 8}) {
				t.Errorf("scales %s %v, want F16 [1 8]", sc.DType, sc.Shape)
			}
			_, hasGIdx := m.Lookup(l.Name + ".g_idx")
			if hasGIdx != (tc.opts.Method == GPTQ) {
				t.Errorf("g_idx present: %v", hasGIdx)
			}
			if md := m.Metadata(); md["format"] != "pt" {
				t.Errorf("metadata %v, want format pt", md)
			}
		})
	}
	// v1 stores zero−1 masked to 4 bits: the notes' word 0x5666EF73 (row 2's zero 0 becomes
	// nibble F, the v1 pitfall). The writer refuses it; the packing itself reproduces it.
	v1 := make([]uint32, 8)
	for i, z := range exampleGPTQAsymZeros {
		v1[i] = (uint32(z) - 1) & 15
	}
	if got := packRows(v1, 1, 8, 4); got[0] != 0x5666EF73 {
		t.Errorf("v1 qzeros %08X, want 5666EF73", got[0])
	}
	l := &Linear{Name: "x", Rows: 8, Cols: 8, Bits: 4, GroupSize: 8, QWeight: flat(exampleGPTQAsymCodes), Scales: exampleGPTQAsymScale, Zeros: exampleGPTQAsymZeros}
	w, _ := Create(t.TempDir(), Options{Method: GPTQ, Bits: 4, GroupSize: 8})
	defer w.Abort()
	if err := w.AddLinear(l); !errors.Is(err, ErrZeroPoint) {
		t.Errorf("v1 with zero 0: error %v, want ErrZeroPoint", err)
	}
}

// The decoders below are written from the notes' §3a/§4 descriptions, independently of the
// package's packers and unpackers.

// refGPTQCode returns the code of input k, output o from a GPTQ qweight [in·b/32][out].
func refGPTQCode(qweight []uint32, out, b, k, o int) uint32 {
	if b != 3 {
		pf := 32 / b
		return qweight[(k/pf)*out+o] >> (b * (k % pf)) & (1<<b - 1)
	}
	// 3 bits: every 32 inputs use three rows A, B, C ("10-1-10-1-10").
	base, j := (k/32)*3, k%32
	A, B, C := qweight[base*out+o], qweight[(base+1)*out+o], qweight[(base+2)*out+o]
	switch {
	case j < 10:
		return A >> (3 * j) & 7
	case j == 10:
		return A>>30&3 | (B&1)<<2
	case j < 21:
		return B >> (1 + 3*(j-11)) & 7
	case j == 21:
		return B>>31&1 | (C&3)<<1
	default:
		return C >> (2 + 3*(j-22)) & 7
	}
}

// refGPTQZero returns the stored zero code of output o in group g from qzeros [G][out·b/32],
// which uses the same scheme along the output dimension.
func refGPTQZero(qzeros []uint32, out, b, g, o int) uint32 {
	words := out * b / 32
	row := qzeros[g*words : (g+1)*words]
	if b != 3 {
		pf := 32 / b
		return row[o/pf] >> (b * (o % pf)) & (1<<b - 1)
	}
	col := make([]uint32, len(row)) // view the row as a one-column "qweight"
	copy(col, row)
	return refGPTQCode(col, 1, 3, o, 0)
}

func randomLinear(rng *rand.Rand, name string, rows, cols, bits, gs int, actOrder, bias bool) *Linear {
	maxq := 1<<bits - 1
	G := 1
	if gs > 0 {
		G = cols / gs
	}
	l := &Linear{Name: name, Rows: rows, Cols: cols, Bits: bits, GroupSize: gs,
		QWeight: make([]uint8, rows*cols), Scales: make([]float32, G*rows), Zeros: make([]uint8, G*rows)}
	for i := range l.QWeight {
		l.QWeight[i] = uint8(rng.IntN(maxq + 1))
	}
	for i := range l.Scales {
		l.Scales[i] = float32(rng.ExpFloat64() * 0.01)
		l.Zeros[i] = uint8(1 + rng.IntN(maxq)) // ≥ 1: v1-representable
	}
	if actOrder {
		l.GIdx = make([]int32, cols)
		for k, p := range rng.Perm(cols) {
			if gs > 0 {
				l.GIdx[k] = int32(p / gs)
			}
		}
	}
	if bias {
		l.Bias = make([]float32, rows)
		for i := range l.Bias {
			l.Bias[i] = float32(rng.NormFloat64())
		}
	}
	return l
}

// TestIndependentUnpack writes random linears of every width and reads the raw tensors back
// with the reference decoders above.
func TestIndependentUnpack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, tc := range []struct {
		name     string
		opts     Options
		rows     int
		cols     int
		actOrder bool
	}{
		{"gptq2", Options{Method: GPTQ, Bits: 2, GroupSize: 32}, 64, 128, false},
		{"gptq3", Options{Method: GPTQ, Bits: 3, GroupSize: 32}, 64, 128, false},
		{"gptq3 act-order", Options{Method: GPTQ, Bits: 3, GroupSize: 64, DescAct: true}, 96, 192, true},
		{"gptq4 act-order v2", Options{Method: GPTQ, Bits: 4, GroupSize: 32, DescAct: true, CheckpointFormat: FormatGPTQv2}, 64, 128, true},
		{"gptq4 per-channel", Options{Method: GPTQ, Bits: 4, GroupSize: -1}, 32, 64, false},
		{"gptq8", Options{Method: GPTQ, Bits: 8, GroupSize: 64}, 32, 128, false},
		{"awq", Options{Method: AWQ, Bits: 4, GroupSize: 32}, 48, 128, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.opts.Bits
			l := randomLinear(rng, "model.layers.3.self_attn.o_proj", tc.rows, tc.cols, b, tc.opts.GroupSize, tc.actOrder, false)
			dir := writeOne(t, tc.opts, l)
			m, err := safetensors.OpenModel(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			qw, qwShape := rawInt32(t, m, l.Name+".qweight")
			qz, qzShape := rawInt32(t, m, l.Name+".qzeros")
			scales, err := m.ReadFloat32(l.Name + ".scales")
			if err != nil {
				t.Fatal(err)
			}
			G := len(l.Scales) / l.Rows
			if !slices.Equal(scales, halves(l.Scales)) {
				t.Fatal("scales differ from the fp16 rounding of the input")
			}
			if tc.opts.Method == AWQ {
				if !slices.Equal(qwShape, []int64{int64(l.Cols), int64(l.Rows / 8)}) || !slices.Equal(qzShape, []int64{int64(G), int64(l.Rows / 8)}) {
					t.Fatalf("shapes qweight %v qzeros %v", qwShape, qzShape)
				}
				rev := []int{0, 4, 1, 5, 2, 6, 3, 7}
				for k := range l.Cols {
					for o := range l.Rows {
						code := qw[k*(l.Rows/8)+o/8] >> (4 * rev[o%8]) & 15
						zero := qz[(k/l.GroupSize)*(l.Rows/8)+o/8] >> (4 * rev[o%8]) & 15
						g := (k/l.GroupSize)*l.Rows + o
						if uint8(code) != l.QWeight[o*l.Cols+k] || uint8(zero) != l.Zeros[g] {
							t.Fatalf("k %d o %d: code %d zero %d, want %d %d", k, o, code, zero, l.QWeight[o*l.Cols+k], l.Zeros[g])
						}
					}
				}
				return
			}
			if !slices.Equal(qwShape, []int64{int64(l.Cols * b / 32), int64(l.Rows)}) || !slices.Equal(qzShape, []int64{int64(G), int64(l.Rows * b / 32)}) {
				t.Fatalf("shapes qweight %v qzeros %v", qwShape, qzShape)
			}
			gidx, _ := rawInt32(t, m, l.Name+".g_idx")
			for k := range l.Cols {
				g := int(gidx[k])
				if g != l.groupOf(k) {
					t.Fatalf("g_idx[%d] = %d, want %d", k, g, l.groupOf(k))
				}
				for o := range l.Rows {
					if code := refGPTQCode(qw, l.Rows, b, k, o); uint8(code) != l.QWeight[o*l.Cols+k] {
						t.Fatalf("k %d o %d: code %d, want %d", k, o, code, l.QWeight[o*l.Cols+k])
					}
				}
			}
			for g := range G {
				for o := range l.Rows {
					zero := refGPTQZero(qz, l.Rows, b, g, o)
					if tc.opts.CheckpointFormat != FormatGPTQv2 {
						zero++
					}
					if uint8(zero) != l.Zeros[g*l.Rows+o] {
						t.Fatalf("group %d o %d: zero %d, want %d", g, o, zero, l.Zeros[g*l.Rows+o])
					}
				}
			}
		})
	}
}

// TestRoundTrip writes a small two-layer model, sharded, and reads it back with Open:
// quantized weights dequantize to fp16(scale)·(q − z) per group, other tensors keep their
// dtype and values, and the directory has the files and config keys the loaders need.
func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	srcCfg := `{"architectures": ["LlamaForCausalLM"], "dtype": "bfloat16", "rms_norm_eps": 1e-05, "hidden_size": 64}`
	files := map[string]string{"config.json": srcCfg, "tokenizer.json": `{"model": {}}`, "tokenizer_config.json": "{}",
		"generation_config.json": `{"bos_token_id": 1}`, "model.safetensors": "not copied", ".hidden": "no"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(2, 2))
	for _, tc := range []struct {
		name     string
		opts     Options
		actOrder bool
	}{
		{"gptq", Options{Method: GPTQ, Bits: 4, GroupSize: 32, Sym: false, DescAct: true, DampPercent: 0.01, TrueSequential: true, Quantizer: "quantfleet:test"}, true},
		{"gptq3", Options{Method: GPTQ, Bits: 3, GroupSize: 32, Sym: true, DampPercent: 0.01}, false},
		{"awq", Options{Method: AWQ, Bits: 4, GroupSize: 32, DType: "float16"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := tc.opts
			opts.SourceDir = src
			opts.MaxShardSize = 6000 // forces several shards
			w, err := Create(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			embed := make([]float32, 32*64)
			for i := range embed {
				embed[i] = float32(rng.NormFloat64())
			}
			if err := w.AddFloat32("model.embed_tokens.weight", safetensors.BF16, []int64{32, 64}, embed); err != nil {
				t.Fatal(err)
			}
			var lins []*Linear
			for layer := range 2 {
				for _, n := range []string{"self_attn.q_proj", "mlp.down_proj"} {
					l := randomLinear(rng, "model.layers."+string(rune('0'+layer))+"."+n, 64, 64, opts.Bits, opts.GroupSize, tc.actOrder, n == "self_attn.q_proj")
					if err := w.AddLinear(l); err != nil {
						t.Fatal(err)
					}
					lins = append(lins, l)
				}
				norm := make([]float32, 64)
				for i := range norm {
					norm[i] = 1 + float32(i)/64
				}
				if err := w.AddFloat32("model.layers."+string(rune('0'+layer))+".input_layernorm.weight", safetensors.BF16, []int64{64}, norm); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			// Files.
			for _, name := range []string{"config.json", "quantize_config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", safetensors.IndexFile} {
				if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
					t.Errorf("missing %s", name)
				}
			}
			for _, name := range []string{".hidden", "model.safetensors"} {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					t.Errorf("%s should not be there", name)
				}
			}
			shards, _ := filepath.Glob(filepath.Join(dir, "model-*-of-*.safetensors"))
			tmps, _ := filepath.Glob(filepath.Join(dir, ".*"))
			if len(shards) < 2 || len(tmps) != 0 {
				t.Errorf("%d shards, leftover temporary files %v", len(shards), tmps)
			}
			var cfg map[string]any
			raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
			if err := json.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			qc, _ := cfg["quantization_config"].(map[string]any)
			var required []string
			if opts.Method == GPTQ {
				required = []string{"quant_method", "bits", "group_size", "desc_act", "sym", "checkpoint_format", "damp_percent", "true_sequential", "static_groups", "meta"}
			} else {
				required = []string{"quant_method", "bits", "group_size", "zero_point", "version", "modules_to_not_convert"}
			}
			for _, k := range required {
				if _, ok := qc[k]; !ok {
					t.Errorf("quantization_config lacks %s: %v", k, qc)
				}
			}
			if qc["quant_method"] != string(opts.Method) || qc["bits"] != float64(opts.Bits) || cfg["rms_norm_eps"] != 1e-05 {
				t.Errorf("config %v", cfg)
			}
			if opts.DType != "" && cfg["dtype"] != opts.DType {
				t.Errorf("dtype %v, want %s", cfg["dtype"], opts.DType)
			}
			if !strings.Contains(string(raw), `"rms_norm_eps": 1e-05`) {
				t.Error("config.json does not keep numbers as written")
			}

			c, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.Config(); got.Method != opts.Method || got.Bits != opts.Bits || got.GroupSize != opts.GroupSize {
				t.Fatalf("config %+v", got)
			}
			for _, l := range lins {
				got, shape, err := c.Float32(l.Name + ".weight")
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(shape, []int64{64, 64}) {
					t.Fatalf("shape %v", shape)
				}
				for o := range l.Rows {
					for k := range l.Cols {
						g := l.groupOf(k)*l.Rows + o
						want := float16.Fromfloat32(l.Scales[g]).Float32() * (float32(l.QWeight[o*l.Cols+k]) - float32(l.Zeros[g]))
						if got[o*l.Cols+k] != want {
							t.Fatalf("%s [%d][%d] = %v, want %v", l.Name, o, k, got[o*l.Cols+k], want)
						}
					}
				}
				if l.Bias != nil {
					b, _, err := c.Float32(l.Name + ".bias")
					if err != nil || !slices.Equal(b, halves(l.Bias)) {
						t.Fatalf("bias %v, %v", b, err)
					}
				}
			}
			e, shape, err := c.Float32("model.embed_tokens.weight")
			if err != nil || !slices.Equal(shape, []int64{32, 64}) {
				t.Fatal(shape, err)
			}
			for i, v := range e {
				if math.Abs(float64(v-embed[i])) > math.Abs(float64(embed[i]))/128 {
					t.Fatalf("embedding [%d] = %v, want %v (bf16)", i, v, embed[i])
				}
			}
			if et, _ := c.Model().Lookup("model.embed_tokens.weight"); et.DType != safetensors.BF16 {
				t.Errorf("embedding dtype %s", et.DType)
			}
			names := c.Names()
			for _, want := range []string{"model.layers.1.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.bias", "model.layers.0.input_layernorm.weight"} {
				if !slices.Contains(names, want) {
					t.Errorf("Names lacks %s: %v", want, names)
				}
			}
			for _, n := range names {
				if filepath.Ext(n) == ".qweight" || filepath.Ext(n) == ".scales" {
					t.Errorf("Names lists %s", n)
				}
			}
		})
	}
}

func TestWriterErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, tc := range []struct {
		name string
		opts Options
		l    *Linear
		err  error
	}{
		{"awq 3 bits", Options{Method: AWQ, Bits: 3, GroupSize: 32}, nil, ErrOptions},
		{"method", Options{Method: "exl2", Bits: 4, GroupSize: 32}, nil, ErrOptions},
		{"gptq shape", Options{Method: GPTQ, Bits: 4, GroupSize: 4}, randomLinear(rng, "a", 4, 8, 4, 4, false, false), ErrShape},
		{"act-order without desc_act", Options{Method: GPTQ, Bits: 4, GroupSize: 32}, randomLinear(rng, "a", 32, 64, 4, 32, true, false), ErrOptions},
		{"bits mismatch", Options{Method: GPTQ, Bits: 8, GroupSize: 32}, randomLinear(rng, "a", 32, 64, 4, 32, false, false), ErrShape},
	} {
		w, err := Create(t.TempDir(), tc.opts)
		if err == nil {
			err = w.AddLinear(tc.l)
			w.Abort()
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
		}
	}
}
