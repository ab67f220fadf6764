package convert

import (
	"fmt"
	"quantfleet.dev/libs/fault"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"quantfleet.dev/libs/ggml"
)

// Level is a GGUF quantization level (llama-quantize's ftype).
type Level struct {
	Name     string    // "Q4_K_M"
	FileType uint32    // general.file_type (enum llama_ftype)
	Default  ggml.Type // the type most tensors get
}

// Levels lists the GGUF levels quantfleet writes, in the seed's order, then the float outputs.
var Levels = []Level{
	{"Q2_K", 10, ggml.Q2_K},
	{"Q3_K_S", 11, ggml.Q3_K},
	{"Q3_K_M", 12, ggml.Q3_K},
	{"Q3_K_L", 13, ggml.Q3_K},
	{"Q4_0", 2, ggml.Q4_0},
	{"Q4_1", 3, ggml.Q4_1},
	{"Q4_K_S", 14, ggml.Q4_K},
	{"Q4_K_M", 15, ggml.Q4_K},
	{"Q5_0", 8, ggml.Q5_0},
	{"Q5_1", 9, ggml.Q5_1},
	{"Q5_K_S", 16, ggml.Q5_K},
	{"Q5_K_M", 17, ggml.Q5_K},
	{"Q6_K", 18, ggml.Q6_K},
	{"Q8_0", 7, ggml.Q8_0},
	{"F16", 1, ggml.F16},
	{"BF16", 32, ggml.BF16},
	{"F32", 0, ggml.F32},
}

// ErrUnknownLevel reports a level name that GGUF output does not have.
var ErrUnknownLevel = fault.New(fault.ErrBadInput, "unknown GGUF level")

// LookupLevel finds a level by name, case-insensitively.
func LookupLevel(name string) (Level, error) {
	for _, l := range Levels {
		if strings.EqualFold(l.Name, name) {
			return l, nil
		}
	}
	names := make([]string, len(Levels))
	for i, l := range Levels {
		names[i] = l.Name
	}
	return Level{}, fmt.Errorf("%w %q (valid: %s)", ErrUnknownLevel, name, strings.Join(names, ", "))
}

type category int

const (
	catOther category = iota
	catOutput
	catTokenEmbd
	catAttnQKV
	catAttnKVB
	catAttnV
	catAttnK
	catAttnQ
	catAttnOutput
	catFFNUp
	catFFNGate
	catFFNDown
)

// tensorCategory mirrors tensor_get_category of llama-quant.cpp (first match wins).
func tensorCategory(name string) category {
	switch {
	case name == "output.weight":
		return catOutput
	case name == "token_embd.weight" || name == "per_layer_token_embd.weight":
		return catTokenEmbd
	case strings.Contains(name, "attn_qkv.weight"):
		return catAttnQKV
	case strings.Contains(name, "attn_kv_b.weight"):
		return catAttnKVB
	case strings.Contains(name, "attn_v.weight"):
		return catAttnV
	case strings.Contains(name, "attn_k.weight"):
		return catAttnK
	case strings.Contains(name, "attn_q.weight"):
		return catAttnQ
	case strings.Contains(name, "attn_output.weight"):
		return catAttnOutput
	case strings.Contains(name, "ffn_up"):
		return catFFNUp
	case strings.Contains(name, "ffn_gate"):
		return catFFNGate
	case strings.Contains(name, "ffn_down"):
		return catFFNDown
	}
	return catOther
}

func (c category) attnVLike() bool { return c == catAttnV || c == catAttnQKV || c == catAttnKVB }

// allowsQuantization mirrors tensor_allows_quantization for the tensors our architectures have.
func allowsQuantization(name string, nDims int) bool {
	if nDims < 2 || !strings.HasSuffix(name, "weight") || strings.Contains(name, "_norm.weight") {
		return false
	}
	for _, s := range []string{"ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
		"per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
		"indexer.q_proj.weight", "attn_rel_b.weight", ".position_embd", ".rel_pos", ".patch_embd"} {
		if strings.Contains(name, s) {
			return false
		}
	}
	return name != "position_embd.weight" && name != "token_types.weight"
}

// MixInput describes one tensor for type selection.
type MixInput struct {
	Name string
	Ne   []uint64 // ggml dims, ne[0] first
	Type ggml.Type
}

// MixModel is what the type selection needs to know about the model.
type MixModel struct {
	Arch        string // llama.cpp's architecture name
	BlockCount  int
	HeadCount   int
	HeadCountKV int
	NExpert     int
}

// is70B mirrors LLM_TYPE_70B for the supported architectures.
func (m MixModel) is70B() bool {
	switch m.Arch {
	case "llama": // with 8 experts llama.cpp sizes it as 8x7B/8x22B, never 70B
		return m.NExpert != 8 && m.BlockCount == 80 && m.HeadCount != m.HeadCountKV
	case "qwen2":
		return m.BlockCount == 80
	}
	return false
}

// SortTensors orders GGUF tensor names as llama.cpp's model loader does: by block number
// (non-block tensors first), then byte-wise by name. This is llama-quantize's output order.
func SortTensors[T any](items []T, name func(T) string) {
	key := func(s string) int {
		if !strings.HasPrefix(s, "blk.") {
			return -1
		}
		rest := s[4:]
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return -1
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil {
			return -1
		}
		return n
	}
	less := func(a, b string) bool {
		ka, kb := key(a), key(b)
		if ka != kb {
			return ka < kb
		}
		return a < b
	}
	sort.SliceStable(items, func(i, j int) bool { return less(name(items[i]), name(items[j])) })
}

var blkRe = regexp.MustCompile(`^blk\.(\d+)\.`)

// ChooseTypes runs llama-quantize's per-tensor type selection (llama_tensor_get_type) for a
// whole model. tensors must be in SortTensors order; the result is index-aligned with it.
// A tensor that is not quantized keeps its input type.
func ChooseTypes(level Level, m MixModel, tensors []MixInput) ([]ggml.Type, error) {
	nAttnWV := 0
	tied := true
	for _, t := range tensors {
		if strings.Contains(t.Name, "attn_v.weight") || strings.Contains(t.Name, "attn_qkv.weight") || strings.Contains(t.Name, "attn_kv_b.weight") {
			nAttnWV++
		}
		if t.Name == "output.weight" {
			tied = false
		}
	}
	s := &mixState{level: level, model: m, nAttnWV: nAttnWV, tied: tied, nFFN: m.BlockCount}
	out := make([]ggml.Type, len(tensors))
	for i, t := range tensors {
		typ, err := s.choose(t)
		if err != nil {
			return nil, err
		}
		out[i] = typ
	}
	return out, nil
}

type mixState struct {
	level   Level
	model   MixModel
	nAttnWV int
	tied    bool
	nFFN    int

	iAttnWV, iFFNDown, iFFNGate, iFFNUp int
}

func nDims(ne []uint64) int {
	n := 1
	for i := len(ne) - 1; i >= 1; i-- {
		if ne[i] > 1 {
			n = i + 1
			break
		}
	}
	return n
}

func (s *mixState) choose(t MixInput) (ggml.Type, error) {
	if !allowsQuantization(t.Name, nDims(t.Ne)) {
		return t.Type, nil
	}
	newType := s.level.Default
	if !newType.IsQuantized() {
		return newType, nil
	}
	newType, err := s.rules(newType, t)
	if err != nil {
		return 0, err
	}
	return fallback(t, newType)
}

func useMoreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

func (s *mixState) layerInfo(i int, name string) (int, int, error) {
	n := s.nFFN
	if s.model.NExpert > 1 {
		m := blkRe.FindStringSubmatch(name)
		if m == nil {
			return 0, 0, fmt.Errorf("failed to determine layer for tensor %s", name)
		}
		i, _ = strconv.Atoi(m[1])
		if i >= n {
			return 0, 0, fmt.Errorf("bad layer %d for tensor %s, must be in [0, %d)", i, name, n)
		}
	}
	return i, n, nil
}

// rules mirrors llama_tensor_get_type_impl for the levels in Levels (dense and MoE models,
// no importance matrix).
func (s *mixState) rules(newType ggml.Type, t MixInput) (ggml.Type, error) {
	lv := s.level.Name
	cat := tensorCategory(t.Name)
	nGQA := 0
	if s.model.HeadCountKV > 0 {
		nGQA = s.model.HeadCount / s.model.HeadCountKV
	}
	switch {
	case cat == catOutput || (s.tied && cat == catTokenEmbd):
		nx := int(t.Ne[0])
		if nx%newType.BlockSize() != 0 {
			newType = ggml.Q8_0
		} else if newType != ggml.Q8_0 {
			newType = ggml.Q6_K
		}
	case cat == catTokenEmbd:
		// default type for every level quantfleet writes
	case cat.attnVLike():
		switch {
		case lv == "Q2_K":
			if nGQA >= 4 {
				newType = ggml.Q4_K
			} else {
				newType = ggml.Q3_K
			}
		case lv == "Q3_K_M":
			if s.iAttnWV < 2 {
				newType = ggml.Q5_K
			} else {
				newType = ggml.Q4_K
			}
		case lv == "Q3_K_L":
			newType = ggml.Q5_K
		case (lv == "Q4_K_M" || lv == "Q5_K_M") && useMoreBits(s.iAttnWV, s.nAttnWV):
			newType = ggml.Q6_K
		case lv == "Q4_K_S" && s.iAttnWV < 4:
			newType = ggml.Q5_K
		}
		if s.model.is70B() && (newType == ggml.Q3_K || newType == ggml.Q4_K) {
			newType = ggml.Q5_K
		}
		if s.model.NExpert == 8 {
			newType = ggml.Q8_0
		}
		s.iAttnWV++
	case cat == catAttnK:
		if s.model.NExpert == 8 {
			newType = ggml.Q8_0
		}
	case cat == catAttnQ:
	case cat == catFFNDown:
		i, n, err := s.layerInfo(s.iFFNDown, t.Name)
		if err != nil {
			return 0, err
		}
		switch {
		case lv == "Q2_K":
			newType = ggml.Q3_K
		case lv == "Q3_K_M":
			if i < n/16 {
				newType = ggml.Q5_K
			} else {
				newType = ggml.Q4_K // arch is never FALCON here
			}
		case lv == "Q3_K_L":
			newType = ggml.Q5_K
		case lv == "Q4_K_M":
			if useMoreBits(i, n) {
				newType = ggml.Q6_K
			}
		case lv == "Q5_K_M" && useMoreBits(i, n):
			newType = ggml.Q6_K
		case lv == "Q4_K_S" && i < n/8:
			newType = ggml.Q5_K
		}
		s.iFFNDown++
	case cat == catAttnOutput:
		if s.model.NExpert == 8 {
			switch lv {
			case "Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M":
				newType = ggml.Q5_K
			}
		} else {
			switch lv {
			case "Q2_K":
				newType = ggml.Q3_K
			case "Q3_K_M":
				newType = ggml.Q4_K
			case "Q3_K_L":
				newType = ggml.Q5_K
			}
		}
	case cat == catFFNGate:
		if _, _, err := s.layerInfo(s.iFFNGate, t.Name); err != nil {
			return 0, err
		}
		s.iFFNGate++
	case cat == catFFNUp:
		if _, _, err := s.layerInfo(s.iFFNUp, t.Name); err != nil {
			return 0, err
		}
		s.iFFNUp++
	}
	return newType, nil
}

// fallback mirrors tensor_type_fallback: a row length that the block size does not divide gets a
// compatible type, or quantization fails when none is defined.
func fallback(t MixInput, typ ggml.Type) (ggml.Type, error) {
	nx := t.Ne[0]
	if nx%uint64(typ.BlockSize()) == 0 {
		return typ, nil
	}
	var fb ggml.Type
	switch typ {
	case ggml.Q2_K, ggml.Q3_K:
		fb = ggml.Q4_0
	case ggml.Q4_K:
		fb = ggml.Q5_0
	case ggml.Q5_K:
		fb = ggml.Q5_1
	case ggml.Q6_K:
		fb = ggml.Q8_0
	default:
		return 0, fmt.Errorf("tensor %s: row length %d is not a multiple of %s's block size %d and no tensor type fallback is defined", t.Name, nx, typ, typ.BlockSize())
	}
	if nx%uint64(fb.BlockSize()) != 0 {
		fb = ggml.F16
	}
	return fb, nil
}
