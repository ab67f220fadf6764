package ggufmeta

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// TensorShape is one tensor as written to the GGUF file: its GGUF name (after renaming) and its
// shape in PyTorch/NumPy order, outermost dimension first (the order safetensors uses).
type TensorShape struct {
	Name  string
	Shape []int64
}

// CountParams is GGUFWriter.get_total_parameter_count over the tensors written to the GGUF:
// every tensor counts (1-D norms included). Tensors whose name contains "_exps." and that have
// at least 3 dimensions are experts: expert counts one expert's share of each, and expertCount
// is the mean number of experts over those tensors. For LoRA adapters (".lora_a"/".lora_b"
// pairs) total is negated to mark it as approximate; when a pair cannot be matched all four
// results are 0.
func CountParams(tensors []TensorShape) (total, shared, expert, expertCount int64) {
	var expertSum, expertTensors int64
	var lastLoraA *TensorShape
	for i := range tensors {
		t := &tensors[i]
		shape := t.Shape
		switch {
		case strings.HasSuffix(t.Name, ".lora_a"):
			lastLoraA = t
			continue
		case strings.HasSuffix(t.Name, ".lora_b"):
			if lastLoraA == nil || lastLoraA.Name != t.Name[:len(t.Name)-1]+"a" || len(shape) == 0 || len(lastLoraA.Shape) == 0 {
				return 0, 0, 0, 0 // the pair can't be found trivially
			}
			shape = append(append([]int64{}, shape[:len(shape)-1]...), lastLoraA.Shape[len(lastLoraA.Shape)-1])
		}
		size := int64(1)
		for _, d := range shape {
			size *= d
		}
		if strings.Contains(t.Name, "_exps.") && len(shape) >= 3 {
			n := shape[len(shape)-3]
			if strings.Contains(t.Name, ".bias") {
				n = shape[len(shape)-2]
			}
			if n != 0 {
				expert += size / n
			}
			expertSum += n
			expertTensors++
		} else {
			shared += size
		}
		total += size
	}
	if expertTensors > 0 {
		expertCount = expertSum / expertTensors
	}
	if lastLoraA != nil {
		total = -total
	}
	return total, shared, expert, expertCount
}

// SizeLabel is gguf.size_label: the rounded parameter count such as "27M", "8.0B" or, for
// mixtures of experts, "8x7.2B" (expert count times shared plus one expert's parameters).
func SizeLabel(total, shared, expert, expertCount int64) string {
	if expertCount > 0 {
		return fmt.Sprintf("%dx%s", expertCount, roundedNotation(abs64(shared)+abs64(expert), 2))
	}
	return roundedNotation(abs64(total), 2)
}

func abs64(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// roundedNotation is gguf.utility.model_weight_count_rounded_notation: at least minDigits
// significant digits before the point are kept, the rest go after it.
func roundedNotation(n int64, minDigits int) string {
	f := float64(n)
	var scaled float64
	var suffix string
	switch {
	case f > 1e12:
		scaled, suffix = f*1e-12, "T"
	case f > 1e9:
		scaled, suffix = f*1e-9, "B"
	case f > 1e6:
		scaled, suffix = f*1e-6, "M"
	default:
		scaled, suffix = f*1e-3, "K"
	}
	// len(str(round(scaled)).lstrip('0')); Python's round() rounds half to even.
	intDigits := len(strings.TrimLeft(strconv.FormatFloat(math.RoundToEven(scaled), 'f', 0, 64), "0"))
	fix := max(minDigits-intDigits, 0)
	return strconv.FormatFloat(scaled, 'f', fix, 64) + suffix
}
