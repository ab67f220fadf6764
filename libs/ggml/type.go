// Package ggml implements ggml's tensor element types: their block layouts, and quantization and
// dequantization that are bit-identical to llama.cpp's reference C code (ggml-quants.c).
package ggml

import (
	"fmt"
	"strings"
)

// Type is a ggml tensor type id, as stored in GGUF tensor infos.
type Type uint32

// Type ids from ggml.h.
const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q4_1 Type = 3
	Q5_0 Type = 6
	Q5_1 Type = 7
	Q8_0 Type = 8
	Q8_1 Type = 9
	Q2_K Type = 10
	Q3_K Type = 11
	Q4_K Type = 12
	Q5_K Type = 13
	Q6_K Type = 14
	Q8_K Type = 15
	I8   Type = 24
	I16  Type = 25
	I32  Type = 26
	I64  Type = 27
	F64  Type = 28
	BF16 Type = 30
)

// QK_K is the number of elements in a k-quant super-block.
const QK_K = 256

type traits struct {
	name      string
	blockSize int // elements per block
	typeSize  int // bytes per block
	quantized bool
}

var typeTraits = map[Type]traits{
	F32:  {"F32", 1, 4, false},
	F16:  {"F16", 1, 2, false},
	Q4_0: {"Q4_0", 32, 18, true},
	Q4_1: {"Q4_1", 32, 20, true},
	Q5_0: {"Q5_0", 32, 22, true},
	Q5_1: {"Q5_1", 32, 24, true},
	Q8_0: {"Q8_0", 32, 34, true},
	Q8_1: {"Q8_1", 32, 36, true},
	Q2_K: {"Q2_K", QK_K, 84, true},
	Q3_K: {"Q3_K", QK_K, 110, true},
	Q4_K: {"Q4_K", QK_K, 144, true},
	Q5_K: {"Q5_K", QK_K, 176, true},
	Q6_K: {"Q6_K", QK_K, 210, true},
	Q8_K: {"Q8_K", QK_K, 292, true},
	I8:   {"I8", 1, 1, false},
	I16:  {"I16", 1, 2, false},
	I32:  {"I32", 1, 4, false},
	I64:  {"I64", 1, 8, false},
	F64:  {"F64", 1, 8, false},
	BF16: {"BF16", 1, 2, false},
}

// Known reports whether t is a type this package knows the layout of.
func (t Type) Known() bool { _, ok := typeTraits[t]; return ok }

// String returns the type's name as gguf tools print it ("Q4_K", "BF16").
func (t Type) String() string {
	if tr, ok := typeTraits[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("Type(%d)", uint32(t))
}

// BlockSize is the number of elements one block holds (1 for plain float types).
func (t Type) BlockSize() int { return typeTraits[t].blockSize }

// TypeSize is the number of bytes one block takes.
func (t Type) TypeSize() int { return typeTraits[t].typeSize }

// IsQuantized reports whether t is a block-quantized type.
func (t Type) IsQuantized() bool { return typeTraits[t].quantized }

// RowSize is the byte size of n elements of type t; n must be a multiple of the block size.
func (t Type) RowSize(n int64) int64 {
	tr := typeTraits[t]
	if tr.blockSize == 0 {
		return 0
	}
	return n / int64(tr.blockSize) * int64(tr.typeSize)
}

// ParseType returns the type with the given name, case-insensitively ("q4_k", "BF16").
func ParseType(name string) (Type, error) {
	for t, tr := range typeTraits {
		if strings.EqualFold(tr.name, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("ggml: unknown tensor type %q", name)
}
