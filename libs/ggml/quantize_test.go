package ggml

import (
	"bytes"
	"errors"
	"math"
	"runtime"
	"testing"
)

var quantTypes = []Type{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}

func TestFP16Cases(t *testing.T) {
	nan := math.Float32frombits(0x7fc12345)
	negNaN := math.Float32frombits(0xff812345)
	for _, c := range []struct {
		f    float32
		want uint16
	}{
		{0, 0x0000},
		{negZero, 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{65504, 0x7bff},
		{65519.996, 0x7bff}, // below the tie: stays finite
		{65520, 0x7c00},     // the tie rounds to even = Inf
		{-1e10, 0xfc00},
		{float32(math.Inf(1)), 0x7c00},
		{nan, 0x7e00}, // payload dropped
		{negNaN, 0xfe00},
		{0x1p-14, 0x0400},        // smallest normal
		{0x1p-24, 0x0001},        // smallest subnormal
		{0x1p-25, 0x0000},        // tie between 0 and 2^-24 → even (0)
		{0x1.8p-25, 0x0001},      // above the tie
		{0x1.8p-24, 0x0002},      // 1.5 ulps → even (2)
		{0x1.002p0, 0x3c00},      // 1 + 2^-11: tie → even (down)
		{0x1.006p0, 0x3c02},      // 1 + 3·2^-11: tie → even (up)
		{0x1.ffcp-15, 0x0400},    // tie between the largest subnormal and the smallest normal → even
		{-0x1p-30, 0x8000},       // underflow keeps the sign
		{0x1.fffffep127, 0x7c00}, // max float
	} {
		if got := FP32ToFP16(c.f); got != c.want {
			t.Errorf("FP32ToFP16(%g [%08x]) = %04x, want %04x", c.f, math.Float32bits(c.f), got, c.want)
		}
	}
	// Widening is exact and narrowing the widened value gives it back for every non-NaN pattern.
	for h := 0; h < 1<<16; h++ {
		f := FP16ToFP32(uint16(h))
		if math.IsNaN(float64(f)) {
			if bits := math.Float32bits(f); bits&0x00400000 == 0 || uint16(bits>>16)&0x8000 != uint16(h)&0x8000 {
				t.Errorf("FP16ToFP32(%04x) = %08x: not a quiet NaN of the same sign", h, bits)
			}
			continue
		}
		if back := FP32ToFP16(f); back != uint16(h) {
			t.Errorf("FP32ToFP16(FP16ToFP32(%04x)) = %04x", h, back)
		}
	}
}

func TestBF16Cases(t *testing.T) {
	for _, c := range []struct {
		f    float32
		want uint16
	}{
		{1, 0x3f80},
		{negZero, 0x8000},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie → even
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie → even (up)
		{math.Float32frombits(0x3f808001), 0x3f81},
		{math.Float32frombits(0x00000001), 0x0000}, // subnormals are rounded, not flushed
		{math.Float32frombits(0x00008001), 0x0001},
		{math.Float32frombits(0x7f7fffff), 0x7f80}, // rounds to Inf
		{math.Float32frombits(0x7f800001), 0x7fc0}, // signalling NaN → quiet
		{math.Float32frombits(0xffc12345), 0xffc1},
	} {
		if got := FP32ToBF16(c.f); got != c.want {
			t.Errorf("FP32ToBF16(%08x) = %04x, want %04x", math.Float32bits(c.f), got, c.want)
		}
	}
	for _, h := range []uint16{0, 0x8000, 0x3f80, 0x0001, 0x7f80, 0xff7f} {
		if got := FP32ToBF16(BF16ToFP32(h)); got != h {
			t.Errorf("round trip %04x → %04x", h, got)
		}
	}
	src := []float32{1.5, -3, 1e-40}
	h := make([]uint16, 3)
	FP32ToBF16Row(h, src)
	back := make([]float32, 3)
	BF16ToFP32Row(back, h)
	FP32ToFP16Row(h, src)
	FP16ToFP32Row(back[:2], h[:2])
	if back[0] != 1.5 || back[1] != -3 {
		t.Errorf("row round trip: %v", back)
	}
}

func TestQuantizeArgs(t *testing.T) {
	x := make([]float32, 512)
	for _, c := range []struct {
		name    string
		typ     Type
		dst     int
		src     int
		nPerRow int
		want    error
	}{
		{"ok", Q4_K, 288, 512, 256, nil},
		{"ok legacy", Q8_0, 544, 512, 32, nil},
		{"unsupported", Q8_K, 292 * 2, 512, 256, ErrUnsupportedType},
		{"unknown", Type(99), 100, 512, 256, ErrUnsupportedType},
		{"row not multiple of block", Q4_K, 288, 512, 128, ErrShape},
		{"zero row", Q4_0, 288, 512, 0, ErrShape},
		{"src not whole rows", Q4_0, 270, 480, 256, ErrShape},
		{"dst too small", Q4_K, 287, 512, 256, ErrShape},
		{"dst too large", F16, 1025, 512, 256, ErrShape},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Quantize(c.typ, make([]byte, c.dst), x[:c.src], c.nPerRow)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Quantize: %v, want %v", err, c.want)
			}
		})
	}
	if err := QuantizeBlocks(Q4_K, make([]byte, 144), x[:128]); !errors.Is(err, ErrShape) {
		t.Errorf("QuantizeBlocks partial block: %v", err)
	}
	if err := Dequantize(Q4_K, make([]float32, 256), make([]byte, 143)); !errors.Is(err, ErrShape) {
		t.Errorf("Dequantize partial block: %v", err)
	}
	if err := Dequantize(Q4_K, make([]float32, 255), make([]byte, 144)); !errors.Is(err, ErrShape) {
		t.Errorf("Dequantize short dst: %v", err)
	}
	if err := Dequantize(I8, make([]float32, 1), make([]byte, 1)); !errors.Is(err, ErrUnsupportedType) {
		t.Errorf("Dequantize I8: %v", err)
	}
}

// Quantize splits the work over goroutines; the bytes must not depend on the split.
func TestQuantizeParallelMatchesSerial(t *testing.T) {
	fams := goldenFamilies()
	x := fams[len(fams)-1].x // 1024 super-blocks of weight-like data: several chunks for every type
	x = append(x[:len(x):len(x)], x[:3*QK_K]...)
	for _, typ := range append(quantTypes, F16, BF16, F32) {
		want := make([]byte, typ.RowSize(int64(len(x))))
		if err := QuantizeBlocks(typ, want, x); err != nil {
			t.Fatal(err)
		}
		for _, procs := range []int{1, 2, 3, 7} {
			old := runtime.GOMAXPROCS(procs)
			got := make([]byte, len(want))
			err := Quantize(typ, got, x, QK_K)
			runtime.GOMAXPROCS(old)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%v with GOMAXPROCS=%d differs from the serial result", typ, procs)
			}
		}
	}
}

func TestPlainTypesRoundTrip(t *testing.T) {
	// 11 values: the converters work four at a time, with a tail.
	x := []float32{0, negZero, 1, -2.5, 1e-8, 3e38, 65504, 0.1, float32(math.Inf(-1)), 1.00390625, -1e-40}
	for _, c := range []struct {
		typ  Type
		want func(float32) float32
	}{
		{F32, func(v float32) float32 { return v }},
		{F16, func(v float32) float32 { return FP16ToFP32(FP32ToFP16(v)) }},
		{BF16, func(v float32) float32 { return BF16ToFP32(FP32ToBF16(v)) }},
	} {
		q := make([]byte, c.typ.RowSize(int64(len(x))))
		if err := Quantize(c.typ, q, x, len(x)); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := Dequantize(c.typ, y, q); err != nil {
			t.Fatal(err)
		}
		for i, v := range x {
			if w := c.want(v); math.Float32bits(y[i]) != math.Float32bits(w) {
				t.Errorf("%v: element %d = %g, want %g", c.typ, i, y[i], w)
			}
		}
	}
}

// TestQuantizationError mirrors llama.cpp's tests/test-quantize-fns.cpp: 4096 values
// 0.1 + 2·cos(i) must come back with sqrt(Σd²)/n below the per-type limit.
func TestQuantizationError(t *testing.T) {
	const n = 32 * 128
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(0.1 + 2*float64(float32(math.Cos(float64(i)))))
	}
	limits := map[Type]float64{Q2_K: 0.0075, Q3_K: 0.0040}
	for _, typ := range append(quantTypes, F16, BF16) {
		q := make([]byte, typ.RowSize(n))
		if err := Quantize(typ, q, x, n); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, n)
		if err := Dequantize(typ, y, q); err != nil {
			t.Fatal(err)
		}
		var sum float64
		for i := range x {
			d := float64(x[i]) - float64(y[i])
			sum += float64(d * d)
		}
		rmse := math.Sqrt(sum) / n
		limit, ok := limits[typ]
		if !ok {
			limit = 0.002
		}
		if !(rmse < limit) {
			t.Errorf("%v: error %g, limit %g", typ, rmse, limit)
		}
	}
}

// A per-element bound: every dequantized value lies within one quantization step of the input
// for data without outliers (catches packing/unpacking mix-ups that an RMSE could average out).
func TestQuantizeElementBound(t *testing.T) {
	r := &rng{s: 7}
	x := make([]float32, 16*QK_K)
	for i := range x {
		x[i] = float32(r.uniform()*2 - 1)
	}
	steps := map[Type]float64{Q4_0: 1.0 / 7, Q4_1: 2.0 / 15, Q5_0: 1.0 / 15, Q5_1: 2.0 / 31, Q8_0: 1.0 / 127,
		Q2_K: 2.0 / 3, Q3_K: 2.0 / 7, Q4_K: 2.0 / 15, Q5_K: 2.0 / 31, Q6_K: 2.0 / 63}
	for _, typ := range quantTypes {
		q := make([]byte, typ.RowSize(int64(len(x))))
		if err := Quantize(typ, q, x, len(x)); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := Dequantize(typ, y, q); err != nil {
			t.Fatal(err)
		}
		var worst float64
		for i := range x {
			worst = max(worst, math.Abs(float64(x[i]-y[i])))
		}
		if worst > steps[typ] {
			t.Errorf("%v: max |x - dq(q(x))| = %g, more than a step (%g)", typ, worst, steps[typ])
		}
	}
}
