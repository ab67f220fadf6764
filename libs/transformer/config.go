package transformer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"quantfleet.dev/libs/hfmodel"
)

// ErrUnsupported reports a model this runtime cannot run (architecture, activation,
// rotary scaling type). Callers branch on it with errors.Is; an unsupported architecture
// also matches hfmodel.ErrUnsupportedArchitecture.
var ErrUnsupported = errors.New("unsupported")

// ErrBadConfig reports a config.json that is malformed or inconsistent. It is
// hfmodel.ErrBadConfig, so errors.Is works with either name.
var ErrBadConfig = hfmodel.ErrBadConfig

// Architectures lists the values of config.json's "architectures" the forward pass runs (eval).
var Architectures = hfmodel.Architectures

// QuantizableArchitectures are those GPTQ quantizes (and AWQ, but for those CheckAWQ refuses): their layers report every linear's input to hooks (LinearGroups).
var QuantizableArchitectures = []string{"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
	"Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Phi3ForCausalLM", "MixtralForCausalLM",
	"Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"}

// CheckQuantizable refuses architectures GPTQ cannot quantize.
func (c *Config) CheckQuantizable() error {
	if slices.Contains(QuantizableArchitectures, c.Architecture) {
		return nil
	}
	return unsupportedArch{fmt.Errorf("%w %s for GPTQ/AWQ (GGUF conversion and eval support it; GPTQ support: %s)",
		hfmodel.ErrUnsupportedArchitecture, c.Architecture, strings.Join(QuantizableArchitectures, ", "))}
}

// awqGaps says why AWQ refuses a quantizable architecture: those AutoAWQ 0.2.9 has no model
// for (its AWQ_CAUSAL_LM_MODEL_MAP), so that no AutoAWQ-compatible layout is defined.
var awqGaps = map[string]string{
	"Gemma3ForCausalLM":              "AutoAWQ has no gemma3 model",
	"Gemma3ForConditionalGeneration": "AutoAWQ has no gemma3 model",
	"Qwen2MoeForCausalLM":            "AutoAWQ has no qwen2_moe model",
}

// CheckAWQ refuses architectures AWQ cannot quantize: the Llama layout (Llama, Mistral, Qwen2,
// Qwen3), Gemma 2, Phi-3, Mixtral and Qwen3-MoE are supported, as in AutoAWQ; the error says
// why for the others (use GPTQ for them).
func (c *Config) CheckAWQ() error {
	if err := c.CheckQuantizable(); err != nil {
		return err
	}
	if why, ok := awqGaps[c.Architecture]; ok {
		return unsupportedArch{fmt.Errorf("%w %s for AWQ (%s); GPTQ supports it", hfmodel.ErrUnsupportedArchitecture, c.Architecture, why)}
	}
	return nil
}

// CheckLlamaLayout refuses models whose decoder layers are not the Llama layout (Llama,
// Mistral, Qwen2, Qwen3): the runtimes that implement that layer alone (the GPU's) check it.
func (c *Config) CheckLlamaLayout() error {
	if c.Layout == hfmodel.LayoutLlama && slices.Contains(QuantizableArchitectures, c.Architecture) {
		return nil
	}
	return unsupportedArch{fmt.Errorf("%w %s: the Llama layer layout only", hfmodel.ErrUnsupportedArchitecture, c.Architecture)}
}

// unsupportedArch is hfmodel's unsupported-architecture error, matching ErrUnsupported too.
type unsupportedArch struct{ err error }

func (e unsupportedArch) Error() string   { return e.err.Error() }
func (e unsupportedArch) Unwrap() []error { return []error{e.err, ErrUnsupported} }

// Config is the part of a Hugging Face config.json the decoder needs, with the defaults
// of transformers' LlamaConfig, MistralConfig, Qwen2Config and Qwen3Config applied.
type Config struct {
	Architecture          string // one of Architectures
	HiddenSize            int
	IntermediateSize      int
	NumLayers             int
	NumHeads              int
	NumKVHeads            int
	HeadDim               int
	VocabSize             int
	MaxPositionEmbeddings int
	RMSNormEps            float64
	TieWordEmbeddings     bool
	AttentionBias         bool // q, k, v biases (Qwen2 always; Llama/Qwen3 attention_bias)
	OutputBias            bool // o_proj bias (Llama/Qwen3 attention_bias)
	MLPBias               bool // gate, up, down biases (Llama mlp_bias)
	QKNorm                bool // Qwen3 per-head RMSNorm of q and k before the rotation
	// SlidingWindow is the attention window of each layer, 0 for full causal attention.
	SlidingWindow []int
	Rope          Rope
	BOSTokenID    int // -1 when config.json has none
	EOSTokenID    int // first EOS id, -1 when none
	// Quantization is config.json's "quantization_config", verbatim (nil if absent).
	Quantization json.RawMessage
	ArchConfig
	dims hfmodel.Dims // the table's options for the non-Llama layouts
}

func isGemma(arch string) bool {
	return arch == "Gemma2ForCausalLM" || arch == "Gemma3ForCausalLM" || arch == "Gemma3ForConditionalGeneration"
}

// Rope holds the rotary embedding parameters: transformers' rope_theta / rope_scaling
// (v4) or rope_parameters (v5).
type Rope struct {
	Type                          string // default, linear, dynamic, yarn, llama3
	Theta                         float64
	Factor                        float64
	OriginalMaxPositionEmbeddings int // 0 if unset
	LowFreqFactor, HighFreqFactor float64
	BetaFast, BetaSlow            float64
	AttentionFactor               float64 // 0 if unset
	Mscale, MscaleAllDim          float64 // 0 if unset
	Truncate                      bool
	Dim                           int // rotated dimensions per head (head_dim × partial_rotary_factor)
	// LongFactor and ShortFactor are LongRoPE's per-frequency divisors (Phi-3).
	LongFactor, ShortFactor []float64
}

// longropeFactors reads long_factor and short_factor, half entries each.
func longropeFactors(params map[string]any, half int) (long, short []float64, err error) {
	read := func(key string) ([]float64, error) {
		l, ok := params[key].([]any)
		if !ok || len(l) != half {
			return nil, fmt.Errorf("%w: longrope %s must be a list of %d numbers", ErrBadConfig, key, half)
		}
		out := make([]float64, half)
		for i, v := range l {
			n, ok := v.(json.Number)
			f, e := n.Float64()
			if !ok || e != nil || f <= 0 {
				return nil, fmt.Errorf("%w: longrope %s[%d] = %v", ErrBadConfig, key, i, v)
			}
			out[i] = f
		}
		return out, nil
	}
	if long, err = read("long_factor"); err != nil {
		return nil, nil, err
	}
	short, err = read("short_factor")
	return long, short, err
}

// ReadConfig reads dir/config.json.
func ReadConfig(dir string) (*Config, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("transformer: %w", err)
	}
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	return cfg, nil
}

// rawConfig holds what hfmodel's parameter map cannot tell: keys whose explicit null
// means something other than the class default, and quantization_config verbatim.
type rawConfig struct {
	NumKVHeads    json.RawMessage `json:"num_key_value_heads"`
	HeadDim       json.RawMessage `json:"head_dim"`
	SlidingWindow json.RawMessage `json:"sliding_window"`
	Quantization  json.RawMessage `json:"quantization_config"`
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// ParseConfig parses a config.json. The architecture, the class defaults and the sizes come
// from hfmodel.ParseConfig; this adds what only the runtime needs.
func ParseConfig(raw []byte) (*Config, error) {
	hc, err := hfmodel.ParseConfig(raw)
	if err != nil {
		if errors.Is(err, hfmodel.ErrUnsupportedArchitecture) {
			return nil, unsupportedArch{err}
		}
		return nil, err
	}
	var j rawConfig
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	c := &Config{
		Architecture:          hc.Architecture,
		VocabSize:             hc.VocabSize,
		HiddenSize:            hc.HiddenSize,
		IntermediateSize:      hc.IntermediateSize,
		NumLayers:             hc.NumLayers,
		NumHeads:              hc.NumHeads,
		NumKVHeads:            hc.NumKVHeads,
		MaxPositionEmbeddings: hc.MaxPositionEmbeddings,
		RMSNormEps:            hc.RMSNormEps,
		TieWordEmbeddings:     hc.TieWordEmbeddings,
		Quantization:          j.Quantization,
	}
	// transformers' configs turn an explicit null into "as many as attention heads";
	// hfmodel keeps the converter's view, where the class default stands in.
	if isNull(j.NumKVHeads) {
		c.NumKVHeads = c.NumHeads
		if c.NumHeads%c.NumKVHeads != 0 {
			return nil, fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", ErrBadConfig, c.NumHeads, c.NumKVHeads)
		}
	}
	act, err := optString(hc.Params, "hidden_act")
	if err != nil {
		return nil, err
	}
	if act != "" && act != "silu" && act != "swish" && !isGemma(hc.Architecture) {
		return nil, fmt.Errorf("%w hidden_act %q (supported: silu)", ErrUnsupported, act)
	}
	// The tensor-shaping options come from hfmodel's table, shared with the GGUF conversion.
	d, err := hc.Dims()
	if err != nil {
		return nil, err
	}
	c.HeadDim, c.AttentionBias, c.OutputBias, c.MLPBias, c.QKNorm = d.HeadDim, d.AttentionBias, d.OutputBias, d.MLPBias, d.QKNorm
	if d.Layout != hfmodel.LayoutLlama {
		c.dims = d
	}
	if err := c.parseArch(hc, d); err != nil {
		return nil, err
	}
	if err := c.parseWindows(hc, j.SlidingWindow); err != nil {
		return nil, err
	}
	if err := c.parseRope(hc); err != nil {
		return nil, err
	}
	c.BOSTokenID = firstID(hc.Params["bos_token_id"])
	c.EOSTokenID = firstID(hc.Params["eos_token_id"])
	return c, nil
}

// Dims are the sizes and options that fix the checkpoint's tensors (hfmodel's table).
func (c *Config) Dims() hfmodel.Dims {
	if c.Layout != hfmodel.LayoutLlama {
		return c.dims
	}
	return hfmodel.Dims{Vocab: c.VocabSize, Hidden: c.HiddenSize, Intermediate: c.IntermediateSize, Layers: c.NumLayers,
		Heads: c.NumHeads, KVHeads: c.NumKVHeads, HeadDim: c.HeadDim, AttentionBias: c.AttentionBias,
		OutputBias: c.OutputBias, MLPBias: c.MLPBias, QKNorm: c.QKNorm, Tied: c.TieWordEmbeddings}
}

func optString(params map[string]any, key string) (string, error) {
	switch v := params[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("%w: %q must be a string, got %v", ErrBadConfig, key, v)
	}
}

// optInt reads an integer parameter that may be absent or null.
func optInt(params map[string]any, key string) (v int, set bool, err error) {
	switch n := params[key].(type) {
	case nil:
		return 0, false, nil
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return int(i), true, nil
		}
	case int:
		return n, true, nil
	}
	return 0, false, fmt.Errorf("%w: %q must be an integer, got %v", ErrBadConfig, key, params[key])
}

// firstID reads a token id that may be null, a number or a list of numbers.
func firstID(v any) int {
	if l, ok := v.([]any); ok && len(l) > 0 {
		v = l[0]
	}
	if n, ok := v.(json.Number); ok {
		if i, err := n.Int64(); err == nil {
			return int(i)
		}
	}
	return -1
}

// parseWindows sets the per-layer sliding window as transformers' configs derive it:
// Mistral applies sliding_window (default 4096, null for none) to every layer; Qwen2 and
// Qwen3 only with use_sliding_window, to the layers from max_window_layers (default 28)
// on; an explicit layer_types list chooses the layers instead.
func (c *Config) parseWindows(hc *hfmodel.Config, rawWindow json.RawMessage) error {
	c.SlidingWindow = make([]int, c.NumLayers)
	window, first := 0, 0
	// hfmodel fills in Mistral's default window of 4096 also for an explicit null, which
	// MistralConfig keeps as "no window".
	set, hasWindow, err := optInt(hc.Params, "sliding_window")
	if err != nil {
		return err
	}
	hasWindow = hasWindow && !isNull(rawWindow)
	switch c.Architecture {
	case "MistralForCausalLM":
		if hasWindow {
			window = set
		}
	case "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration":
		if hasWindow {
			window = set
		}
		if hc.Params["layer_types"] == nil {
			types, err := defaultLayerTypes(hc, c.NumLayers)
			if err != nil {
				return err
			}
			hc.Params["layer_types"] = types
		}
	case "Qwen2ForCausalLM", "Qwen3ForCausalLM":
		use, err := hc.Bool("use_sliding_window")
		if err != nil {
			return err
		}
		if use {
			window = 4096
			if hasWindow {
				window = set
			}
		}
		first = 28
		if n, ok, err := optInt(hc.Params, "max_window_layers"); err != nil {
			return err
		} else if ok {
			first = n
		}
	}
	if window < 0 {
		return fmt.Errorf("%w: sliding_window %d is negative", ErrBadConfig, window)
	}
	// Mistral's attention applies sliding_window on every layer whatever layer_types says.
	if lt := hc.Params["layer_types"]; lt != nil && c.Architecture != "MistralForCausalLM" {
		types, ok := lt.([]any)
		if !ok {
			return fmt.Errorf("%w: layer_types must be a list, got %v", ErrBadConfig, lt)
		}
		if len(types) != c.NumLayers {
			return fmt.Errorf("%w: layer_types has %d entries for %d layers", ErrBadConfig, len(types), c.NumLayers)
		}
		for i, t := range types {
			switch t {
			case "full_attention":
			case "sliding_attention":
				c.SlidingWindow[i] = window
			default:
				return fmt.Errorf("%w layer type %q in layer %d", ErrUnsupported, t, i)
			}
		}
		return nil
	}
	for i := first; i < c.NumLayers && window > 0; i++ {
		c.SlidingWindow[i] = window
	}
	return nil
}

// parseRope reads hfmodel's merged rope parameters (rope_parameters, or rope_scaling plus
// rope_theta, with transformers' default theta).
func (c *Config) parseRope(hc *hfmodel.Config) error {
	full, nested := hc.Rope["full_attention"].(map[string]any)
	if !nested {
		var err error
		c.Rope, err = c.parseRopeParams(hc, hc.Rope)
		return err
	}
	// Per-layer-type parameters (Gemma 3): global layers use full_attention's, sliding
	// layers sliding_attention's.
	var err error
	if c.Rope, err = c.parseRopeParams(hc, full); err != nil {
		return err
	}
	if local, ok := hc.Rope["sliding_attention"].(map[string]any); ok {
		r, err := c.parseRopeParams(hc, local)
		if err != nil {
			return err
		}
		c.LocalRope = &r
	}
	return nil
}

func (c *Config) parseRopeParams(hc *hfmodel.Config, params map[string]any) (Rope, error) {
	r := Rope{Type: "default", Theta: 10000, Factor: 1, Truncate: true}
	num := func(m map[string]any, key string) (float64, bool, error) {
		switch v := m[key].(type) {
		case nil:
			return 0, false, nil
		case json.Number:
			if f, err := v.Float64(); err == nil {
				return f, true, nil
			}
		case float64:
			return v, true, nil
		}
		return 0, false, fmt.Errorf("%w: rope parameter %s is %v, not a number", ErrBadConfig, key, m[key])
	}
	partial, ok, err := num(hc.Params, "partial_rotary_factor")
	if err != nil {
		return Rope{}, err
	}
	if !ok {
		partial = 1
	}
	if t, ok := params["rope_type"].(string); ok {
		r.Type = t
	}
	for _, f := range []struct {
		key string
		dst *float64
	}{
		{"rope_theta", &r.Theta}, {"factor", &r.Factor}, {"low_freq_factor", &r.LowFreqFactor},
		{"high_freq_factor", &r.HighFreqFactor}, {"beta_fast", &r.BetaFast}, {"beta_slow", &r.BetaSlow},
		{"attention_factor", &r.AttentionFactor}, {"mscale", &r.Mscale}, {"mscale_all_dim", &r.MscaleAllDim},
		{"partial_rotary_factor", &partial},
	} {
		v, ok, err := num(params, f.key)
		if err != nil {
			return Rope{}, err
		}
		if ok {
			*f.dst = v
		}
	}
	if v, ok, err := num(params, "original_max_position_embeddings"); err != nil {
		return Rope{}, err
	} else if ok {
		r.OriginalMaxPositionEmbeddings = int(v)
	}
	if t, ok := params["truncate"].(bool); ok {
		r.Truncate = t
	}
	if r.Theta <= 0 || math.IsNaN(r.Theta) {
		return Rope{}, fmt.Errorf("%w: rope_theta %v must be positive", ErrBadConfig, r.Theta)
	}
	r.Dim = int(float64(c.HeadDim) * partial)
	if r.Dim != c.HeadDim {
		return Rope{}, fmt.Errorf("%w partial_rotary_factor %v (only full rotation is supported)", ErrUnsupported, partial)
	}
	switch r.Type {
	case "default":
	case "longrope", "su":
		if hc.Architecture != "Phi3ForCausalLM" {
			return Rope{}, fmt.Errorf("%w rope type %q outside Phi-3", ErrUnsupported, r.Type)
		}
		if r.LongFactor, r.ShortFactor, err = longropeFactors(params, r.Dim/2); err != nil {
			return Rope{}, err
		}
		if r.OriginalMaxPositionEmbeddings <= 0 {
			return Rope{}, fmt.Errorf("%w: longrope needs original_max_position_embeddings", ErrBadConfig)
		}
	case "linear", "dynamic", "yarn", "llama3":
		if _, ok := params["factor"]; !ok {
			if r.Type != "yarn" || r.OriginalMaxPositionEmbeddings <= 0 {
				return Rope{}, fmt.Errorf("%w: rope type %s needs a factor", ErrBadConfig, r.Type)
			}
			// transformers: without a factor, YaRN stretches original_max_position_embeddings
			// to max_position_embeddings.
			r.Factor = float64(c.MaxPositionEmbeddings) / float64(r.OriginalMaxPositionEmbeddings)
		}
		if r.Factor <= 0 {
			return Rope{}, fmt.Errorf("%w: rope factor %v must be positive", ErrBadConfig, r.Factor)
		}
		if r.Type == "llama3" {
			if r.OriginalMaxPositionEmbeddings <= 0 || r.LowFreqFactor <= 0 || r.HighFreqFactor <= r.LowFreqFactor {
				return Rope{}, fmt.Errorf("%w: llama3 rope needs original_max_position_embeddings > 0 and 0 < low_freq_factor < high_freq_factor", ErrBadConfig)
			}
		}
	default:
		return Rope{}, fmt.Errorf("%w rope type %q (supported: default, linear, dynamic, yarn, llama3)", ErrUnsupported, r.Type)
	}
	return r, nil
}
