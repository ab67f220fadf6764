package gptq

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// refInputs returns the 256×512 weight and the float32-rounded Hessian of the reference
// comparison (testdata/reference/README.md), built with plain float64 loops so that they are
// identical on every machine.
func refInputs() (w []float32, h []float64) {
	const rows, cols, tokens = 256, 512, 1024
	l := randomLayer(42, rows, cols, tokens)
	h = make([]float64, cols*cols)
	for i := range cols {
		for j := i; j < cols; j++ {
			var s float64
			for t := range tokens {
				s += float64(float64(l.x[t*cols+i]) * float64(l.x[t*cols+j]))
			}
			v := float64(float32(2 * s / tokens))
			h[i*cols+j], h[j*cols+i] = v, v
		}
	}
	for i := range 3 { // dead input channels
		c := 100 + 150*i
		for j := range cols {
			h[c*cols+j], h[j*cols+c] = 0, 0
		}
	}
	return l.w, h
}

// TestExportReferenceInputs writes the inputs of the reference run when
// GPTQ_EXPORT_REF_INPUTS names a directory.
func TestExportReferenceInputs(t *testing.T) {
	dir := os.Getenv("GPTQ_EXPORT_REF_INPUTS")
	if dir == "" {
		t.Skip("GPTQ_EXPORT_REF_INPUTS not set")
	}
	w, h := refInputs()
	var bw, bh bytes.Buffer
	binary.Write(&bw, binary.LittleEndian, w)
	for _, v := range h {
		binary.Write(&bh, binary.LittleEndian, float32(v))
	}
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "W.f32"), bw.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "H.f32"), bh.Bytes(), 0o644)
}

func readGz(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgainstReference compares with the outputs of the reference algorithm run in PyTorch
// (float32, CUDA, TF32 off) on the same weight and Hessian (testdata/reference/README.md).
// The run inverts the Hessian in float32 and we in float64, and its scales were computed as
// (xmax − xmin)·f32(1/maxq) (see the README), so scales may differ in the last bit; codes,
// zero points and g_idx must agree (up to a rare flipped code).
func TestAgainstReference(t *testing.T) {
	dir := filepath.Join("testdata", "reference")
	if _, err := os.Stat(filepath.Join(dir, "a.codes.gz")); err != nil {
		t.Skip("reference outputs not present")
	}
	w, hm := refInputs()
	h, err := HessianFromSum(512, make([]float64, 512*512), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	copy(h.sum, hm) // Matrix() = 2/2·sum = hm
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"a", Config{Bits: 4, GroupSize: 128}},
		{"b", Config{Bits: 4, GroupSize: 128, ActOrder: true}},
	} {
		r, err := Quantize(w, 256, 512, h, tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		codes := readGz(t, filepath.Join(dir, tc.name+".codes.gz"))
		zeros := readGz(t, filepath.Join(dir, tc.name+".zeros.gz"))
		rawScales := readGz(t, filepath.Join(dir, tc.name+".scales.gz"))
		rawGIdx := readGz(t, filepath.Join(dir, tc.name+".gidx.gz"))
		if len(codes) != len(r.QWeight) || len(zeros) != len(r.Zeros) || len(rawScales) != 4*len(r.Scales) || len(rawGIdx) != 4*len(r.GIdx) {
			t.Fatalf("%s: reference sizes %d %d %d %d", tc.name, len(codes), len(zeros), len(rawScales), len(rawGIdx))
		}
		for i := range r.GIdx {
			if g := int32(binary.LittleEndian.Uint32(rawGIdx[4*i:])); g != r.GIdx[i] {
				t.Fatalf("%s: g_idx[%d] = %d, reference %d", tc.name, i, r.GIdx[i], g)
			}
		}
		var codeDiff, zeroDiff, scaleDiff int
		var maxRel float64
		for i := range codes {
			if codes[i] != r.QWeight[i] {
				codeDiff++
			}
		}
		for i := range zeros {
			s := math.Float32frombits(binary.LittleEndian.Uint32(rawScales[4*i:]))
			if zeros[i] != r.Zeros[i] {
				zeroDiff++
			}
			if s != r.Scales[i] {
				scaleDiff++
				maxRel = math.Max(maxRel, math.Abs(float64(s-r.Scales[i]))/float64(s))
			}
		}
		t.Logf("%s %+v: %d of %d codes, %d zeros and %d scales of %d grids differ (max relative scale difference %.2g)",
			tc.name, tc.cfg, codeDiff, len(codes), zeroDiff, scaleDiff, len(zeros), maxRel)
		if codeDiff > len(codes)/1000 || zeroDiff > len(zeros)/100 || maxRel > 1e-5 {
			t.Errorf("%s: too far from the reference", tc.name)
		}
	}
}
