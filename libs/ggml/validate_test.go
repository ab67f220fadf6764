package ggml

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func TestValidateRowData(t *testing.T) {
	f32 := func(v ...float32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	}
	u16 := func(v ...uint16) []byte {
		b := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], x)
		}
		return b
	}
	// blocks returns n zero blocks of t with the fp16 at byte off of block bad set to h.
	blocks := func(t Type, n, bad, off int, h uint16) []byte {
		b := make([]byte, n*t.TypeSize())
		binary.LittleEndian.PutUint16(b[bad*t.TypeSize()+off:], h)
		return b
	}
	inf, nan := float32(math.Inf(-1)), float32(math.NaN())
	for _, c := range []struct {
		name  string
		typ   Type
		data  []byte
		want  error
		block int
		field string
		value string
	}{
		{"f32 ok", F32, f32(1, -2, 3e38, 1e-45), nil, 0, "", ""},
		{"f32 inf", F32, f32(1, 2, inf), ErrInvalidData, 2, "value", "Inf"},
		{"f32 nan", F32, f32(nan, 2), ErrInvalidData, 0, "value", "NaN"},
		{"f32 inf odd index", F32, f32(1, 2, 3, inf, 5), ErrInvalidData, 3, "value", "Inf"},
		{"f32 nan in tail", F32, f32(1, 2, 3, 4, nan), ErrInvalidData, 4, "value", "NaN"},
		{"f32 first of two", F32, f32(0, 1, nan, inf, 2, 3), ErrInvalidData, 2, "value", "NaN"},
		{"f32 partial", F32, make([]byte, 6), ErrShape, 0, "", ""},
		{"f16 ok", F16, u16(0x7bff, 0xfbff, 0x0001), nil, 0, "", ""},
		{"f16 inf", F16, u16(0x3c00, 0xfc00), ErrInvalidData, 1, "value", "Inf"},
		{"f16 nan", F16, u16(0x3c00, 0x3c00, 0x7e00), ErrInvalidData, 2, "value", "NaN"},
		{"bf16 ok", BF16, u16(0x7f7f, 0x0001), nil, 0, "", ""},
		{"bf16 nan", BF16, u16(0x3f80, 0xffc1), ErrInvalidData, 1, "value", "NaN"},
		{"bf16 inf", BF16, u16(0x7f80), ErrInvalidData, 0, "value", "Inf"},
		{"q4_0 ok", Q4_0, blocks(Q4_0, 3, 1, 0, 0x7bff), nil, 0, "", ""},
		{"q4_0 d inf", Q4_0, blocks(Q4_0, 3, 2, 0, 0x7c00), ErrInvalidData, 2, "d", "Inf"},
		{"q4_1 m nan", Q4_1, blocks(Q4_1, 3, 1, 2, 0x7e00), ErrInvalidData, 1, "m", "NaN"},
		{"q5_1 m inf", Q5_1, blocks(Q5_1, 2, 1, 2, 0xfc00), ErrInvalidData, 1, "m", "Inf"},
		{"q8_0 d nan", Q8_0, blocks(Q8_0, 4, 3, 0, 0x7c01), ErrInvalidData, 3, "d", "NaN"},
		{"q2_K dmin nan", Q2_K, blocks(Q2_K, 2, 1, 82, 0x7e00), ErrInvalidData, 1, "dmin", "NaN"},
		{"q2_K quants ignored", Q2_K, blocks(Q2_K, 2, 1, 20, 0x7c00), nil, 0, "", ""},
		{"q3_K d inf", Q3_K, blocks(Q3_K, 2, 0, 108, 0x7c00), ErrInvalidData, 0, "d", "Inf"},
		{"q4_K dmin inf", Q4_K, blocks(Q4_K, 5, 4, 2, 0x7c00), ErrInvalidData, 4, "dmin", "Inf"},
		{"q5_K d nan", Q5_K, blocks(Q5_K, 2, 1, 0, 0xfe00), ErrInvalidData, 1, "d", "NaN"},
		{"q6_K d inf", Q6_K, blocks(Q6_K, 2, 1, 208, 0x7c00), ErrInvalidData, 1, "d", "Inf"},
		{"q6_K partial", Q6_K, make([]byte, 209), ErrShape, 0, "", ""},
		{"q8_K d nan", Q8_K, append(f32(nan), make([]byte, 288)...), ErrInvalidData, 0, "d", "NaN"},
		{"i32 anything", I32, f32(nan), nil, 0, "", ""},
		{"q8_1 unsupported", Q8_1, make([]byte, 36), ErrUnsupportedType, 0, "", ""},
		{"unknown type", Type(77), make([]byte, 4), ErrUnsupportedType, 0, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := ValidateRowData(c.typ, c.data)
			if (c.want == nil) != (err == nil) || !errors.Is(err, c.want) {
				t.Fatalf("ValidateRowData = %v, want %v", err, c.want)
			}
			if c.want != ErrInvalidData {
				return
			}
			var de *DataError
			if !errors.As(err, &de) {
				t.Fatalf("%v is not a *DataError", err)
			}
			if de.Type != c.typ || de.Block != c.block || de.Field != c.field || de.Value != c.value {
				t.Errorf("got %+v, want block %d %s %s", *de, c.block, c.field, c.value)
			}
		})
	}
}

// Quantizer output for ordinary inputs is valid; legacy blocks whose scale overflows fp16 are not
// (k-quants may degrade such blocks to zeros instead, as the reference does).
func TestValidateQuantizerOutput(t *testing.T) {
	for _, f := range goldenFamilies() {
		for _, typ := range quantTypes {
			q := make([]byte, typ.RowSize(int64(len(f.x))))
			if err := Quantize(typ, q, f.x, QK_K); err != nil {
				t.Fatal(err)
			}
			err := ValidateRowData(typ, q)
			switch f.name {
			case "huge", "extreme":
				if err == nil && typ.BlockSize() == 32 {
					t.Errorf("%s/%v: fp16 scales overflow but validation passed", f.name, typ)
				}
			default:
				if err != nil {
					t.Errorf("%s/%v: %v", f.name, typ, err)
				}
			}
		}
	}
}
