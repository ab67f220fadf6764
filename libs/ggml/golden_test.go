package ggml

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// golden is testdata/golden.json: hashes of llama.cpp's reference outputs for goldenFamilies
// (see testdata/README.md for how it was produced).
type golden struct {
	Inputs map[string]string `json:"inputs"`
	Cases  []struct {
		Family        string `json:"family"`
		Type          string `json:"type"`
		QuantSHA256   string `json:"quant_sha256"`
		DequantSHA256 string `json:"dequant_sha256"`
		Head          string `json:"head"`
	} `json:"cases"`
	Conversions map[string]string `json:"conversions"`
}

func loadGolden(t *testing.T) *golden {
	t.Helper()
	b, err := os.ReadFile("testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func f32Bytes(x []float32) []byte {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func TestGoldenQuantize(t *testing.T) {
	g := loadGolden(t)
	fams := map[string]family{}
	for _, f := range goldenFamilies() {
		fams[f.name] = f
		if got, want := sha(f32Bytes(f.x)), g.Inputs[f.name]; got != want {
			t.Errorf("input family %s: sha256 %s, golden file has %s (generator changed or not reproducible here)", f.name, got, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if len(g.Cases) == 0 {
		t.Fatal("no golden cases")
	}
	for _, v := range kernelVariants {
		restore := v.use()
		for _, c := range g.Cases {
			t.Run(v.name+"/"+c.Family+"/"+c.Type, func(t *testing.T) {
				typ, err := ParseType(c.Type)
				if err != nil {
					t.Fatal(err)
				}
				f, ok := fams[c.Family]
				if !ok {
					t.Fatalf("unknown family %q", c.Family)
				}
				q := make([]byte, typ.RowSize(int64(len(f.x))))
				if err := Quantize(typ, q, f.x, QK_K); err != nil {
					t.Fatal(err)
				}
				if c.Head != "" {
					if got := hex.EncodeToString(q[:len(c.Head)/2]); got != c.Head {
						t.Errorf("first blocks differ:\n got %s\nwant %s", got, c.Head)
					}
				}
				if got := sha(q); got != c.QuantSHA256 {
					t.Errorf("quantized sha256 %s, want %s%s", got, c.QuantSHA256, firstDiff(c.Family, c.Type, "q", q, typ.TypeSize()))
				}
				dq := make([]float32, len(f.x))
				if err := Dequantize(typ, dq, q); err != nil {
					t.Fatal(err)
				}
				// NaNs (from Inf scales) are hashed as 0x7fc00000: their sign bit is the CPU's choice
				// (x86-64 produces 0xffc00000, arm64 0x7fc00000).
				if got := sha(f32Bytes(canonicalNaN(dq))); got != c.DequantSHA256 {
					t.Errorf("dequantized sha256 %s, want %s%s", got, c.DequantSHA256, firstDiff(c.Family, c.Type, "dq", f32Bytes(dq), 4))
				}
			})
		}
		restore()
	}
}

func canonicalNaN(x []float32) []float32 {
	for i, v := range x {
		if v != v {
			x[i] = math.Float32frombits(0x7fc00000)
		}
	}
	return x
}

// firstDiff locates the first differing block against the raw reference outputs when
// GGML_GOLDEN_DIR points at them (a debugging aid; see testdata/README.md).
func firstDiff(fam, typ, ext string, got []byte, unit int) string {
	dir := os.Getenv("GGML_GOLDEN_DIR")
	if dir == "" {
		return ""
	}
	want, err := os.ReadFile(filepath.Join(dir, fam+"."+typ+"."+ext))
	if err != nil {
		return "; " + err.Error()
	}
	for i := 0; i < len(got) && i < len(want); i += unit {
		e := min(i+unit, len(got), len(want))
		if !bytes.Equal(got[i:e], want[i:e]) {
			return fmt.Sprintf("; first difference in unit %d:\n got %x\nwant %x", i/unit, got[i:e], want[i:e])
		}
	}
	return fmt.Sprintf("; lengths %d vs %d", len(got), len(want))
}

func TestGoldenConversions(t *testing.T) {
	g := loadGolden(t)
	var h, b []byte
	for u := uint64(0); u <= math.MaxUint32; u += 251 {
		f := math.Float32frombits(uint32(u))
		h = binary.LittleEndian.AppendUint16(h, FP32ToFP16(f))
		b = binary.LittleEndian.AppendUint16(b, FP32ToBF16(f))
	}
	var f []byte
	for i := 0; i < 1<<16; i++ {
		f = binary.LittleEndian.AppendUint32(f, math.Float32bits(FP16ToFP32(uint16(i))))
	}
	for _, c := range []struct {
		name string
		data []byte
	}{{"fp32_to_fp16", h}, {"fp32_to_bf16", b}, {"fp16_to_fp32", f}} {
		want, ok := g.Conversions[c.name]
		if !ok {
			t.Fatalf("golden file lacks %s", c.name)
		}
		if got := sha(c.data); got != want {
			t.Errorf("%s: sha256 %s, want %s%s", c.name, got, want, firstDiff("conv", c.name, "bin", c.data, 2))
		}
	}
}
