package hfquant

import (
	"encoding/binary"
	"fmt"
)

// awqOrder is the AutoAWQ GEMM interleave: nibble i of a word holds output column
// 8·c + awqOrder[i].
var awqOrder = [8]int{0, 2, 4, 6, 1, 3, 5, 7}

// awqReverse is the inverse of awqOrder: output 8·c + j is nibble awqReverse[j].
var awqReverse = [8]int{0, 4, 1, 5, 2, 6, 3, 7}

// putBits ORs the low b bits of v into the little-endian bit stream words at bit position pos
// (a code may straddle two words, as 3-bit codes do).
func putBits(words []uint32, pos, b int, v uint32) {
	w, off := pos>>5, pos&31
	words[w] |= v << off
	if off+b > 32 {
		words[w+1] |= v >> (32 - off)
	}
}

// getBits reads b bits at bit position pos of the little-endian bit stream words.
func getBits(words []uint32, pos, b int) uint32 {
	w, off := pos>>5, pos&31
	v := words[w] >> off
	if off+b > 32 {
		v |= words[w+1] << (32 - off)
	}
	return v & (1<<b - 1)
}

// packGPTQWeight packs codes (rows×cols, [out][in]) into the GPTQ qweight [cols·b/32][rows]:
// along the input dimension, input k of output o at bit b·k of column o's bit stream.
func packGPTQWeight(codes []uint8, rows, cols, b int) []uint32 {
	nw := cols * b / 32
	out := make([]uint32, nw*rows)
	col := make([]uint32, nw)
	for o := 0; o < rows; o++ {
		clear(col)
		for k := 0; k < cols; k++ {
			putBits(col, b*k, b, uint32(codes[o*cols+k]))
		}
		for r, v := range col {
			out[r*rows+o] = v
		}
	}
	return out
}

// unpackGPTQWeight is the inverse of packGPTQWeight.
func unpackGPTQWeight(q []uint32, rows, cols, b int) []uint8 {
	nw := cols * b / 32
	codes := make([]uint8, rows*cols)
	col := make([]uint32, nw)
	for o := 0; o < rows; o++ {
		for r := range col {
			col[r] = q[r*rows+o]
		}
		for k := 0; k < cols; k++ {
			codes[o*cols+k] = uint8(getBits(col, b*k, b))
		}
	}
	return codes
}

// packRows packs each row of vals (n×width) along the row into width·b/32 words.
func packRows(vals []uint32, n, width, b int) []uint32 {
	nw := width * b / 32
	out := make([]uint32, n*nw)
	for i := 0; i < n; i++ {
		for j := 0; j < width; j++ {
			putBits(out[i*nw:(i+1)*nw], b*j, b, vals[i*width+j])
		}
	}
	return out
}

// unpackRows is the inverse of packRows.
func unpackRows(words []uint32, n, width, b int) []uint32 {
	nw := width * b / 32
	out := make([]uint32, n*width)
	for i := 0; i < n; i++ {
		for j := 0; j < width; j++ {
			out[i*width+j] = getBits(words[i*nw:(i+1)*nw], b*j, b)
		}
	}
	return out
}

// packAWQ packs vals (n×width 4-bit values, width a multiple of 8) into n×width/8 words in
// the AWQ GEMM interleaved order.
func packAWQ(vals []uint8, n, width int) []uint32 {
	out := make([]uint32, n*width/8)
	for i := 0; i < n; i++ {
		for c := 0; c < width/8; c++ {
			var word uint32
			for nib, j := range awqOrder {
				word |= uint32(vals[i*width+8*c+j]&15) << (4 * nib)
			}
			out[i*width/8+c] = word
		}
	}
	return out
}

// unpackAWQ is the inverse of packAWQ.
func unpackAWQ(words []uint32, n, width int) []uint8 {
	out := make([]uint8, n*width)
	for i := 0; i < n; i++ {
		for o := 0; o < width; o++ {
			out[i*width+o] = uint8(words[i*width/8+o/8] >> (4 * awqReverse[o%8]) & 15)
		}
	}
	return out
}

func int32Bytes(words []uint32) []byte {
	out := make([]byte, 4*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint32(out[4*i:], w)
	}
	return out
}

func bytesInt32(raw []byte) ([]uint32, error) {
	if len(raw)%4 != 0 {
		return nil, fmt.Errorf("%w: %d bytes of int32 data", ErrFormat, len(raw))
	}
	out := make([]uint32, len(raw)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	return out, nil
}
