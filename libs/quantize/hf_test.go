package quantize

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/x448/float16"
	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/perplexity"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/sharedtest"
	"quantfleet.dev/libs/tokenizer"
	"quantfleet.dev/libs/transformer"
)

// shared returns ../shared beside the repository: skipped without it, except in CI.
func shared(t testing.TB) string {
	t.Helper()
	return sharedtest.Dir(t)
}

func TestCalibrationSamples(t *testing.T) {
	sh := shared(t)
	tok, err := tokenizer.Load(filepath.Join(sh, "models", "tiny-llama"))
	if err != nil {
		t.Fatal(err)
	}
	calib := filepath.Join(sh, "data", "calib.txt")
	samples, err := CalibrationSamples(tok, calib, 128, 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	// Sample i is evaluation window i without its last token.
	docs, err := perplexity.LoadDocuments(calib)
	if err != nil {
		t.Fatal(err)
	}
	windows, err := perplexity.Windows(tok, docs, 128, 8)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range samples {
		if !slices.Equal(s, windows[i][:128]) {
			t.Fatalf("sample %d differs from window %d", i, i)
		}
	}
	if samples[0][0] != tok.BOS() {
		t.Errorf("sample 0 starts with %d, want BOS %d", samples[0][0], tok.BOS())
	}

	jsonl := filepath.Join(t.TempDir(), "c.jsonl")
	var b strings.Builder
	for _, d := range docs[:50] {
		js, _ := json.Marshal(map[string]string{"text": d})
		b.Write(append(js, '\n'))
	}
	os.WriteFile(jsonl, []byte(b.String()), 0o644)
	fromJSONL, err := CalibrationSamples(tok, jsonl, 128, 0, 8)
	if err != nil || !slices.EqualFunc(fromJSONL, samples, slices.Equal) {
		t.Errorf("JSONL of the same documents: %v, samples differ", err)
	}

	for _, tc := range []struct {
		path string
		n    int
		want error
	}{
		{"", 8, ErrNoCalibrationData},
		{calib, 100000, perplexity.ErrNotEnoughTokens},
		{filepath.Join(sh, "data", "missing.txt"), 8, os.ErrNotExist},
	} {
		if _, err := CalibrationSamples(tok, tc.path, 128, 0, tc.n); !errors.Is(err, tc.want) {
			t.Errorf("CalibrationSamples(%q, %d): %v, want %v", tc.path, tc.n, err, tc.want)
		}
	}
}

// tinySamples returns tiny-llama's directory, the model and n calibration samples of seqlen
// tokens (token ids).
func tinySamples(t *testing.T, n, seqlen int) (string, *transformer.Model, [][]int) {
	sh := shared(t)
	dir := filepath.Join(sh, "models", "tiny-llama")
	m, err := transformer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	samples, err := CalibrationSamples(tok, filepath.Join(sh, "data", "calib.txt"), seqlen, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	return dir, m, samples
}

// tinyInputs returns the tiny-llama model and the embeddings of n calibration samples of
// seqlen tokens.
func tinyInputs(t *testing.T, n, seqlen int) (string, *transformer.Model, *transformer.Tensor) {
	dir, m, samples := tinySamples(t, n, seqlen)
	x, err := m.Embed(samples)
	if err != nil {
		t.Fatal(err)
	}
	return dir, m, x
}

// outputError returns ||A − B||² / ||B||².
func outputError(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return num / den
}

// rtnLayer returns layer i with every linear replaced by its RTN dequantization.
func rtnLayerOf(t *testing.T, m *transformer.Model, i int, cfg gptq.Config) *transformer.Layer {
	l, err := m.Layer(i)
	if err != nil {
		t.Fatal(err)
	}
	for _, lin := range l.Linears() {
		r, err := gptq.RTN(lin.Weight, lin.Out, lin.In, cfg)
		if err != nil {
			t.Fatal(err)
		}
		lin.Weight = r.Reconstruct()
	}
	return l
}

// TestQuantizeLayer quantizes decoder layer 1 of tiny-llama on 8 samples of 128 tokens and
// checks what a fleet worker relies on: the outputs (quantized layer, float32 scales, for GPTQ;
// original layer for AWQ), the written tensors decoded by an independent reading of the format
// equal the quantized values, and the quantized layer's output error is below RTN's.
func TestQuantizeLayer(t *testing.T) {
	_, m, x := tinyInputs(t, 8, 128)
	ctx := context.Background()
	l0, _ := m.Layer(0)
	x, _ = l0.Forward(x, nil) // layer 1's inputs
	orig, _ := m.Layer(1)
	want, err := orig.Forward(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	rtn := rtnLayerOf(t, m, 1, gptq.Config{Bits: 4, GroupSize: 128})
	yRTN, _ := rtn.Forward(x, nil)
	errRTN := outputError(yRTN.Data, want.Data)

	cases := []struct {
		name string
		cfg  LayerConfig
	}{
		{"gptq asym act-order", LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 128, ActOrder: true}}},
		{"gptq sym static", LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 128, Sym: true, ActOrder: true, StaticGroups: true}}},
		{"gptq 3bit per-channel", LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 3, GroupSize: -1}}},
		{"awq", LayerConfig{Method: hfquant.AWQ, AWQ: DefaultAWQConfig()}},
		{"rtn", LayerConfig{Method: hfquant.GPTQ, RTN: true, GPTQ: gptq.Config{Bits: 4, GroupSize: 128}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := m.Layer(1)
			in := x.Clone()
			r, err := QuantizeLayer(ctx, l, x, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(in.Data, x.Data) {
				t.Fatal("inputs modified")
			}
			if len(r.Linears) != 7 {
				t.Fatalf("%d linears", len(r.Linears))
			}
			dir := t.TempDir()
			w, err := hfquant.Create(dir, CheckpointOptions(tc.cfg, ""))
			if err != nil {
				t.Fatal(err)
			}
			if err := WriteLayer(w, r); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			f := readCheckpoint(t, dir)
			qc := f.quantConfig(t)

			// What the files decode to: the codes with fp16 scales. The layer as quantized in
			// memory: GPTQ leaves the codes with the solve's float32 scales in it (as the
			// reference does), AWQ leaves it unquantized.
			ql, _ := m.Layer(1)
			for _, lin := range ql.Linears() {
				name := "model.layers.1." + lin.Name
				var ref *hfquant.Linear
				for _, hl := range r.Linears {
					if hl.Name == name {
						ref = hl
					}
				}
				got := f.decodeLinear(t, name, qc, lin.Out, lin.In)
				if !slices.Equal(got, halfScales(ref).Dequantize()) {
					t.Fatalf("%s: decoded weight differs from the quantized codes", name)
				}
				lin.Weight = got
				if tc.cfg.Method == hfquant.GPTQ {
					if !slices.Equal(l.Linear(lin.Name).Weight, ref.Dequantize()) {
						t.Fatalf("%s: the layer does not hold the codes with float32 scales", name)
					}
					lin.Weight = l.Linear(lin.Name).Weight
				}
			}
			if tc.cfg.Method == hfquant.AWQ {
				if len(r.Tensors) != 2 {
					t.Fatalf("%d dense tensors, want the two folded norms", len(r.Tensors))
				}
				for _, n := range []*transformer.Norm{ql.InputNorm, ql.PostAttentionNorm} {
					n.Weight = f.float16(t, "model.layers.1."+n.Name+".weight", []int64{int64(len(n.Weight))})
				}
			}
			y, err := ql.Forward(x, nil)
			if err != nil {
				t.Fatal(err)
			}
			errQ := outputError(y.Data, want.Data)
			t.Logf("output error %.3g (RTN %.3g)", errQ, errRTN)
			switch {
			case tc.cfg.RTN:
				if r.Outputs != nil {
					t.Error("RTN returned outputs")
				}
			case tc.cfg.Method == hfquant.GPTQ:
				if !slices.Equal(r.Outputs.Data, y.Data) {
					t.Error("GPTQ outputs are not the quantized layer's outputs")
				}
			default:
				if !slices.Equal(r.Outputs.Data, want.Data) {
					t.Error("AWQ outputs are not the full-precision layer's outputs")
				}
			}
			if tc.cfg.RTN {
				if errQ != errRTN {
					t.Errorf("RTN layer error %v, want %v", errQ, errRTN)
				}
			} else if tc.cfg.GPTQ.Bits == 4 && errQ >= errRTN {
				t.Errorf("output error %.4g is not below RTN's %.4g", errQ, errRTN)
			}
		})
	}
}

// halfScales returns l with its scales rounded to half precision, as stored.
func halfScales(l *hfquant.Linear) *hfquant.Linear {
	c := *l
	c.Scales = make([]float32, len(l.Scales))
	for i, s := range l.Scales {
		c.Scales[i] = float16.Fromfloat32(s).Float32()
	}
	return &c
}

// The reader below checks a checkpoint against ../shared/notes/gptq_awq.md §3 and decodes
// it with the formulas of §4, written from the notes and independent of package hfquant.

type stEntry struct {
	DType   string   `json:"dtype"`
	Shape   []int64  `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

type checkpointFiles struct {
	dir     string
	tensors map[string]stEntry
	data    map[string][]byte
	meta    map[string]string
}

func readCheckpoint(t *testing.T, dir string) *checkpointFiles {
	t.Helper()
	f := &checkpointFiles{dir: dir, tensors: map[string]stEntry{}, data: map[string][]byte{}}
	shards, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if len(shards) == 0 {
		t.Fatal("no safetensors files")
	}
	for _, path := range shards {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		n := binary.LittleEndian.Uint64(raw)
		var hdr map[string]json.RawMessage
		if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
			t.Fatal(err)
		}
		body := raw[8+n:]
		for name, v := range hdr {
			if name == "__metadata__" {
				json.Unmarshal(v, &f.meta)
				continue
			}
			var e stEntry
			if err := json.Unmarshal(v, &e); err != nil {
				t.Fatal(err)
			}
			f.tensors[name] = e
			f.data[name] = body[e.Offsets[0]:e.Offsets[1]]
		}
	}
	if f.meta["format"] != "pt" {
		t.Errorf("safetensors metadata %v, want format pt", f.meta)
	}
	return f
}

func (f *checkpointFiles) check(t *testing.T, name, dtype string, shape ...int64) {
	t.Helper()
	e, ok := f.tensors[name]
	if !ok {
		t.Fatalf("tensor %s missing", name)
	}
	if e.DType != dtype || !slices.Equal(e.Shape, shape) {
		t.Fatalf("%s is %s %v, want %s %v", name, e.DType, e.Shape, dtype, shape)
	}
}

func (f *checkpointFiles) words(name string) []uint32 {
	b := f.data[name]
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

func (f *checkpointFiles) float16(t *testing.T, name string, shape []int64) []float32 {
	t.Helper()
	f.check(t, name, "F16", shape...)
	b := f.data[name]
	out := make([]float32, len(b)/2)
	for i := range out {
		out[i] = float16.Frombits(binary.LittleEndian.Uint16(b[2*i:])).Float32()
	}
	return out
}

type fileQuantConfig struct {
	QuantMethod      string `json:"quant_method"`
	Bits             int    `json:"bits"`
	GroupSize        int    `json:"group_size"`
	DescAct          *bool  `json:"desc_act"`
	Sym              *bool  `json:"sym"`
	CheckpointFormat string `json:"checkpoint_format"`
	ZeroPoint        *bool  `json:"zero_point"`
	Version          string `json:"version"`
}

// quantConfig checks the quantization_config keys the loaders require (notes §3a, §3b) in
// config.json and quantize_config.json, and returns it.
func (f *checkpointFiles) quantConfig(t *testing.T) fileQuantConfig {
	t.Helper()
	var cfg struct {
		QC *fileQuantConfig `json:"quantization_config"`
	}
	raw, err := os.ReadFile(filepath.Join(f.dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg.QC == nil {
		t.Fatalf("config.json: %v, quantization_config %v", err, cfg.QC)
	}
	var side fileQuantConfig
	raw, err = os.ReadFile(filepath.Join(f.dir, "quantize_config.json"))
	if err != nil || json.Unmarshal(raw, &side) != nil || !reflect.DeepEqual(side, *cfg.QC) {
		t.Errorf("quantize_config.json %+v differs from config.json's %+v (%v)", side, *cfg.QC, err)
	}
	qc := *cfg.QC
	switch qc.QuantMethod {
	case "gptq":
		if qc.DescAct == nil || qc.Sym == nil || qc.CheckpointFormat != "gptq" || qc.GroupSize == 0 {
			t.Fatalf("gptq config lacks desc_act, sym, group_size or checkpoint_format gptq: %+v", qc)
		}
	case "awq":
		if qc.ZeroPoint == nil || !*qc.ZeroPoint || qc.Version != "gemm" || qc.Bits != 4 || qc.GroupSize <= 0 {
			t.Fatalf("awq config: %+v", qc)
		}
	default:
		t.Fatalf("quant_method %q", qc.QuantMethod)
	}
	return qc
}

// bitsAt returns the b-bit value at index k of a bit stream held in words (value k at bit
// b·k, LSB first), where word i of the stream is words[base + i·stride].
func bitsAt(words []uint32, base, stride, b, k int) uint32 {
	pos := b * k
	i, off := pos/32, pos%32
	v := uint64(words[base+i*stride]) >> off
	if off+b > 32 {
		v |= uint64(words[base+(i+1)*stride]) << (32 - off)
	}
	return uint32(v) & (1<<b - 1)
}

// decodeLinear checks the tensors of quantized linear name (out×in) and returns its weight
// as the loaders reconstruct it (notes §4).
func (f *checkpointFiles) decodeLinear(t *testing.T, name string, qc fileQuantConfig, out, in int) []float32 {
	t.Helper()
	if _, ok := f.tensors[name+".weight"]; ok {
		t.Fatalf("%s.weight left in a quantized checkpoint", name)
	}
	b, g := qc.Bits, qc.GroupSize
	if g == -1 {
		g = in
	}
	G := (in + g - 1) / g
	scales := f.float16(t, name+".scales", []int64{int64(G), int64(out)})
	w := make([]float32, out*in)
	if qc.QuantMethod == "awq" {
		f.check(t, name+".qweight", "I32", int64(in), int64(out/8))
		f.check(t, name+".qzeros", "I32", int64(G), int64(out/8))
		if _, ok := f.tensors[name+".g_idx"]; ok {
			t.Fatalf("%s.g_idx in an AWQ checkpoint", name)
		}
		qw, qz := f.words(name+".qweight"), f.words(name+".qzeros")
		rev := []int{0, 4, 1, 5, 2, 6, 3, 7}
		for k := range in {
			for o := range out {
				shift := 4 * rev[o%8]
				code := qw[k*(out/8)+o/8] >> shift & 15
				zero := qz[(k/g)*(out/8)+o/8] >> shift & 15
				w[o*in+k] = scales[(k/g)*out+o] * (float32(code) - float32(zero))
			}
		}
		return w
	}
	f.check(t, name+".qweight", "I32", int64(in*b/32), int64(out))
	f.check(t, name+".qzeros", "I32", int64(G), int64(out*b/32))
	f.check(t, name+".g_idx", "I32", int64(in))
	qw, qz, gidx := f.words(name+".qweight"), f.words(name+".qzeros"), f.words(name+".g_idx")
	for k := range in {
		gi := int(int32(gidx[k]))
		if gi < 0 || gi >= G {
			t.Fatalf("%s.g_idx[%d] = %d", name, k, gi)
		}
		if !*qc.DescAct && gi != k/g {
			t.Fatalf("%s.g_idx[%d] = %d without desc_act", name, k, gi)
		}
		for o := range out {
			code := bitsAt(qw, o, out, b, k)               // qweight[k·b/32][o], along the input dim
			zero := bitsAt(qz, gi*(out*b/32), 1, b, o) + 1 // qzeros[g][o·b/32], along the output dim; v1 stores zero−1
			w[o*in+k] = scales[gi*out+o] * (float32(code) - float32(zero))
		}
	}
	return w
}

// perplexityOf evaluates the model in dir on the first n windows of 512 tokens of eval.txt.
func perplexityOf(t *testing.T, dir string, n int) float64 {
	t.Helper()
	r, err := Evaluate(context.Background(), EvalRequest{ModelDir: dir, DataPath: filepath.Join(shared(t), "data", "eval.txt"), Ctx: 512, Windows: n})
	if err != nil {
		t.Fatal(err)
	}
	return r.Perplexity
}

// TestTinyLlamaCheckpoints runs the local pipeline on tiny-llama with a small calibration
// (8 samples × 128 tokens): GPTQ 4-bit asymmetric with act-order, AWQ 4-bit and RTN. Each
// checkpoint must hold exactly the tensors, dtypes, shapes and config keys the loaders need,
// decoded independently (§3, §4) to what OpenModel reads; and its perplexity on 8 evaluation
// windows must stay close to the unquantized model's, GPTQ and AWQ below RTN's.
func TestTinyLlamaCheckpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("whole-model GPTQ/AWQ runs: make test runs them")
	}
	sh := shared(t)
	src := filepath.Join(sh, "models", "tiny-llama")
	srcFiles := readCheckpoint(t, src)
	mcfg, err := transformer.ReadConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	req := func(name string) Request {
		return Request{ModelDir: src, ModelName: "tiny-llama", CalibrationData: filepath.Join(sh, "data", "calib.txt"),
			CalibrationSamples: 16, SeqLen: 256, OutputDir: out, OutputName: name}
	}
	ctx := context.Background()
	const windows = 8
	base := perplexityOf(t, src, windows)
	ppl := map[string]float64{}
	for _, tc := range []struct {
		name string
		run  func() (string, error)
	}{
		{"rtn", func() (string, error) {
			r, err := GPTQ(ctx, GPTQRequest{Request: req("rtn"), RTN: true, Config: gptq.Config{Bits: 4, GroupSize: 128}})
			if err != nil {
				return "", err
			}
			return r.OutputPath, nil
		}},
		{"gptq", func() (string, error) {
			r, err := GPTQ(ctx, GPTQRequest{Request: req("gptq"), Config: gptq.Config{Bits: 4, GroupSize: 128, ActOrder: true}})
			if err != nil {
				return "", err
			}
			if r.QuantizationMetadata["calibration_samples"] != 16 || r.QuantizationMetadata["damp_used_max"] != 0.01 {
				t.Errorf("metadata %v", r.QuantizationMetadata)
			}
			return r.OutputPath, nil
		}},
		{"awq", func() (string, error) {
			r, err := AWQ(ctx, AWQRequest{Request: req("awq"), Config: DefaultAWQConfig()})
			if err != nil {
				return "", err
			}
			return r.OutputPath, nil
		}},
	} {
		dir, err := tc.run()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if dir != filepath.Join(out, tc.name) {
			t.Fatalf("%s written to %s", tc.name, dir)
		}
		checkCheckpoint(t, dir, srcFiles, mcfg)
		ppl[tc.name] = perplexityOf(t, dir, windows)
	}
	t.Logf("perplexity on %d windows: bf16 %.4f, RTN %.4f, GPTQ %.4f, AWQ %.4f", windows, base, ppl["rtn"], ppl["gptq"], ppl["awq"])
	for _, m := range []string{"gptq", "awq"} {
		if ppl[m] >= ppl["rtn"] || ppl[m] > base*1.05 || ppl[m] < base*0.99 {
			t.Errorf("%s perplexity %.4f: want below RTN's %.4f and within 5%% of bf16's %.4f", m, ppl[m], ppl["rtn"], base)
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) != 3 {
		t.Errorf("output directory holds %d entries, want the 3 checkpoints (no temporary left)", len(entries))
	}
}

// checkCheckpoint checks a written checkpoint against the source model: every quantized
// linear in the right layout, every other tensor copied with the source dtype (AWQ: the
// folded norms in fp16), the auxiliary files copied, and the independent decoding equal to
// what OpenModel (hfquant) reads.
func checkCheckpoint(t *testing.T, dir string, src *checkpointFiles, mcfg *transformer.Config) {
	t.Helper()
	f := readCheckpoint(t, dir)
	qc := f.quantConfig(t)
	for _, name := range []string{"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s not copied: %v", name, err)
		}
	}
	c, err := hfquant.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := map[string]bool{}
	for name, e := range src.tensors {
		prefix, isWeight := strings.CutSuffix(name, ".weight")
		linear := isWeight && strings.HasPrefix(name, "model.layers.") && len(e.Shape) == 2
		got, _, err := c.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case linear:
			w := f.decodeLinear(t, prefix, qc, int(e.Shape[0]), int(e.Shape[1]))
			if !slices.Equal(w, got) {
				t.Fatalf("%s: independent decoding differs from hfquant's", name)
			}
			for _, s := range []string{"qweight", "qzeros", "scales", "g_idx"} {
				seen[prefix+"."+s] = true
			}
		case qc.QuantMethod == "awq" && strings.HasSuffix(name, "layernorm.weight"):
			f.float16(t, name, e.Shape)
			seen[name] = true
		default:
			f.check(t, name, e.DType, e.Shape...)
			if string(f.data[name]) != string(src.data[name]) {
				t.Fatalf("%s differs from the source", name)
			}
			seen[name] = true
		}
	}
	for name := range f.tensors {
		if !seen[name] {
			t.Errorf("unexpected tensor %s", name)
		}
	}
	if n := 7 * mcfg.NumLayers; len(f.tensors) != len(src.tensors)+n*3-map[string]int{"gptq": 0, "awq": n}[qc.QuantMethod] {
		t.Errorf("%d tensors for %d source tensors", len(f.tensors), len(src.tensors))
	}
}

func TestActivationsRoundTrip(t *testing.T) {
	x := transformer.NewTensor(2, 3, 4)
	for i := range x.Data {
		x.Data[i] = float32(i) - 7.25
	}
	x.Data[5] = float32(math.Inf(-1))
	x.Data[6] = math.Float32frombits(0x7fc00001) // a NaN payload survives
	b := MarshalActivations(x)
	y, err := UnmarshalActivations(b)
	if err != nil {
		t.Fatal(err)
	}
	if y.Batch != 2 || y.Seq != 3 || y.Dim != 4 {
		t.Fatalf("shape %d×%d×%d", y.Batch, y.Seq, y.Dim)
	}
	for i := range x.Data {
		if math.Float32bits(x.Data[i]) != math.Float32bits(y.Data[i]) {
			t.Fatalf("value %d: %v, want %v", i, y.Data[i], x.Data[i])
		}
	}
	// The values are little-endian float32 after the 32-byte header, whatever the host.
	if got := binary.LittleEndian.Uint32(b[32+4*6:]); got != 0x7fc00001 {
		t.Fatalf("value 6 encoded as %#x", got)
	}
	// A misaligned buffer is decoded by copying, to the same values.
	odd := append(make([]byte, 1, len(b)+1), b...)[1:]
	if z, err := UnmarshalActivations(odd); err != nil || math.Float32bits(z.Data[6]) != 0x7fc00001 || z.Data[0] != x.Data[0] {
		t.Fatalf("misaligned decode: %v", err)
	}
	for _, bad := range [][]byte{nil, b[:10], b[:len(b)-1], append([]byte("XXXXXXXX"), b[8:]...)} {
		if _, err := UnmarshalActivations(bad); !errors.Is(err, ErrBadActivations) {
			t.Errorf("%d bytes: error %v, want ErrBadActivations", len(bad), err)
		}
	}
}

// TestQuantizeLayerDeterministic checks what resuming a job on another worker relies on:
// the same layer and inputs give bit-identical results, whatever the number of threads.
func TestQuantizeLayerDeterministic(t *testing.T) {
	_, m, x := tinyInputs(t, 2, 128)
	for _, cfg := range []LayerConfig{
		{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 128, ActOrder: true}},
		{Method: hfquant.AWQ, AWQ: DefaultAWQConfig()},
	} {
		var runs []*LayerResult
		for _, procs := range []int{1, 3} {
			old := runtime.GOMAXPROCS(procs)
			l, _ := m.Layer(0)
			r, err := QuantizeLayer(context.Background(), l, x, cfg)
			runtime.GOMAXPROCS(old)
			if err != nil {
				t.Fatal(err)
			}
			runs = append(runs, r)
		}
		a, b := runs[0], runs[1]
		if !slices.Equal(a.Outputs.Data, b.Outputs.Data) {
			t.Errorf("%s: outputs differ between 1 and 3 threads", cfg.Method)
		}
		for i := range a.Linears {
			la, lb := a.Linears[i], b.Linears[i]
			if la.Name != lb.Name || !slices.Equal(la.QWeight, lb.QWeight) || !slices.Equal(la.Scales, lb.Scales) ||
				!slices.Equal(la.Zeros, lb.Zeros) || !slices.Equal(la.GIdx, lb.GIdx) {
				t.Errorf("%s: %s differs between 1 and 3 threads", cfg.Method, la.Name)
			}
		}
		for i := range a.Tensors {
			if !slices.Equal(a.Tensors[i].Data, b.Tensors[i].Data) {
				t.Errorf("%s: %s differs between 1 and 3 threads", cfg.Method, a.Tensors[i].Name)
			}
		}
	}
}

// openTinyLlama opens tiny-llama's checkpoint as stored and as a model (closed at the test's
// end) and returns its directory with them.
func openTinyLlama(t *testing.T) (string, *safetensors.Model, *transformer.Model) {
	t.Helper()
	src := filepath.Join(shared(t), "models", "tiny-llama")
	st, err := safetensors.OpenModel(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := transformer.Load(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return src, st, m
}

func TestValidateCheckpoint(t *testing.T) {
	src, st, m := openTinyLlama(t)
	cfg := LayerConfig{Method: hfquant.GPTQ, RTN: true, GPTQ: gptq.Config{Bits: 4, GroupSize: 128}}
	// write writes layers 0..layers-1 (those in inf with an infinite scale in their first
	// linear) and, with rest, every other source tensor.
	write := func(layers int, rest bool, inf ...int) string {
		dir := t.TempDir()
		w, err := hfquant.Create(dir, CheckpointOptions(cfg, src))
		if err != nil {
			t.Fatal(err)
		}
		replaced := map[string]bool{}
		for i := range m.Config.NumLayers {
			l, _ := m.Layer(i)
			r, err := QuantizeLayer(context.Background(), l, nil, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range r.Names() {
				replaced[n] = true
			}
			if slices.Contains(inf, i) {
				r.Linears[0].Scales[0] = float32(math.Inf(1))
			}
			if i < layers {
				if err := WriteLayer(w, r); err != nil {
					t.Fatal(err)
				}
			}
		}
		if rest {
			if err := copyRemaining(w, st, replaced); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	n := m.Config.NumLayers
	for _, tc := range []struct {
		name  string
		dir   string
		want  error
		names string // the tensor the error names
	}{
		{"complete", write(n, true), nil, ""},
		{"a layer missing", write(n-1, true), ErrInvalidOutput, ""},
		{"embeddings missing", write(n, false), ErrInvalidOutput, ""},
		{"not quantized", src, ErrInvalidOutput, ""},
		// Read back concurrently, the first bad tensor in the source's order is the one named.
		{"infinite scales in layers 1 and 4", write(n, true, 4, 1), ErrInvalidOutput, "model.layers.1."},
	} {
		err := ValidateCheckpoint(tc.dir, st, nil)
		if !errors.Is(err, tc.want) || (tc.names != "" && !strings.Contains(err.Error(), tc.names)) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.want, tc.names)
		}
	}
}

// copyRemaining adds every source tensor not in replaced: a checkpoint with holes, which
// CheckpointBuilder never writes.
func copyRemaining(w *hfquant.Writer, src *safetensors.Model, replaced map[string]bool) error {
	for _, t := range src.Tensors() {
		if !replaced[t.Name] {
			if err := w.CopyTensor(src, t.Name); err != nil {
				return err
			}
		}
	}
	return nil
}
