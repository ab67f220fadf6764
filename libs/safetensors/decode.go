package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/x448/float16"
)

// f16Table maps every IEEE half bit pattern to its float32 value (256 KiB, built once).
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = float16.Frombits(uint16(i)).Float32()
	}
	return &t
})

// DecodeFloat32 converts little-endian raw data of dtype dt into dst, exactly: BF16 and F16
// are widened without rounding, F32 is copied. len(dst) must equal the element count of raw.
func DecodeFloat32(dt DType, raw []byte, dst []float32) error {
	if !dt.IsFloat() {
		return fmt.Errorf("%w: cannot convert %s to float32", ErrUnsupportedDType, dt)
	}
	es := int(dt.Size())
	if len(raw) != len(dst)*es {
		return fmt.Errorf("safetensors: decoding %s: %d bytes for %d elements", dt, len(raw), len(dst))
	}
	switch dt {
	case BF16:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		}
	case F16:
		t := f16Table()
		for i := range dst {
			dst[i] = t[binary.LittleEndian.Uint16(raw[2*i:])]
		}
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
	return nil
}
