//go:build !purego

package ggml

// SSE2 versions of the legacy block quantizers (legacy_amd64.s). A kernel stops at the first
// block it leaves to the scalar code (NaN or Inf inputs); the fp16 fields are written here.

//go:noescape
func q4_0Blocks(dst *byte, src *float32, nb int, d *float32) int

//go:noescape
func q5_0Blocks(dst *byte, src *float32, nb int, d *float32) int

//go:noescape
func q8_0Blocks(dst *byte, src *float32, nb int, d *float32) int

//go:noescape
func q4_1Blocks(dst *byte, src *float32, nb int, d, m *float32) int

//go:noescape
func q5_1Blocks(dst *byte, src *float32, nb int, d, m *float32) int

// legacyBatch is the number of blocks per kernel call: enough to amortise the call, small
// enough for the scale buffers to live on the stack.
const legacyBatch = 128

// quantizeLegacy drives the kernel for t over src in batches and writes the fp16 fields.
func quantizeLegacy(t Type, dst []byte, src []float32) {
	var d, m [legacyBatch]float32
	ts := t.TypeSize()
	for len(src) >= qk && len(dst) >= ts {
		nb := min(len(src)/qk, len(dst)/ts, legacyBatch)
		var n int
		switch t {
		case Q4_0:
			n = q4_0Blocks(&dst[0], &src[0], nb, &d[0])
		case Q5_0:
			n = q5_0Blocks(&dst[0], &src[0], nb, &d[0])
		case Q8_0:
			n = q8_0Blocks(&dst[0], &src[0], nb, &d[0])
		case Q4_1:
			n = q4_1Blocks(&dst[0], &src[0], nb, &d[0], &m[0])
		case Q5_1:
			n = q5_1Blocks(&dst[0], &src[0], nb, &d[0], &m[0])
		}
		for b := range d[:n] {
			le16(dst[ts*b:], FP32ToFP16(d[b]))
		}
		if t == Q4_1 || t == Q5_1 {
			for b := range m[:n] {
				le16(dst[ts*b+2:], FP32ToFP16(m[b]))
			}
		}
		if n < nb { // a block with NaN or Inf: the scalar code knows what C does with it
			bd, bs := dst[ts*n:ts*n+ts], src[qk*n:qk*n+qk]
			switch t {
			case Q4_0:
				quantizeQ4_0Go(bd, bs)
			case Q5_0:
				quantizeQ5_0Go(bd, bs)
			case Q8_0:
				quantizeQ8_0Go(bd, bs)
			case Q4_1:
				quantizeQ4_1Go(bd, bs)
			case Q5_1:
				quantizeQ5_1Go(bd, bs)
			}
			n++
		}
		src, dst = src[qk*n:], dst[ts*n:]
	}
}

func quantizeQ4_0(dst []byte, src []float32) { quantizeLegacy(Q4_0, dst, src) }
func quantizeQ4_1(dst []byte, src []float32) { quantizeLegacy(Q4_1, dst, src) }
func quantizeQ5_0(dst []byte, src []float32) { quantizeLegacy(Q5_0, dst, src) }
func quantizeQ5_1(dst []byte, src []float32) { quantizeLegacy(Q5_1, dst, src) }
func quantizeQ8_0(dst []byte, src []float32) { quantizeLegacy(Q8_0, dst, src) }
