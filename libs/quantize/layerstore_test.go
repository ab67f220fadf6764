package quantize

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"quantfleet.dev/libs/gptq"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/transformer"
)

// syntheticLayer is a GPTQ layer result with values gob must keep bit for bit: negative
// zero, subnormals, infinities, the float32 extremes, a g_idx and a bias.
func syntheticLayer() *LayerResult {
	l := &hfquant.Linear{Name: "model.layers.3.self_attn.q_proj", Rows: 2, Cols: 4, Bits: 4, GroupSize: 2,
		QWeight: []uint8{0, 15, 7, 8, 1, 2, 3, 4}, Scales: []float32{float32(math.Copysign(0, -1)), 1e-45, math.MaxFloat32, 0.125},
		Zeros: []uint8{8, 0, 15, 7}, GIdx: []int32{1, 0, 1, 0}, Bias: []float32{-1.5, float32(math.Inf(1))}}
	return &LayerResult{Index: 3, Linears: []*hfquant.Linear{l},
		Tensors: []DenseTensor{{Name: "model.layers.3.input_layernorm.weight", Shape: []int64{4}, DType: safetensors.F16,
			Data: []float32{1, math.SmallestNonzeroFloat32, float32(math.Inf(-1)), -0.0}}},
		Stats:  []LinearStats{{Name: l.Name, Damp: 0.01, Loss: 3.25, Dead: 1}},
		Scales: []ScaleStats{{Prev: "input_layernorm", Linears: []string{"q_proj", "k_proj"}, Ratio: 0.35, Loss: 1e-300}},
		Damp:   0.0125}
}

// sameFloats reports whether a and b hold the same bits.
func sameFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// checkSameLayer compares everything MarshalLayerResult keeps, floats by their bits.
func checkSameLayer(t *testing.T, got, want *LayerResult) {
	t.Helper()
	if got.Outputs != nil {
		t.Error("Outputs survived the round trip; they are stored apart")
	}
	w := *want
	w.Outputs = nil
	if !reflect.DeepEqual(got, &w) {
		t.Fatalf("decoded layer differs:\n got %+v\nwant %+v", got, &w)
	}
	for i, l := range want.Linears {
		g := got.Linears[i]
		if !sameFloats(g.Scales, l.Scales) || !sameFloats(g.Bias, l.Bias) {
			t.Errorf("%s: scales or bias bits changed", l.Name)
		}
	}
	for i, d := range want.Tensors {
		if !sameFloats(got.Tensors[i].Data, d.Data) {
			t.Errorf("%s: bits changed", d.Name)
		}
	}
}

// writeLayerFiles writes r alone into a checkpoint directory and returns its files.
func writeLayerFiles(t *testing.T, cfg LayerConfig, r *LayerResult) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	w, err := hfquant.Create(dir, CheckpointOptions(cfg, ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteLayer(w, r); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// TestLayerResultRoundTrip encodes layer results as a fleet worker stores them and decodes them
// as the assembler does: the decoded result equals the original bit for bit, and WriteLayer
// writes the same checkpoint bytes from either.
func TestLayerResultRoundTrip(t *testing.T) {
	t.Run("synthetic", func(t *testing.T) {
		r := syntheticLayer()
		b, err := MarshalLayerResult(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalLayerResult(b)
		if err != nil {
			t.Fatal(err)
		}
		checkSameLayer(t, got, r)
		// Deterministic: a re-run of a task rewrites the same object.
		if b2, _ := MarshalLayerResult(got); !bytes.Equal(b, b2) {
			t.Error("re-encoding the decoded layer gives other bytes")
		}
	})

	_, m, x := tinyInputs(t, 4, 64)
	for _, tc := range []struct {
		name string
		cfg  LayerConfig
	}{
		{"gptq asym act-order", LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 4, GroupSize: 128, ActOrder: true}}},
		{"gptq 3bit per-channel", LayerConfig{Method: hfquant.GPTQ, GPTQ: gptq.Config{Bits: 3, GroupSize: -1}}},
		{"awq", LayerConfig{Method: hfquant.AWQ, AWQ: DefaultAWQConfig()}},
		{"rtn", LayerConfig{Method: hfquant.GPTQ, RTN: true, GPTQ: gptq.Config{Bits: 4, GroupSize: 128}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := m.Layer(0)
			if err != nil {
				t.Fatal(err)
			}
			in := x
			if tc.cfg.RTN {
				in = nil
			}
			r, err := QuantizeLayer(context.Background(), l, in, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Linears) == 0 || len(r.Stats)+len(r.Scales) == 0 && !tc.cfg.RTN {
				t.Fatalf("layer result without linears or statistics: %+v", r)
			}
			b, err := MarshalLayerResult(r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalLayerResult(b)
			if err != nil {
				t.Fatal(err)
			}
			checkSameLayer(t, got, r)
			want := writeLayerFiles(t, tc.cfg, r)
			files := writeLayerFiles(t, tc.cfg, got)
			if len(files) != len(want) {
				t.Fatalf("%d files from the decoded layer, %d from the original", len(files), len(want))
			}
			for name, w := range want {
				if !bytes.Equal(files[name], w) {
					t.Errorf("%s differs when written from the decoded layer", name)
				}
			}
		})
	}
}

// TestLayerResultCorrupt checks that damaged blobs are refused with ErrBadLayerResult rather
// than decoded into other weights: an assembler must never write a checkpoint from them.
func TestLayerResultCorrupt(t *testing.T) {
	b, err := MarshalLayerResult(syntheticLayer())
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		return c
	}
	// A well-formed envelope around something that is not a layer's gob.
	junk := append([]byte(layerResultMagic), "not a gob stream"...)
	junk = binary.BigEndian.AppendUint32(junk, crc32.Checksum(junk, castagnoli))
	// A valid layer followed by extra bytes, with a checksum over all of it.
	long := append(bytes.Clone(b[:len(b)-4]), 0, 0, 0)
	long = binary.BigEndian.AppendUint32(long, crc32.Checksum(long, castagnoli))

	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"magic only", []byte(layerResultMagic)},
		{"other magic", append([]byte("QFLAYER\x01"), b[len(layerResultMagic):]...)},
		{"activations", MarshalActivations(transformer.NewTensor(1, 2, 3))},
		{"truncated by one", b[:len(b)-1]},
		{"truncated by half", b[:len(b)/2]},
		{"byte appended", append(bytes.Clone(b), 0)},
		{"bit flipped in the magic", flip(2)},
		{"bit flipped in the values", flip(len(b) / 2)},
		{"bit flipped near the end", flip(len(b) - 6)},
		{"bit flipped in the checksum", flip(len(b) - 1)},
		{"not a gob", junk},
		{"trailing bytes inside", long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := UnmarshalLayerResult(tc.data)
			if !errors.Is(err, ErrBadLayerResult) {
				t.Fatalf("error %v (result %v), want ErrBadLayerResult", err, r)
			}
		})
	}
}
