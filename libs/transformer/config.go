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
)

// ErrUnsupported reports a model this runtime cannot run (architecture, activation,
// rotary scaling type). Callers branch on it with errors.Is.
var ErrUnsupported = errors.New("unsupported")

// ErrBadConfig reports a config.json that is malformed or inconsistent.
var ErrBadConfig = errors.New("bad model config")

// Architectures lists the supported values of config.json's "architectures".
var Architectures = []string{"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}

var modelTypes = map[string]string{
	"llama":   "LlamaForCausalLM",
	"mistral": "MistralForCausalLM",
	"qwen2":   "Qwen2ForCausalLM",
	"qwen3":   "Qwen3ForCausalLM",
}

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

// jsonConfig mirrors config.json; pointers tell absent keys from zero values.
type jsonConfig struct {
	Architectures         []string         `json:"architectures"`
	ModelType             string           `json:"model_type"`
	HiddenSize            *int             `json:"hidden_size"`
	IntermediateSize      *int             `json:"intermediate_size"`
	NumLayers             *int             `json:"num_hidden_layers"`
	NumHeads              *int             `json:"num_attention_heads"`
	NumKVHeads            json.RawMessage  `json:"num_key_value_heads"`
	HeadDim               json.RawMessage  `json:"head_dim"`
	VocabSize             *int             `json:"vocab_size"`
	MaxPositionEmbeddings *int             `json:"max_position_embeddings"`
	RMSNormEps            *float64         `json:"rms_norm_eps"`
	TieWordEmbeddings     *bool            `json:"tie_word_embeddings"`
	AttentionBias         *bool            `json:"attention_bias"`
	MLPBias               *bool            `json:"mlp_bias"`
	HiddenAct             *string          `json:"hidden_act"`
	RopeTheta             *float64         `json:"rope_theta"`
	RopeScaling           map[string]any   `json:"rope_scaling"`
	RopeParameters        map[string]any   `json:"rope_parameters"`
	PartialRotaryFactor   *float64         `json:"partial_rotary_factor"`
	SlidingWindow         json.RawMessage  `json:"sliding_window"`
	UseSlidingWindow      *bool            `json:"use_sliding_window"`
	MaxWindowLayers       *int             `json:"max_window_layers"`
	LayerTypes            []string         `json:"layer_types"`
	BOSTokenID            json.RawMessage  `json:"bos_token_id"`
	EOSTokenID            json.RawMessage  `json:"eos_token_id"`
	Quantization          json.RawMessage  `json:"quantization_config"`
	TextConfig            *json.RawMessage `json:"text_config"`
}

// ParseConfig parses a config.json.
func ParseConfig(raw []byte) (*Config, error) {
	var j jsonConfig
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	arch := ""
	if len(j.Architectures) > 0 {
		arch = j.Architectures[0]
	} else if a, ok := modelTypes[j.ModelType]; ok {
		arch = a
	}
	if !slices.Contains(Architectures, arch) {
		name := arch
		if name == "" {
			name = fmt.Sprintf("with model_type %q", j.ModelType)
		}
		return nil, fmt.Errorf("%w architecture %s (supported: %s)", ErrUnsupported, name, strings.Join(Architectures, ", "))
	}
	// Defaults of the transformers config classes.
	type defaults struct {
		vocab, hidden, inter, layers, heads, kv, maxPos int
		kvFromHeads                                     bool
		headDim                                         int // 0: hidden/heads
		eps, theta                                      float64
	}
	var d defaults
	switch arch {
	case "LlamaForCausalLM":
		d = defaults{32000, 4096, 11008, 32, 32, 0, 2048, true, 0, 1e-6, 10000}
	case "MistralForCausalLM":
		d = defaults{32000, 4096, 14336, 32, 32, 8, 131072, false, 0, 1e-6, 10000}
	case "Qwen2ForCausalLM":
		d = defaults{151936, 4096, 22016, 32, 32, 32, 32768, false, 0, 1e-6, 10000}
	case "Qwen3ForCausalLM":
		d = defaults{151936, 4096, 22016, 32, 32, 32, 32768, false, 128, 1e-6, 10000}
	}
	intOr := func(p *int, def int) int {
		if p != nil {
			return *p
		}
		return def
	}
	c := &Config{
		Architecture:          arch,
		VocabSize:             intOr(j.VocabSize, d.vocab),
		HiddenSize:            intOr(j.HiddenSize, d.hidden),
		IntermediateSize:      intOr(j.IntermediateSize, d.inter),
		NumLayers:             intOr(j.NumLayers, d.layers),
		NumHeads:              intOr(j.NumHeads, d.heads),
		MaxPositionEmbeddings: intOr(j.MaxPositionEmbeddings, d.maxPos),
		RMSNormEps:            d.eps,
		Quantization:          j.Quantization,
	}
	if j.RMSNormEps != nil {
		c.RMSNormEps = *j.RMSNormEps
	}
	kv, kvSet, err := optInt(j.NumKVHeads, "num_key_value_heads")
	if err != nil {
		return nil, err
	}
	switch {
	case kvSet:
		c.NumKVHeads = kv
	case len(j.NumKVHeads) == 0 && !d.kvFromHeads:
		c.NumKVHeads = d.kv
	default: // null, or absent where the default is "as many as attention heads"
		c.NumKVHeads = c.NumHeads
	}
	if c.NumHeads <= 0 || c.HiddenSize <= 0 || c.NumLayers <= 0 || c.IntermediateSize <= 0 || c.VocabSize <= 0 || c.NumKVHeads <= 0 {
		return nil, fmt.Errorf("%w: hidden_size %d, intermediate_size %d, num_hidden_layers %d, num_attention_heads %d, num_key_value_heads %d, vocab_size %d must all be positive",
			ErrBadConfig, c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKVHeads, c.VocabSize)
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return nil, fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", ErrBadConfig, c.NumHeads, c.NumKVHeads)
	}
	hd, hdSet, err := optInt(j.HeadDim, "head_dim")
	if err != nil {
		return nil, err
	}
	switch {
	case hdSet && hd > 0:
		c.HeadDim = hd
	case len(j.HeadDim) == 0 && d.headDim > 0:
		c.HeadDim = d.headDim
	default:
		if c.HiddenSize%c.NumHeads != 0 {
			return nil, fmt.Errorf("%w: hidden_size %d is not a multiple of num_attention_heads %d and head_dim is not set", ErrBadConfig, c.HiddenSize, c.NumHeads)
		}
		c.HeadDim = c.HiddenSize / c.NumHeads
	}
	if j.HiddenAct != nil && *j.HiddenAct != "silu" && *j.HiddenAct != "swish" {
		return nil, fmt.Errorf("%w hidden_act %q (supported: silu)", ErrUnsupported, *j.HiddenAct)
	}
	if j.TieWordEmbeddings != nil {
		c.TieWordEmbeddings = *j.TieWordEmbeddings
	}
	attnBias := j.AttentionBias != nil && *j.AttentionBias
	switch arch {
	case "LlamaForCausalLM":
		c.AttentionBias, c.OutputBias = attnBias, attnBias
		c.MLPBias = j.MLPBias != nil && *j.MLPBias
	case "Qwen2ForCausalLM":
		c.AttentionBias = true
	case "Qwen3ForCausalLM":
		c.AttentionBias, c.OutputBias = attnBias, attnBias
		c.QKNorm = true
	}
	if err := c.parseWindows(&j); err != nil {
		return nil, err
	}
	if err := c.parseRope(&j, d.theta); err != nil {
		return nil, err
	}
	c.BOSTokenID = firstID(j.BOSTokenID)
	c.EOSTokenID = firstID(j.EOSTokenID)
	return c, nil
}

// optInt reads an integer that may be absent or null.
func optInt(raw json.RawMessage, key string) (v int, set bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, false, fmt.Errorf("%w: %s: %v", ErrBadConfig, key, err)
	}
	return v, true, nil
}

// firstID reads a token id that may be null, a number or a list of numbers.
func firstID(raw json.RawMessage) int {
	var n int
	if json.Unmarshal(raw, &n) == nil && len(raw) > 0 && string(raw) != "null" {
		return n
	}
	var l []int
	if json.Unmarshal(raw, &l) == nil && len(l) > 0 {
		return l[0]
	}
	return -1
}

// parseWindows sets the per-layer sliding window as transformers' configs derive it:
// Mistral applies sliding_window (default 4096, null for none) to every layer; Qwen2 and
// Qwen3 only with use_sliding_window, to the layers from max_window_layers (default 28)
// on; an explicit layer_types list chooses the layers instead.
func (c *Config) parseWindows(j *jsonConfig) error {
	c.SlidingWindow = make([]int, c.NumLayers)
	window, first := 0, 0
	var set *int
	if len(j.SlidingWindow) > 0 && string(j.SlidingWindow) != "null" {
		var w int
		if err := json.Unmarshal(j.SlidingWindow, &w); err != nil {
			return fmt.Errorf("%w: sliding_window: %v", ErrBadConfig, err)
		}
		set = &w
	}
	switch c.Architecture {
	case "MistralForCausalLM":
		switch {
		case set != nil:
			window = *set
		case len(j.SlidingWindow) == 0:
			window = 4096
		}
	case "Qwen2ForCausalLM", "Qwen3ForCausalLM":
		if j.UseSlidingWindow != nil && *j.UseSlidingWindow {
			window = 4096
			if set != nil {
				window = *set
			}
		}
		first = 28
		if j.MaxWindowLayers != nil {
			first = *j.MaxWindowLayers
		}
	}
	if window < 0 {
		return fmt.Errorf("%w: sliding_window %d is negative", ErrBadConfig, window)
	}
	// Mistral's attention applies sliding_window on every layer whatever layer_types says.
	if j.LayerTypes != nil && c.Architecture != "MistralForCausalLM" {
		if len(j.LayerTypes) != c.NumLayers {
			return fmt.Errorf("%w: layer_types has %d entries for %d layers", ErrBadConfig, len(j.LayerTypes), c.NumLayers)
		}
		for i, t := range j.LayerTypes {
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

func (c *Config) parseRope(j *jsonConfig, defaultTheta float64) error {
	params := j.RopeParameters
	if params == nil {
		params = j.RopeScaling
	}
	r := Rope{Type: "default", Theta: defaultTheta, Factor: 1, Truncate: true}
	if j.RopeTheta != nil {
		r.Theta = *j.RopeTheta
	}
	partial := 1.0
	if j.PartialRotaryFactor != nil {
		partial = *j.PartialRotaryFactor
	}
	num := func(key string) (float64, bool, error) {
		v, ok := params[key]
		if !ok || v == nil {
			return 0, false, nil
		}
		f, isNum := v.(float64)
		if !isNum {
			return 0, false, fmt.Errorf("%w: rope parameter %s is %v, not a number", ErrBadConfig, key, v)
		}
		return f, true, nil
	}
	if params != nil {
		if t, ok := params["rope_type"].(string); ok {
			r.Type = t
		} else if t, ok := params["type"].(string); ok {
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
			v, ok, err := num(f.key)
			if err != nil {
				return err
			}
			if ok {
				*f.dst = v
			}
		}
		if v, ok, err := num("original_max_position_embeddings"); err != nil {
			return err
		} else if ok {
			r.OriginalMaxPositionEmbeddings = int(v)
		}
		if t, ok := params["truncate"].(bool); ok {
			r.Truncate = t
		}
	}
	if r.Theta <= 0 || math.IsNaN(r.Theta) {
		return fmt.Errorf("%w: rope_theta %v must be positive", ErrBadConfig, r.Theta)
	}
	r.Dim = int(float64(c.HeadDim) * partial)
	if r.Dim != c.HeadDim {
		return fmt.Errorf("%w partial_rotary_factor %v (only full rotation is supported)", ErrUnsupported, partial)
	}
	switch r.Type {
	case "default":
	case "linear", "dynamic", "yarn", "llama3":
		if _, ok := params["factor"]; !ok {
			if r.Type != "yarn" || r.OriginalMaxPositionEmbeddings <= 0 {
				return fmt.Errorf("%w: rope type %s needs a factor", ErrBadConfig, r.Type)
			}
			// transformers: without a factor, YaRN stretches original_max_position_embeddings
			// to max_position_embeddings.
			r.Factor = float64(c.MaxPositionEmbeddings) / float64(r.OriginalMaxPositionEmbeddings)
		}
		if r.Factor <= 0 {
			return fmt.Errorf("%w: rope factor %v must be positive", ErrBadConfig, r.Factor)
		}
		if r.Type == "llama3" {
			if r.OriginalMaxPositionEmbeddings <= 0 || r.LowFreqFactor <= 0 || r.HighFreqFactor <= r.LowFreqFactor {
				return fmt.Errorf("%w: llama3 rope needs original_max_position_embeddings > 0 and 0 < low_freq_factor < high_freq_factor", ErrBadConfig)
			}
		}
	default:
		return fmt.Errorf("%w rope type %q (supported: default, linear, dynamic, yarn, llama3)", ErrUnsupported, r.Type)
	}
	c.Rope = r
	return nil
}
