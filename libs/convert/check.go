package convert

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/safetensors"
)

// ErrHeader reports a GGUF header llama.cpp could not load: hparams that disagree with the
// tensors, a tensor missing or too many.
var ErrHeader = fault.New(fault.ErrBadInput, "GGUF header is not loadable")

// CheckHeader checks a GGUF header the way llama.cpp's loader sees it: the hparams (block
// count, embedding and feed-forward lengths, head counts, vocabulary) fix every tensor's shape,
// through the same table (hfmodel.Dims) that checks a checkpoint against its config.json; every
// tensor of every block must be there and no other. NewPlan runs it before anything is written,
// quantize.ValidateGGUF on the file read back.
func CheckHeader(h *gguf.Header) error {
	arch, _ := headerValue[string](h, "general.architecture")
	spec, ok := ggufArchs[arch]
	if !ok {
		return fmt.Errorf("%w: general.architecture %q", ErrHeader, arch)
	}
	d, err := headerDims(h, arch)
	if err != nil {
		return err
	}
	switch {
	case d.Experts > 0 && spec == llamaArch:
		spec = mixtralArch
	case d.Experts > 0 && spec.experts == nil:
		return fmt.Errorf("%w: %s.expert_count on a dense architecture", ErrHeader, arch)
	}
	if err := checkTokenArrays(h, d.Vocab); err != nil {
		return err
	}
	ts, err := checkpointView(h, arch, spec, d)
	if err != nil {
		return err
	}
	if err := d.CheckGGUFTensors(ts); err != nil {
		return fmt.Errorf("%w: %v", ErrHeader, err)
	}
	return nil
}

// ggufArchs are the llama.cpp architectures quantfleet writes, with the converter entry whose
// names they use (llama with experts is Mixtral's).
var ggufArchs = map[string]*archSpec{
	"llama": llamaArch, "qwen2": archs["Qwen2ForCausalLM"], "qwen3": archs["Qwen3ForCausalLM"],
	"gemma2": gemma2Arch, "gemma3": gemma3Arch, "phi3": phi3Arch, "qwen2moe": qwen2MoeArch, "qwen3moe": qwen3MoeArch,
}

// headerValue returns a key's value if it has type T (llama.cpp insists on the stored type).
func headerValue[T any](h *gguf.Header, key string) (T, bool) {
	v, _ := h.Get(key)
	t, ok := v.(T)
	return t, ok
}

// headerDims reads the hparams into the tensor table's terms; the bias and norm options follow
// what llama.cpp's loader takes for the architecture and what the file holds.
func headerDims(h *gguf.Header, arch string) (hfmodel.Dims, error) {
	var err error
	u32 := func(key string, required bool) int {
		v, ok := headerValue[uint32](h, arch+"."+key)
		switch {
		case err != nil:
		case !ok && required:
			err = fmt.Errorf("%w: %s.%s is missing or not a uint32", ErrHeader, arch, key)
		case ok && (v == 0 || v > math.MaxInt32):
			err = fmt.Errorf("%w: %s.%s = %d", ErrHeader, arch, key, v)
		}
		return int(v)
	}
	d := hfmodel.Dims{Layers: u32("block_count", true), Hidden: u32("embedding_length", true),
		Intermediate: u32("feed_forward_length", true), Heads: u32("attention.head_count", true)}
	u32("context_length", true)
	d.KVHeads = u32("attention.head_count_kv", false)
	d.HeadDim = u32("attention.key_length", false)
	valueLen := u32("attention.value_length", false)
	ropeDim := u32("rope.dimension_count", false)
	if err != nil {
		return d, err
	}
	if d.KVHeads == 0 {
		d.KVHeads = d.Heads
	}
	if d.HeadDim == 0 {
		if d.Hidden%d.Heads != 0 {
			return d, fmt.Errorf("%w: embedding_length %d is not a multiple of head_count %d", ErrHeader, d.Hidden, d.Heads)
		}
		d.HeadDim = d.Hidden / d.Heads
	}
	switch {
	case d.Heads%d.KVHeads != 0:
		return d, fmt.Errorf("%w: head_count %d is not a multiple of head_count_kv %d", ErrHeader, d.Heads, d.KVHeads)
	case valueLen != 0 && valueLen != d.HeadDim:
		return d, fmt.Errorf("%w: value_length %d differs from key_length %d", ErrHeader, valueLen, d.HeadDim)
	case (arch == "llama" || arch == "phi3") && ropeDim == 0:
		return d, fmt.Errorf("%w: %s.rope.dimension_count is missing", ErrHeader, arch)
	case arch == "llama" && ropeDim != d.HeadDim:
		return d, fmt.Errorf("%w: llama.rope.dimension_count %d, head size %d", ErrHeader, ropeDim, d.HeadDim)
	}
	tokens, _ := headerValue[[]string](h, "tokenizer.ggml.tokens")
	d.Vocab = len(tokens)
	if v, ok := h.Get(arch + ".vocab_size"); ok && v != uint32(d.Vocab) {
		return d, fmt.Errorf("%w: %s.vocab_size %v, %d tokens", ErrHeader, arch, v, d.Vocab)
	}
	_, hasOutput := h.Tensor("output.weight")
	d.Tied = !hasOutput
	has := func(name string) bool { _, ok := h.Tensor(name); return ok }
	d.Experts = u32("expert_count", false)
	used := u32("expert_used_count", false)
	if err != nil {
		return d, err
	}
	if (d.Experts > 0) != (used > 0) || used > d.Experts || d.Experts > hfmodel.MaxExperts {
		return d, fmt.Errorf("%w: expert_count %d, expert_used_count %d", ErrHeader, d.Experts, used)
	}
	switch arch {
	case "llama": // biases are optional there, all blocks alike
		d.AttentionBias, d.OutputBias, d.MLPBias = has("blk.0.attn_q.bias"), has("blk.0.attn_output.bias"), has("blk.0.ffn_up.bias")
		if d.Experts > 0 {
			d.Layout, d.ExpertFF = hfmodel.LayoutMixtral, d.Intermediate
		}
	case "qwen2":
		d.AttentionBias = true
	case "qwen3":
		d.QKNorm = true
	case "gemma2", "gemma3":
		d.Layout, d.QKNorm = hfmodel.LayoutGemma, arch == "gemma3"
		d.AttentionBias, d.OutputBias = has("blk.0.attn_q.bias"), has("blk.0.attn_output.bias")
	case "phi3":
		d.Layout = hfmodel.LayoutPhi3
	case "qwen2moe", "qwen3moe":
		d.Layout, d.QKNorm = hfmodel.LayoutQwenMoE, arch == "qwen3moe"
		d.AttentionBias, d.OutputBias = has("blk.0.attn_q.bias"), has("blk.0.attn_output.bias")
		d.ExpertFF = u32("expert_feed_forward_length", true)
		d.SharedExpertFF = u32("expert_shared_feed_forward_length", false)
		if err != nil {
			return d, err
		}
		if d.Experts == 0 {
			return d, fmt.Errorf("%w: %s.expert_count is missing", ErrHeader, arch)
		}
	}
	return d, nil
}

// checkTokenArrays: llama.cpp indexes scores and token types by token id.
func checkTokenArrays(h *gguf.Header, n int) error {
	if n == 0 {
		return fmt.Errorf("%w: no tokenizer.ggml.tokens", ErrHeader)
	}
	if s, ok := h.Get("tokenizer.ggml.scores"); ok {
		if s, ok := s.([]float32); !ok || len(s) != n {
			return fmt.Errorf("%w: tokenizer.ggml.scores does not have %d float32 entries", ErrHeader, n)
		}
	}
	if s, ok := h.Get("tokenizer.ggml.token_type"); ok {
		if s, ok := s.([]int32); !ok || len(s) != n {
			return fmt.Errorf("%w: tokenizer.ggml.token_type does not have %d int32 entries", ErrHeader, n)
		}
	}
	return nil
}

// checkpointView lists the header's tensors under their Hugging Face names and shapes, as the
// tensor table knows them; a stacked expert tensor stands for its experts. Generated tensors
// (rope_freqs, Phi-3's rope factors) are not in the table: they are checked here.
func checkpointView(h *gguf.Header, arch string, spec *archSpec, d hfmodel.Dims) ([]safetensors.Tensor, error) {
	ts := make([]safetensors.Tensor, 0, len(h.Tensors))
	for _, t := range h.Tensors {
		if generated(t.Name, arch) {
			dim, _ := headerValue[uint32](h, arch+".rope.dimension_count")
			if len(t.Dims) != 1 || t.Dims[0] != uint64(dim/2) {
				return nil, fmt.Errorf("%w: %s has dims %v for rope.dimension_count %d", ErrHeader, t.Name, t.Dims, dim)
			}
			continue
		}
		shape := make([]int64, len(t.Dims))
		for i, n := range t.Dims {
			if n == 0 || n > math.MaxInt32 {
				return nil, fmt.Errorf("%w: tensor %s has dims %v", ErrHeader, t.Name, t.Dims)
			}
			shape[len(t.Dims)-1-i] = int64(n)
		}
		if block, proj, ok := spec.stackedOf(t.Name); ok {
			if len(shape) != 3 || shape[0] != int64(d.Experts) {
				return nil, fmt.Errorf("%w: tensor %s has dims %v for %d experts", ErrHeader, t.Name, t.Dims, d.Experts)
			}
			for x := 0; x < d.Experts; x++ {
				ts = append(ts, safetensors.Tensor{Name: fmt.Sprintf("model.layers.%d.%s%d.%s.weight", block, spec.expertPrefix, x, proj), Shape: shape[1:]})
			}
			continue
		}
		name, ok := spec.hfName(t.Name)
		if !ok {
			return nil, fmt.Errorf("%w: tensor %s is not one llama.cpp loads for %s", ErrHeader, t.Name, arch)
		}
		ts = append(ts, safetensors.Tensor{Name: name, Shape: shape})
	}
	return ts, nil
}

func generated(name, arch string) bool {
	switch name {
	case "rope_freqs.weight":
		return arch == "llama"
	case "rope_factors_long.weight", "rope_factors_short.weight":
		return arch == "phi3"
	}
	return false
}

// stackedOf recognises "blk.B.<stacked>.weight" and returns the block and per-expert projection.
func (a *archSpec) stackedOf(name string) (int, string, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok || a.experts == nil {
		return 0, "", false
	}
	num, sub, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || strconv.Itoa(n) != num {
		return 0, "", false
	}
	for _, p := range a.experts {
		if sub == p.gguf+".weight" {
			return n, p.hf, true
		}
	}
	return 0, "", false
}

// hfName inverts ggufName.
func (a *archSpec) hfName(name string) (string, bool) {
	base, suffix, ok := cutSuffix(name)
	if !ok {
		return "", false
	}
	for hf, g := range a.global {
		if g == base && g != "" {
			return hf + suffix, true
		}
	}
	for hf, g := range globalNames {
		if g == base {
			return hf + suffix, true
		}
	}
	rest, ok := strings.CutPrefix(base, "blk.")
	if !ok {
		return "", false
	}
	num, sub, _ := strings.Cut(rest, ".")
	if n, err := strconv.Atoi(num); err != nil || n < 0 || strconv.Itoa(n) != num {
		return "", false
	}
	for hf, g := range a.names {
		if g == sub {
			return "model.layers." + num + "." + hf + suffix, true
		}
	}
	for hf, g := range blockNames {
		if _, overridden := a.names[hf]; g == sub && !overridden {
			return "model.layers." + num + "." + hf + suffix, true
		}
	}
	return "", false
}

func cutSuffix(name string) (base, suffix string, ok bool) {
	for _, s := range []string{".weight", ".bias"} {
		if b, found := strings.CutSuffix(name, s); found {
			return b, s, true
		}
	}
	return "", "", false
}
