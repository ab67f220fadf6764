package ggml

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DataError reports a NaN or Inf found by ValidateRowData. It matches ErrInvalidData.
type DataError struct {
	Type  Type
	Block int    // block index (element index for F32/F16/BF16/F64)
	Field string // "value", "d", "m", "dmin"
	Value string // "NaN" or "Inf"
}

func (e *DataError) Error() string {
	return fmt.Sprintf("ggml: %v data: %s %s at block %d", e.Type, e.Value, e.Field, e.Block)
}

func (e *DataError) Unwrap() error { return ErrInvalidData }

// fp16Fields lists the byte offsets of the fp16 scale fields ggml_validate_row_data checks per block.
var fp16Fields = map[Type][]struct {
	off  int
	name string
}{
	Q4_0: {{0, "d"}},
	Q4_1: {{0, "d"}, {2, "m"}},
	Q5_0: {{0, "d"}},
	Q5_1: {{0, "d"}, {2, "m"}},
	Q8_0: {{0, "d"}},
	Q2_K: {{80, "d"}, {82, "dmin"}},
	Q3_K: {{108, "d"}},
	Q4_K: {{0, "d"}, {2, "dmin"}},
	Q5_K: {{0, "d"}, {2, "dmin"}},
	Q6_K: {{208, "d"}},
}

// ValidateRowData checks data of type t like ggml_validate_row_data (which llama-quantize runs on
// every quantized chunk): float types must hold no NaN or Inf, and the fp16 scales (d, m, dmin)
// of quantized blocks must be finite. It returns a *DataError for the first offender, or an
// ErrShape / ErrUnsupportedType error.
func ValidateRowData(t Type, data []byte) error {
	if !t.Known() || t == Q8_1 {
		return fmt.Errorf("%w: cannot validate %v", ErrUnsupportedType, t)
	}
	ts := t.TypeSize()
	if len(data)%ts != 0 {
		return fmt.Errorf("%w: %d bytes are not whole %v blocks of %d bytes", ErrShape, len(data), t, ts)
	}
	nb := len(data) / ts
	bad := func(i int, field string, nan bool) error {
		v := "Inf"
		if nan {
			v = "NaN"
		}
		return &DataError{Type: t, Block: i, Field: field, Value: v}
	}
	switch t {
	case F32:
		// Two values per 8-byte word: e has a zero half exactly where a value's exponent is all
		// ones (NaN or Inf); the word is then looked at value by value.
		const exps = 0x7f8000007f800000
		i := 0
		for ; i+2 <= nb; i += 2 {
			e := binary.LittleEndian.Uint64(data[4*i:])&exps ^ exps
			if (e-0x0000000100000001)&^e&0x8000000080000000 != 0 {
				break
			}
		}
		for ; i < nb; i++ {
			if b := binary.LittleEndian.Uint32(data[4*i:]); b&0x7f800000 == 0x7f800000 {
				return bad(i, "value", b&0x007fffff != 0)
			}
		}
	case F64:
		for i := range nb {
			if f := math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])); math.IsNaN(f) || math.IsInf(f, 0) {
				return bad(i, "value", math.IsNaN(f))
			}
		}
	case F16:
		for i := range nb {
			if h := binary.LittleEndian.Uint16(data[2*i:]); h&0x7c00 == 0x7c00 {
				return bad(i, "value", h&0x03ff != 0)
			}
		}
	case BF16:
		for i := range nb {
			if h := binary.LittleEndian.Uint16(data[2*i:]); h&0x7f80 == 0x7f80 {
				return bad(i, "value", h&0x007f != 0)
			}
		}
	case Q8_K:
		for i := range nb {
			if b := binary.LittleEndian.Uint32(data[i*ts:]); b&0x7f800000 == 0x7f800000 {
				return bad(i, "d", b&0x007fffff != 0)
			}
		}
	default:
		fields := fp16Fields[t]
		for i := range nb {
			blk := data[i*ts:]
			for _, f := range fields {
				if h := binary.LittleEndian.Uint16(blk[f.off:]); h&0x7c00 == 0x7c00 {
					return bad(i, f.name, h&0x03ff != 0)
				}
			}
		}
	}
	return nil
}
