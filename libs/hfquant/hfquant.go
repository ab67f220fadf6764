// Package hfquant writes and reads Hugging Face checkpoint directories of GPTQ ("gptq" v1 or
// "gptq_v2") and AWQ (GEMM) quantized models, in the layouts that transformers, vLLM,
// GPTQModel/AutoGPTQ and AutoAWQ load (../shared/notes/gptq_awq.md §3), and dequantizes them
// back to float32 with the loaders' formulas (§4).
package hfquant

import (
	"errors"
	"fmt"
	"slices"

	"quantfleet.dev/libs/fault"
)

// Method is the quant_method of a checkpoint.
type Method string

// Quantization methods.
const (
	GPTQ Method = "gptq"
	AWQ  Method = "awq"
)

// GPTQ checkpoint formats (quantization_config.checkpoint_format).
const (
	// FormatGPTQ is the v1 format every GPTQ loader reads; qzeros hold zero−1.
	FormatGPTQ = "gptq"
	// FormatGPTQv2 stores zero points as they are; only recent loaders read it.
	FormatGPTQv2 = "gptq_v2"
)

// DefaultMaxShardSize is the shard size limit of transformers' save_pretrained ("5GB").
const DefaultMaxShardSize = 5_000_000_000

// Sentinel errors.
var (
	// ErrOptions reports invalid writer options.
	ErrOptions = errors.New("hfquant: invalid options")
	// ErrShape reports a quantized linear whose dimensions the format cannot hold.
	ErrShape = errors.New("hfquant: shape not representable")
	// ErrZeroPoint reports a zero point the chosen format cannot store (zero 0 in GPTQ v1,
	// which stores zero−1).
	ErrZeroPoint = errors.New("hfquant: zero point not representable")
	// ErrFormat reports a checkpoint that is not a readable GPTQ/AWQ checkpoint: the user's
	// input (a checkpoint to evaluate), so bad input.
	ErrFormat = fault.New(fault.ErrBadInput, "hfquant: unsupported checkpoint")
	// ErrClosed reports use of a closed Writer.
	ErrClosed = errors.New("hfquant: writer closed")
)

// Linear is one quantized linear layer: W[o][k] = Scales[g][o]·(QWeight[o][k] − Zeros[g][o])
// with g = GIdx[k]. It is what gptq.Result and awq.Result hold.
type Linear struct {
	// Name is the module path, e.g. "model.layers.0.self_attn.q_proj"; the tensors are
	// written as Name+".qweight" etc.
	Name       string
	Rows, Cols int // out_features, in_features
	Bits       int
	// GroupSize is the number of input columns per group, or -1 for per-channel (GPTQ).
	GroupSize int
	// QWeight holds the codes, Rows×Cols row-major.
	QWeight []uint8
	// Scales (stored as fp16) and Zeros: groups×Rows row-major.
	Scales []float32
	Zeros  []uint8
	// GIdx is the group of each input column (GPTQ). Nil means k/GroupSize.
	GIdx []int32
	// Bias is nil or Rows values (stored as fp16, as the quantized modules hold them).
	Bias []float32
}

func (l *Linear) groups() int {
	if l.GroupSize == -1 {
		return 1
	}
	return (l.Cols + l.GroupSize - 1) / l.GroupSize
}

func (l *Linear) groupOf(k int) int {
	if l.GIdx != nil {
		return int(l.GIdx[k])
	}
	if l.GroupSize == -1 {
		return 0
	}
	return k / l.GroupSize
}

// check validates the linear's own consistency.
func (l *Linear) check() error {
	switch {
	case l.Name == "":
		return fmt.Errorf("%w: linear without a name", ErrShape)
	case l.Rows <= 0 || l.Cols <= 0:
		return fmt.Errorf("%w: %s is %d×%d", ErrShape, l.Name, l.Rows, l.Cols)
	case l.GroupSize == 0 || l.GroupSize < -1:
		return fmt.Errorf("%w: %s has group size %d", ErrShape, l.Name, l.GroupSize)
	}
	g := l.groups()
	if len(l.QWeight) != l.Rows*l.Cols || len(l.Scales) != g*l.Rows || len(l.Zeros) != g*l.Rows ||
		(l.GIdx != nil && len(l.GIdx) != l.Cols) || (l.Bias != nil && len(l.Bias) != l.Rows) {
		return fmt.Errorf("%w: %s (%d×%d, %d groups) has %d codes, %d scales, %d zeros, %d g_idx, %d biases",
			ErrShape, l.Name, l.Rows, l.Cols, g, len(l.QWeight), len(l.Scales), len(l.Zeros), len(l.GIdx), len(l.Bias))
	}
	maxq := uint8(1<<l.Bits - 1)
	if slices.Max(l.QWeight) > maxq || slices.Max(l.Zeros) > maxq {
		return fmt.Errorf("%w: %s has codes or zero points above %d", ErrShape, l.Name, maxq)
	}
	for k, gi := range l.GIdx {
		if gi < 0 || int(gi) >= g {
			return fmt.Errorf("%w: %s g_idx[%d] = %d of %d groups", ErrShape, l.Name, k, gi, g)
		}
	}
	return nil
}

// Dequantize returns the weight Rows×Cols as scale·(q − z) (what the loaders reconstruct
// when the scales are the stored half-precision values, as Checkpoint.Linear returns them).
func (l *Linear) Dequantize() []float32 {
	out := make([]float32, l.Rows*l.Cols)
	for o := 0; o < l.Rows; o++ {
		for k := 0; k < l.Cols; k++ {
			g := l.groupOf(k)*l.Rows + o
			out[o*l.Cols+k] = l.Scales[g] * (float32(l.QWeight[o*l.Cols+k]) - float32(l.Zeros[g]))
		}
	}
	return out
}
