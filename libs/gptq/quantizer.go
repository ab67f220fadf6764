package gptq

import "math"

// grid is the quantization grid of one group of columns: a scale and a zero point per output
// row. Its arithmetic follows the reference quantizer (IST-DASLab quant.py) operation by
// operation in float32, so that ties round as they do there.
type grid struct {
	scale []float32
	zero  []float32
}

// quantizer holds the settings shared by every grid of one weight.
type quantizer struct {
	maxq    float32 // 2^bits − 1
	sym     bool
	v1Zeros bool
}

// roundEven rounds a float32 to the nearest integer, ties to even, as torch.round does.
func roundEven(x float32) float32 { return float32(math.RoundToEven(float64(x))) }

// findParams computes the grid of columns [c0, c1) of the row-major rows×cols matrix w.
// The range of each row is forced to include 0; in symmetric mode it is made symmetric when
// the row has a negative value (an all-positive row keeps xmin = 0, a quirk of the reference).
func (q quantizer) findParams(w []float32, rows, cols, c0, c1 int, g grid) {
	for r := 0; r < rows; r++ {
		row := w[r*cols+c0 : r*cols+c1]
		var xmin, xmax float32
		for _, v := range row {
			xmin = min(xmin, v)
			xmax = max(xmax, v)
		}
		g.scale[r], g.zero[r] = q.params(xmin, xmax)
	}
}

// params returns the scale and zero point for a row whose range, including 0, is
// [xmin, xmax].
func (q quantizer) params(xmin, xmax float32) (scale, zero float32) {
	if q.sym {
		xmax = max(abs32(xmin), xmax)
		if xmin < 0 {
			xmin = -xmax
		}
	}
	if xmin == 0 && xmax == 0 {
		xmin, xmax = -1, 1
	}
	// A true division, as the reference's (xmax − xmin) / maxq with maxq a 0-dim tensor on
	// the same device. (Dividing by a Python number instead makes CUDA PyTorch multiply by
	// its float32 reciprocal, which differs in the last bit for about half of the rows.)
	scale = (xmax - xmin) / q.maxq
	if q.sym {
		return scale, (q.maxq + 1) / 2
	}
	zero = roundEven(-xmin / scale)
	if zero == 0 && q.v1Zeros {
		// The GPTQ v1 format stores zero−1 and cannot hold 0. Keep zero 1 and widen the
		// step so that the grid still reaches xmax: the grid then spans [−scale, xmax],
		// which covers xmin because −xmin < scale/2 whenever the zero rounds to 0.
		scale = xmax / (q.maxq - 1)
		zero = 1
	}
	return scale, zero
}

// code returns the integer code of x on the grid (scale, zero).
func (q quantizer) code(x, scale, zero float32) float32 {
	c := roundEven(x/scale) + zero
	return min(max(c, 0), q.maxq)
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }
