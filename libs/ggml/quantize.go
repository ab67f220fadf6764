package ggml

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// Sentinel errors for callers to branch on (errors.Is).
var (
	// ErrUnsupportedType: the type has no quantizer/dequantizer here.
	ErrUnsupportedType = errors.New("ggml: unsupported type")
	// ErrShape: a length is not a multiple of the block or row size, or dst has the wrong size.
	ErrShape = errors.New("ggml: bad shape")
	// ErrInvalidData: the data holds NaN or Inf values (see ValidateRowData).
	ErrInvalidData = errors.New("ggml: invalid data")
)

type blockFuncs struct {
	quantize   func(dst []byte, src []float32)
	dequantize func(dst []float32, src []byte)
}

var codecs = map[Type]blockFuncs{
	F32:  {quantizeF32, dequantizeF32},
	F16:  {quantizeF16, dequantizeF16},
	BF16: {quantizeBF16, dequantizeBF16},
	Q4_0: {quantizeQ4_0, dequantizeQ4_0},
	Q4_1: {quantizeQ4_1, dequantizeQ4_1},
	Q5_0: {quantizeQ5_0, dequantizeQ5_0},
	Q5_1: {quantizeQ5_1, dequantizeQ5_1},
	Q8_0: {quantizeQ8_0, dequantizeQ8_0},
	Q2_K: {quantizeQ2K, dequantizeQ2K},
	Q3_K: {quantizeQ3K, dequantizeQ3K},
	Q4_K: {quantizeQ4K, dequantizeQ4K},
	Q5_K: {quantizeQ5K, dequantizeQ5K},
	Q6_K: {quantizeQ6K, dequantizeQ6K},
}

// CanQuantize reports whether Quantize and Dequantize support t.
func (t Type) CanQuantize() bool { _, ok := codecs[t]; return ok }

// Quantize converts whole rows of float32 values in src (nPerRow elements per row) to type t,
// bit-identical to llama.cpp's ggml_quantize_chunk without an importance matrix. dst must be
// exactly t.RowSize(len(src)) bytes. The work is spread over GOMAXPROCS goroutines; every
// block depends only on its own inputs, so the result does not depend on the split.
func Quantize(t Type, dst []byte, src []float32, nPerRow int) error {
	c, err := checkQuantize(t, dst, src, nPerRow)
	if err != nil {
		return err
	}
	bs, ts := t.BlockSize(), t.TypeSize()
	parallelBlocks(len(src)/bs, grainBlocks(t), func(b0, b1 int) {
		c.quantize(dst[b0*ts:b1*ts], src[b0*bs:b1*bs])
	})
	return nil
}

// QuantizeBlocks is Quantize on the calling goroutine, without a row structure: src must hold
// whole blocks of t. It is meant for callers that schedule the work themselves.
func QuantizeBlocks(t Type, dst []byte, src []float32) error {
	c, err := checkQuantize(t, dst, src, t.BlockSize())
	if err != nil {
		return err
	}
	c.quantize(dst, src)
	return nil
}

func checkQuantize(t Type, dst []byte, src []float32, nPerRow int) (blockFuncs, error) {
	c, ok := codecs[t]
	if !ok {
		return c, fmt.Errorf("%w: cannot quantize to %v", ErrUnsupportedType, t)
	}
	bs := t.BlockSize()
	switch {
	case nPerRow <= 0 || nPerRow%bs != 0:
		return c, fmt.Errorf("%w: %v needs rows of a multiple of %d elements, got %d", ErrShape, t, bs, nPerRow)
	case len(src)%nPerRow != 0:
		return c, fmt.Errorf("%w: %d input elements are not whole rows of %d", ErrShape, len(src), nPerRow)
	case int64(len(dst)) != t.RowSize(int64(len(src))):
		return c, fmt.Errorf("%w: %v output for %d elements is %d bytes, dst has %d", ErrShape, t, len(src), t.RowSize(int64(len(src))), len(dst))
	}
	return c, nil
}

// Dequantize converts data of type t in src to float32 values in dst, as ggml's to_float
// (dequantize_row_*). src must hold whole blocks and dst must have room for exactly their elements.
func Dequantize(t Type, dst []float32, src []byte) error {
	c, ok := codecs[t]
	if !ok {
		return fmt.Errorf("%w: cannot dequantize %v", ErrUnsupportedType, t)
	}
	bs, ts := t.BlockSize(), t.TypeSize()
	if len(src)%ts != 0 {
		return fmt.Errorf("%w: %d bytes are not whole %v blocks of %d bytes", ErrShape, len(src), t, ts)
	}
	if n := len(src) / ts * bs; len(dst) != n {
		return fmt.Errorf("%w: %d bytes of %v hold %d elements, dst has %d", ErrShape, len(src), t, n, len(dst))
	}
	parallelBlocks(len(src)/ts, 4*grainBlocks(t), func(b0, b1 int) {
		c.dequantize(dst[b0*bs:b1*bs], src[b0*ts:b1*ts])
	})
	return nil
}

// grainBlocks is the number of blocks one goroutine takes at a time: about 64K elements for the
// fast types and 16K for the slow k-quants (a few milliseconds of work either way).
func grainBlocks(t Type) int {
	n := 1 << 16
	if t.BlockSize() == QK_K {
		n = 1 << 14
	}
	return n / t.BlockSize()
}

// parallelBlocks runs fn over [0, n) in chunks of grain blocks on up to GOMAXPROCS goroutines.
func parallelBlocks(n, grain int, fn func(b0, b1 int)) {
	chunks := (n + grain - 1) / grain
	workers := min(runtime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				c := int(next.Add(1) - 1)
				if c >= chunks {
					return
				}
				fn(c*grain, min(n, (c+1)*grain))
			}
		})
	}
	wg.Wait()
}

func quantizeF32(dst []byte, src []float32) {
	dst = dst[:4*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func dequantizeF32(dst []float32, src []byte) {
	dst = dst[:len(src)/4]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func quantizeF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	i := 0
	for ; i+4 <= len(src); i += 4 { // four values per 8-byte store
		s := (*[4]float32)(src[i:])
		binary.LittleEndian.PutUint64(dst[2*i:], uint64(FP32ToFP16(s[0]))|uint64(FP32ToFP16(s[1]))<<16|
			uint64(FP32ToFP16(s[2]))<<32|uint64(FP32ToFP16(s[3]))<<48)
	}
	for ; i < len(src); i++ {
		binary.LittleEndian.PutUint16(dst[2*i:], FP32ToFP16(src[i]))
	}
}

func dequantizeF16(dst []float32, src []byte) {
	dst = dst[:len(src)/2]
	i := 0
	for ; i+4 <= len(dst); i += 4 { // four values per 8-byte load
		v := binary.LittleEndian.Uint64(src[2*i:])
		d := (*[4]float32)(dst[i:])
		d[0] = fp16Table[uint16(v)]
		d[1] = fp16Table[uint16(v>>16)]
		d[2] = fp16Table[uint16(v>>32)]
		d[3] = fp16Table[uint16(v>>48)]
	}
	for ; i < len(dst); i++ {
		dst[i] = fp16Table[binary.LittleEndian.Uint16(src[2*i:])]
	}
}

func quantizeBF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	i := 0
	for ; i+4 <= len(src); i += 4 { // four values per 8-byte store
		s := (*[4]float32)(src[i:])
		binary.LittleEndian.PutUint64(dst[2*i:], uint64(FP32ToBF16(s[0]))|uint64(FP32ToBF16(s[1]))<<16|
			uint64(FP32ToBF16(s[2]))<<32|uint64(FP32ToBF16(s[3]))<<48)
	}
	for ; i < len(src); i++ {
		binary.LittleEndian.PutUint16(dst[2*i:], FP32ToBF16(src[i]))
	}
}

func dequantizeBF16(dst []float32, src []byte) {
	dst = dst[:len(src)/2]
	i := 0
	for ; i+4 <= len(dst); i += 4 { // four values per 8-byte load
		v := binary.LittleEndian.Uint64(src[2*i:])
		d := (*[4]float32)(dst[i:])
		d[0] = math.Float32frombits(uint32(v) << 16)
		d[1] = math.Float32frombits(uint32(v>>16) << 16)
		d[2] = math.Float32frombits(uint32(v>>32) << 16)
		d[3] = math.Float32frombits(uint32(v>>48) << 16)
	}
	for ; i < len(dst); i++ {
		dst[i] = BF16ToFP32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}
