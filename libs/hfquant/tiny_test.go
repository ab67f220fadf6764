package hfquant_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/sharedtest"
)

// TestTinyLlamaRTN quantizes every decoder linear of tiny-llama with RTN, writes a GPTQ
// checkpoint with the other tensors copied, and reads it back: every quantized weight
// equals the in-memory result, every other tensor equals the source bit for bit.
func TestTinyLlamaRTN(t *testing.T) {
	src := filepath.Join(sharedtest.Dir(t), "models", "tiny-llama")
	m, err := safetensors.OpenModel(src)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := t.TempDir()
	cfg := gptq.Config{Bits: 4, GroupSize: 128, V1Zeros: true}
	w, err := hfquant.Create(dir, hfquant.Options{Method: hfquant.GPTQ, Bits: 4, GroupSize: 128, DampPercent: 0.01,
		TrueSequential: true, SourceDir: src, MaxShardSize: 20 << 20})
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]*gptq.Result{}
	for _, tt := range m.Tensors() {
		prefix, isWeight := strings.CutSuffix(tt.Name, ".weight")
		if !isWeight || !strings.HasPrefix(tt.Name, "model.layers.") || len(tt.Shape) != 2 {
			if err := w.CopyTensor(m, tt.Name); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := m.ReadFloat32(tt.Name)
		if err != nil {
			t.Fatal(err)
		}
		rows, cols := int(tt.Shape[0]), int(tt.Shape[1])
		r, err := gptq.RTN(data, rows, cols, cfg)
		if err != nil {
			t.Fatal(err)
		}
		results[tt.Name] = r
		if err := w.AddLinear(&hfquant.Linear{Name: prefix, Rows: rows, Cols: cols, Bits: 4, GroupSize: 128,
			QWeight: r.QWeight, Scales: r.Scales, Zeros: r.Zeros, GIdx: r.GIdx}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(results) != 6*7 {
		t.Fatalf("%d quantized linears, want 42", len(results))
	}
	c, err := hfquant.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Names()) != len(m.Tensors()) {
		t.Fatalf("%d names, source has %d tensors", len(c.Names()), len(m.Tensors()))
	}
	for _, name := range c.Names() {
		got, _, err := c.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		want, err := m.ReadFloat32(name)
		if err != nil {
			t.Fatal(err)
		}
		if r := results[name]; r != nil {
			want = r.Dequantize()
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s[%d] = %v, want %v", name, i, got[i], want[i])
			}
		}
	}
	var size int64
	shards, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	for _, s := range shards {
		st, _ := os.Stat(s)
		size += st.Size()
	}
	srcSize, _ := os.Stat(filepath.Join(src, "model.safetensors"))
	t.Logf("%d shards, %.1f MB (source %.1f MB)", len(shards), float64(size)/1e6, float64(srcSize.Size())/1e6)
}
