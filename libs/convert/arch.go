package convert

import (
	"fmt"

	"quantfleet.dev/libs/gguf"
	"quantfleet.dev/libs/hfmodel"
)

// archSpec is what differs between the converter's model classes (convert_hf_to_gguf.py's
// conversion/*.py). Each architecture's entry lives in its own file (arch_*.go).
type archSpec struct {
	gguf string // llama.cpp's architecture name
	// names maps block-relative Hugging Face module names to GGUF ones where the architecture
	// differs from (or adds to) the Llama table in names.go; "" drops the tensor.
	names map[string]string
	// global, like names, for tensors outside the blocks.
	global map[string]string
	// hparams returns the keys set_gguf_parameters writes, in order, general.file_type among
	// them, and the keys written before general.type (by generate_extra_tensors).
	hparams func(c *hfmodel.Config, arch string, fileType uint32) (early, kv []gguf.KV, err error)
	// normShift adds 1 to every *norm.weight (Gemma's RMSNorm scales by 1+w).
	normShift bool
	// experts are the per-expert projection names in the order the converter stacks them,
	// with the stacked GGUF name of each; nil for dense models.
	experts []expertProj
	// expertPrefix is the module holding "experts.N." inside a block.
	expertPrefix string
	// generated lists tensors computed from the configuration, written first.
	generated func(c *hfmodel.Config) ([]TensorPlan, RopeFreqs, error)
}

type expertProj struct{ hf, gguf string }

// archs is the one registry of supported architectures, keyed by config.json's architecture.
var archs = map[string]*archSpec{
	"LlamaForCausalLM":               llamaArch,
	"MistralForCausalLM":             llamaArch,
	"Qwen2ForCausalLM":               {gguf: "qwen2", hparams: textHParams},
	"Qwen3ForCausalLM":               {gguf: "qwen3", hparams: textHParams},
	"Gemma2ForCausalLM":              gemma2Arch,
	"Gemma3ForCausalLM":              gemma3Arch,
	"Gemma3ForConditionalGeneration": gemma3Arch,
	"Phi3ForCausalLM":                phi3Arch,
	"MixtralForCausalLM":             mixtralArch,
	"Qwen2MoeForCausalLM":            qwen2MoeArch,
	"Qwen3MoeForCausalLM":            qwen3MoeArch,
}

func lookupArch(hfArch string) (*archSpec, error) {
	a, ok := archs[hfArch]
	if !ok {
		return nil, fmt.Errorf("%w %s", hfmodel.ErrUnsupportedArchitecture, hfArch)
	}
	return a, nil
}

// textHParams is TextModel.set_gguf_parameters plus the additions of Qwen2/Qwen3 (none).
func textHParams(c *hfmodel.Config, arch string, fileType uint32) ([]gguf.KV, []gguf.KV, error) {
	kv, err := hparamKVs(c, arch, fileType)
	return nil, kv, err
}

// kvList builds an ordered key list where setting a key again keeps its first position, as
// GGUFWriter.add_key_value does (a dict assignment).
type kvList struct{ kv []gguf.KV }

func (l *kvList) set(key string, v any) {
	for i := range l.kv {
		if l.kv[i].Key == key {
			l.kv[i].Value = v
			return
		}
	}
	l.kv = append(l.kv, gguf.KV{Key: key, Value: v})
}
