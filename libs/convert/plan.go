// Package convert turns a Hugging Face checkpoint into a GGUF file the way llama.cpp's
// convert_hf_to_gguf.py followed by llama-quantize does: the same metadata, tensor names, Q/K row
// permutation, intermediate float type and per-tensor quantization types, so that every tensor's
// bytes are identical.
//
// Planning (NewPlan) is separate from producing tensor data (TensorPlan.Produce): a fleet plans a
// whole model once, then hands tensors to workers.
package convert

import (
	"fmt"
	"slices"
	"strings"

	"quantfleet.dev/libs/ggml"
	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/ggufmeta"
	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/tokenizer"
)

// Options tune planning.
type Options struct {
	// TokenizerPre overrides the detected tokenizer.ggml.pre of a BPE tokenizer.
	TokenizerPre string
	// RemoteID is "org/name" for a model that came from the Hugging Face Hub; it names the model.
	RemoteID string
	// DirName names a local model (the directory's base name); defaults to the model's Name.
	DirName string
}

// TensorPlan says how to produce one GGUF tensor. It is JSON-serialisable so a dispatcher can hand
// it to a worker.
type TensorPlan struct {
	Name   string `json:"name"`
	Source string `json:"source,omitempty"` // Hugging Face tensor name; empty for generated tensors
	// Sources are the per-expert tensors stacked (in this order) into one 3-D tensor.
	Sources []string `json:"sources,omitempty"`
	// AddOne adds 1 to every value (Gemma's norms), in the source's float type.
	AddOne bool `json:"add_one,omitempty"`
	Block  int  `json:"block"` // transformer block, -1 for the others
	// Ne are the GGUF dims, ne[0] (the row length) first.
	Ne []uint64 `json:"ne"`
	// Intermediate is the type convert_hf_to_gguf.py would have written; its rounding is applied
	// before quantizing so the quantizer sees the same floats llama-quantize does.
	Intermediate ggml.Type `json:"intermediate"`
	Type         ggml.Type `json:"type"`
	// PermuteHeads > 0 applies LlamaModel.permute with that many heads.
	PermuteHeads int `json:"permute_heads,omitempty"`
	// Generated names a tensor computed from the configuration ("rope_freqs").
	Generated string `json:"generated,omitempty"`
	// Offset is the tensor's position in the data section, Size its unpadded byte size.
	Offset uint64 `json:"offset"`
	Size   uint64 `json:"size"`
}

// Rows is the number of rows (elements / ne[0]).
func (t TensorPlan) Rows() int {
	n := uint64(1)
	for _, d := range t.Ne[1:] {
		n *= d
	}
	return int(n)
}

// Plan is a complete GGUF layout for one model and level.
type Plan struct {
	Level   Level
	Arch    string
	Header  *gguf.Header
	Tensors []TensorPlan // in file order
	// Rope holds what generated tensors need.
	Rope RopeFreqs
}

// DataSize is the size of the data section, padding included.
func (p *Plan) DataSize() uint64 {
	if len(p.Tensors) == 0 {
		return 0
	}
	last := p.Tensors[len(p.Tensors)-1]
	return last.Offset + last.Size + gguf.DataPadding(last.Size)
}

// NewPlan plans the GGUF conversion of m at the given level. dir is a local directory holding the
// model's small files (config.json, tokenizer files, README.md); the weights are only described.
func NewPlan(m *hfmodel.Model, dir string, levelName string, opt Options) (*Plan, error) {
	level, err := LookupLevel(levelName)
	if err != nil {
		return nil, err
	}
	c := m.Config
	spec, err := lookupArch(c.Architecture)
	if err != nil {
		return nil, err
	}
	arch := spec.gguf
	p := &Plan{Level: level, Arch: arch, Rope: ropeFreqsFrom(c)}
	var generated []TensorPlan
	if spec.generated != nil {
		var extra RopeFreqs
		if generated, extra, err = spec.generated(c); err != nil {
			return nil, err
		}
		p.Rope.LongFactors, p.Rope.ShortFactors = extra.LongFactors, extra.ShortFactors
	}
	dims, err := c.Dims()
	if err != nil {
		return nil, err
	}

	inter := intermediateType(m.Tensors)
	tensors, err := converterTensors(m, spec, inter, p.Rope)
	if err != nil {
		return nil, err
	}
	tensors = append(generated, tensors...)

	// The metadata as convert_hf_to_gguf.py writes it.
	interFileType := map[ggml.Type]uint32{ggml.F32: 0, ggml.F16: 1, ggml.BF16: 32}[inter]
	shapes := make([]ggufmeta.TensorShape, len(tensors))
	for i, t := range tensors {
		shape := make([]int64, len(t.Ne)) // torch order, as the converter counts
		for j, n := range t.Ne {
			shape[len(t.Ne)-1-j] = int64(n)
		}
		shapes[i] = ggufmeta.TensorShape{Name: t.Name, Shape: shape}
	}
	total, shared, expert, expertCount := ggufmeta.CountParams(shapes)
	meta, err := ggufmeta.Metadata(ggufmeta.Options{
		Dir: dir, DirName: firstNonEmpty(opt.DirName, m.Name), RemoteID: opt.RemoteID,
		TotalParams: total, SharedParams: shared, ExpertParams: expert, ExpertCount: expertCount,
	})
	if err != nil {
		return nil, fmt.Errorf("general metadata: %w", err)
	}
	early, hp, err := spec.hparams(c, arch, interFileType)
	if err != nil {
		return nil, err
	}
	var bos, eos, pad *int
	for key, dst := range map[string]**int{"bos_token_id": &bos, "eos_token_id": &eos, "pad_token_id": &pad} {
		if v, ok, err := c.Int(key); err == nil && ok {
			i := int(v)
			*dst = &i
		}
	}
	tok, err := tokenizer.GGUFMetadata(dir, tokenizer.GGUFOptions{
		Arch: arch, VocabSize: c.VocabSize, PreOverride: opt.TokenizerPre,
		BOSTokenID: bos, EOSTokenID: eos, PadTokenID: pad,
	})
	if err != nil {
		return nil, err
	}
	h := &gguf.Header{}
	h.KV = append(h.KV, gguf.KV{Key: "general.architecture", Value: arch})
	h.KV = append(h.KV, early...)
	h.KV = append(h.KV, gguf.KV{Key: "general.type", Value: "model"})
	h.KV = append(h.KV, meta...)
	h.KV = append(h.KV, hp...)
	h.KV = append(h.KV, gguf.KV{Key: "general.quantization_version", Value: QuantizationVersion})
	h.KV = append(h.KV, tok...)

	if level.Default == inter {
		// The converter's own output: its order, its keys.
		for i := range tensors {
			tensors[i].Type = tensors[i].Intermediate
		}
	} else {
		// llama-quantize: loader order, per-tensor types, the two keys it rewrites moved last.
		SortTensors(tensors, func(t TensorPlan) string { return t.Name })
		mixIn := make([]MixInput, len(tensors))
		for i, t := range tensors {
			mixIn[i] = MixInput{Name: t.Name, Ne: t.Ne, Type: t.Intermediate}
		}
		types, err := ChooseTypes(level, MixModel{Arch: arch, BlockCount: c.NumLayers, HeadCount: c.NumHeads, HeadCountKV: c.NumKVHeads, NExpert: dims.Experts}, mixIn)
		if err != nil {
			return nil, err
		}
		for i := range tensors {
			tensors[i].Type = types[i]
			// gguf.cpp writes ggml_n_dims dimensions: trailing 1s dropped (Qwen2-MoE's
			// [hidden, 1] shared-expert gate becomes [hidden]); the Python writer keeps them.
			for len(tensors[i].Ne) > 1 && tensors[i].Ne[len(tensors[i].Ne)-1] == 1 {
				tensors[i].Ne = tensors[i].Ne[:len(tensors[i].Ne)-1]
			}
		}
		h.Remove("general.quantization_version")
		h.Remove("general.file_type")
		h.KV = append(h.KV, gguf.KV{Key: "general.quantization_version", Value: QuantizationVersion},
			gguf.KV{Key: "general.file_type", Value: level.FileType})
	}
	for _, t := range tensors {
		h.Tensors = append(h.Tensors, gguf.TensorInfo{Name: t.Name, Dims: t.Ne, Type: t.Type})
	}
	if err := h.Layout(); err != nil {
		return nil, err
	}
	// Nothing is written that llama.cpp could not load.
	if err := CheckHeader(h); err != nil {
		return nil, err
	}
	for i := range tensors {
		tensors[i].Offset = h.Tensors[i].Offset
		tensors[i].Size = h.Tensors[i].Size()
	}
	p.Header, p.Tensors = h, tensors
	return p, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// intermediateType is convert_hf_to_gguf.py's --outtype auto: the dtype of the first tensor of two
// or more dimensions, bf16 or f16; F16 when there is none.
func intermediateType(ts []safetensors.Tensor) ggml.Type {
	for _, t := range ts {
		if len(t.Shape) < 2 {
			continue
		}
		switch t.DType {
		case safetensors.BF16:
			return ggml.BF16
		case safetensors.F16:
			return ggml.F16
		}
	}
	return ggml.F16
}

// converterTensors lists the GGUF tensors in the converter's order: the checkpoint's in its
// order, each block's experts stacked where the block's last expert tensor comes.
func converterTensors(m *hfmodel.Model, spec *archSpec, inter ggml.Type, rope RopeFreqs) ([]TensorPlan, error) {
	c := m.Config
	var out []TensorPlan
	if rope.Enabled {
		out = append(out, TensorPlan{Name: "rope_freqs.weight", Block: -1, Ne: []uint64{uint64(rope.Dim / 2)},
			Intermediate: ggml.F32, Generated: "rope_freqs"})
	}
	nExperts := 0
	if spec.experts != nil {
		d, err := c.Dims()
		if err != nil {
			return nil, err
		}
		nExperts = d.Experts
	}
	pending := map[int]map[string]safetensors.Tensor{} // block → per-expert tensors read so far
	for _, t := range m.Tensors {
		if hfmodel.IgnoredTensor(t.Name) {
			continue
		}
		if !t.DType.IsFloat() {
			return nil, fmt.Errorf("tensor %s: %w %s", t.Name, safetensors.ErrUnsupportedDType, t.DType)
		}
		if b, _, _, ok := spec.expertOf(t.Name); ok {
			if pending[b] == nil {
				pending[b] = map[string]safetensors.Tensor{}
			}
			pending[b][hfmodel.TrimPrefix(t.Name)] = t
			if len(pending[b]) < 3*nExperts {
				continue
			}
			stacked, err := stackExperts(spec, b, nExperts, pending[b], inter)
			if err != nil {
				return nil, err
			}
			delete(pending, b)
			out = append(out, stacked...)
			continue
		}
		name, block, err := spec.ggufName(t.Name)
		if err != nil {
			return nil, err
		}
		if name == "" {
			continue
		}
		ne := make([]uint64, len(t.Shape))
		for i, d := range t.Shape {
			ne[len(t.Shape)-1-i] = uint64(d)
		}
		if len(ne) == 0 {
			ne = []uint64{1}
		}
		tp := TensorPlan{Name: name, Source: t.Name, Block: block, Ne: ne, Intermediate: inter}
		if len(t.Shape) <= 1 || hasSuffix(name, "_norm.weight") || !hasSuffix(name, ".weight") ||
			strings.Contains(name, ".ffn_gate_inp") {
			tp.Intermediate = ggml.F32
		}
		tp.AddOne = spec.normShift && hasSuffix(t.Name, "norm.weight")
		// LlamaModel.modify_tensors (Llama, Mistral, Mixtral): NORM rope wants q/k rows permuted.
		if spec.gguf == "llama" && len(t.Shape) >= 1 {
			switch {
			case hasSuffix(t.Name, "q_proj.weight") || hasSuffix(t.Name, "q_proj.bias"):
				tp.PermuteHeads = c.NumHeads
			case hasSuffix(t.Name, "k_proj.weight") || hasSuffix(t.Name, "k_proj.bias"):
				tp.PermuteHeads = c.NumKVHeads
			}
			if tp.PermuteHeads > 0 && t.Shape[0]%int64(2*tp.PermuteHeads) != 0 {
				return nil, fmt.Errorf("tensor %s: %d rows do not split into %d heads of even size", t.Name, t.Shape[0], tp.PermuteHeads)
			}
		}
		if tp.Intermediate.BlockSize() > 1 && ne[0]%uint64(tp.Intermediate.BlockSize()) != 0 {
			return nil, fmt.Errorf("tensor %s: row length %d", t.Name, ne[0])
		}
		out = append(out, tp)
	}
	for b, ts := range pending {
		return nil, fmt.Errorf("%w: block %d has %d expert tensors, %d experts need %d", hfmodel.ErrBadConfig, b, len(ts), nExperts, 3*nExperts)
	}
	if slices.IndexFunc(out, func(t TensorPlan) bool { return t.Name == "token_embd.weight" }) < 0 {
		return nil, fmt.Errorf("%w: checkpoint has no model.embed_tokens.weight", hfmodel.ErrBadConfig)
	}
	return out, nil
}

// stackExperts makes a block's stacked expert tensors (torch.stack over the expert index) in the
// converter's order. The experts of one projection must agree in shape and type.
func stackExperts(spec *archSpec, block, n int, ts map[string]safetensors.Tensor, inter ggml.Type) ([]TensorPlan, error) {
	var out []TensorPlan
	for _, p := range spec.experts {
		tp := TensorPlan{Name: fmt.Sprintf("blk.%d.%s.weight", block, p.gguf), Block: block, Intermediate: inter}
		var first safetensors.Tensor
		for x := 0; x < n; x++ {
			name := fmt.Sprintf("model.layers.%d.%s%d.%s.weight", block, spec.expertPrefix, x, p.hf)
			t, ok := ts[name]
			if !ok {
				return nil, fmt.Errorf("%w: no tensor %s", hfmodel.ErrBadConfig, name)
			}
			if x == 0 {
				first = t
			} else if !slices.Equal(t.Shape, first.Shape) || t.DType != first.DType {
				return nil, fmt.Errorf("%w: expert tensor %s differs in shape or type from expert 0", hfmodel.ErrBadConfig, t.Name)
			}
			tp.Sources = append(tp.Sources, t.Name)
		}
		if len(first.Shape) != 2 {
			return nil, fmt.Errorf("%w: expert tensor %s is not a matrix", hfmodel.ErrBadConfig, first.Name)
		}
		tp.Ne = []uint64{uint64(first.Shape[1]), uint64(first.Shape[0]), uint64(n)}
		if tp.Ne[0]%uint64(inter.BlockSize()) != 0 {
			return nil, fmt.Errorf("tensor %s: row length %d", tp.Name, tp.Ne[0])
		}
		out = append(out, tp)
	}
	return out, nil
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}
