package hfquant

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/safetensors"
)

// QuantConfig is the part of quantization_config that decoding needs.
type QuantConfig struct {
	Method           Method // "" for an unquantized checkpoint
	Bits             int
	GroupSize        int
	Sym              bool
	DescAct          bool
	CheckpointFormat string // GPTQ: FormatGPTQ or FormatGPTQv2
	Version          string // AWQ: "gemm"
	ZeroPoint        bool   // AWQ
}

// Checkpoint is an opened checkpoint directory whose weights can be read as float32, the
// quantized linears dequantized with the loaders' formulas.
type Checkpoint struct {
	model  *safetensors.Model
	config QuantConfig
	// quantized module prefixes (those with a .qweight tensor)
	modules map[string]bool
	names   []string
}

// Open opens the checkpoint in dir. GPTQ ("gptq" v1 and "gptq_v2", 2/3/4/8 bits) and AWQ
// GEMM checkpoints are recognized by the quantization_config of config.json (or by
// quantize_config.json / quant_config.json); any other checkpoint is read as unquantized.
func Open(dir string) (*Checkpoint, error) {
	qc, err := readQuantConfig(dir)
	if err != nil {
		return nil, err
	}
	m, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{model: m, config: qc, modules: map[string]bool{}}
	seen := map[string]bool{}
	for _, t := range m.Tensors() {
		name := t.Name
		if qc.Method != "" {
			if prefix, ok := strings.CutSuffix(name, ".qweight"); ok {
				c.modules[prefix] = true
			}
		}
		seen[name] = true
	}
	for name := range seen {
		prefix, suffix := splitName(name)
		if c.modules[prefix] {
			switch suffix {
			case "qweight":
				c.names = append(c.names, prefix+".weight")
				continue
			case "qzeros", "scales", "g_idx":
				continue
			}
		}
		c.names = append(c.names, name)
	}
	sort.Strings(c.names)
	return c, nil
}

func splitName(name string) (prefix, suffix string) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

func readQuantConfig(dir string) (QuantConfig, error) {
	var raw map[string]json.RawMessage
	if js, err := os.ReadFile(filepath.Join(dir, "config.json")); err == nil {
		var cfg struct {
			QC map[string]json.RawMessage `json:"quantization_config"`
		}
		if err := json.Unmarshal(js, &cfg); err != nil {
			return QuantConfig{}, fmt.Errorf("%w: %s/config.json: %v", ErrFormat, dir, err)
		}
		raw = cfg.QC
	} else if !errors.Is(err, os.ErrNotExist) {
		return QuantConfig{}, err
	}
	for _, name := range []string{"quantize_config.json", "quant_config.json"} {
		if raw != nil {
			break
		}
		js, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return QuantConfig{}, err
		}
		if err := json.Unmarshal(js, &raw); err != nil {
			return QuantConfig{}, fmt.Errorf("%w: %s/%s: %v", ErrFormat, dir, name, err)
		}
	}
	if raw == nil {
		return QuantConfig{}, nil
	}
	get := func(dst any, keys ...string) bool {
		for _, k := range keys {
			if v, ok := raw[k]; ok && !bytes.Equal(v, []byte("null")) {
				return json.Unmarshal(v, dst) == nil
			}
		}
		return false
	}
	var qc QuantConfig
	var method string
	get(&method, "quant_method", "method")
	if !get(&qc.Bits, "bits", "w_bit") {
		return qc, fmt.Errorf("%w: %s: quantization config without bits", ErrFormat, dir)
	}
	if !get(&qc.GroupSize, "group_size", "q_group_size") {
		return qc, fmt.Errorf("%w: %s: quantization config without group_size", ErrFormat, dir)
	}
	switch strings.ToLower(method) {
	case "gptq", "":
		if method == "" && raw["zero_point"] != nil {
			method = "awq"
			break
		}
		qc.Method = GPTQ
		qc.Sym = true // AutoGPTQ's assumption when sym is missing
		get(&qc.Sym, "sym")
		get(&qc.DescAct, "desc_act")
		qc.CheckpointFormat = FormatGPTQ
		get(&qc.CheckpointFormat, "checkpoint_format", "format")
		if qc.CheckpointFormat != FormatGPTQ && qc.CheckpointFormat != FormatGPTQv2 {
			return qc, fmt.Errorf("%w: %s: GPTQ checkpoint_format %q", ErrFormat, dir, qc.CheckpointFormat)
		}
		switch qc.Bits {
		case 2, 3, 4, 8:
		default:
			return qc, fmt.Errorf("%w: %s: GPTQ with %d bits", ErrFormat, dir, qc.Bits)
		}
		// Groups are counted by dividing by the group size: only -1 (per channel) or positive.
		if qc.GroupSize == 0 || qc.GroupSize < -1 {
			return qc, fmt.Errorf("%w: %s: GPTQ group_size %d", ErrFormat, dir, qc.GroupSize)
		}
		return qc, nil
	}
	if strings.ToLower(method) != "awq" {
		return qc, fmt.Errorf("%w: %s: quant_method %q", ErrFormat, dir, method)
	}
	qc.Method = AWQ
	qc.Version = "gemm"
	get(&qc.Version, "version")
	qc.Version = strings.ToLower(qc.Version)
	qc.ZeroPoint = true
	get(&qc.ZeroPoint, "zero_point")
	if qc.Version != "gemm" || !qc.ZeroPoint || qc.Bits != 4 || qc.GroupSize <= 0 {
		return qc, fmt.Errorf("%w: %s: AWQ version %q, zero_point %v, %d bits, group %d (only 4-bit GEMM with zero points is read)",
			ErrFormat, dir, qc.Version, qc.ZeroPoint, qc.Bits, qc.GroupSize)
	}
	return qc, nil
}

// Config returns the quantization settings (Method "" for an unquantized checkpoint).
func (c *Checkpoint) Config() QuantConfig { return c.config }

// Model returns the underlying safetensors checkpoint.
func (c *Checkpoint) Model() *safetensors.Model { return c.model }

// Names returns the names of the model's tensors as in the unquantized model: each
// quantized linear appears as prefix.weight instead of its qweight/qzeros/scales/g_idx.
func (c *Checkpoint) Names() []string { return c.names }

// IsQuantized reports whether name (a ".weight" name) is a quantized linear's weight.
func (c *Checkpoint) IsQuantized(name string) bool {
	prefix, ok := strings.CutSuffix(name, ".weight")
	return ok && c.modules[prefix]
}

// Float32 returns a tensor and its shape as float32: the dequantized [out, in] weight for a
// quantized linear's name.weight, the exact values of any other floating-point tensor. The
// language model's tensors of a multimodal checkpoint are found under the text model's names
// too (hfmodel.LanguageModelNames), as transformer.SafetensorsSource finds them.
func (c *Checkpoint) Float32(name string) ([]float32, []int64, error) {
	if _, ok := c.model.Lookup(name); !ok && !c.IsQuantized(name) {
		for _, alt := range hfmodel.LanguageModelNames(name) {
			if _, ok := c.model.Lookup(alt); ok || c.IsQuantized(alt) {
				name = alt
				break
			}
		}
	}
	if c.IsQuantized(name) {
		l, err := c.Linear(strings.TrimSuffix(name, ".weight"))
		if err != nil {
			return nil, nil, err
		}
		return l.Dequantize(), []int64{int64(l.Rows), int64(l.Cols)}, nil
	}
	t, ok := c.model.Lookup(name)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q in %s", safetensors.ErrNotFound, name, c.model.Dir())
	}
	data, err := c.model.ReadFloat32(name)
	if err != nil {
		return nil, nil, err
	}
	return data, append([]int64(nil), t.Shape...), nil
}

// Linear decodes the quantized linear with the given module prefix. Zero points are the
// values the loaders use: v1 zeros are the stored code + 1 (so a stored 15 of 4 bits is 16,
// which Linear represents faithfully only up to 255: Zeros holds the decoded value).
func (c *Checkpoint) Linear(prefix string) (*Linear, error) {
	if !c.modules[prefix] {
		return nil, fmt.Errorf("%w: %q is not a quantized linear", safetensors.ErrNotFound, prefix)
	}
	qw, qwShape, err := c.int32Tensor(prefix + ".qweight")
	if err != nil {
		return nil, err
	}
	qz, qzShape, err := c.int32Tensor(prefix + ".qzeros")
	if err != nil {
		return nil, err
	}
	scales, err := c.model.ReadFloat32(prefix + ".scales")
	if err != nil {
		return nil, err
	}
	st, _ := c.model.Lookup(prefix + ".scales")
	if len(st.Shape) != 2 {
		return nil, fmt.Errorf("%w: %s.scales has shape %v", ErrFormat, prefix, st.Shape)
	}
	G, rows := int(st.Shape[0]), int(st.Shape[1])
	b := c.config.Bits
	l := &Linear{Name: prefix, Rows: rows, Bits: b, GroupSize: c.config.GroupSize, Scales: scales}
	if c.config.Method == AWQ {
		if len(qwShape) != 2 || int(qwShape[1])*8 != rows || len(qzShape) != 2 || int(qzShape[0]) != G || int(qzShape[1])*8 != rows {
			return nil, fmt.Errorf("%w: %s: AWQ qweight %v, qzeros %v, scales %v", ErrFormat, prefix, qwShape, qzShape, st.Shape)
		}
		l.Cols = int(qwShape[0])
		if l.Cols != G*l.GroupSize {
			return nil, fmt.Errorf("%w: %s: %d inputs in %d groups of %d", ErrFormat, prefix, l.Cols, G, l.GroupSize)
		}
		t := unpackAWQ(qw, l.Cols, rows) // [in][out]
		l.QWeight = make([]uint8, rows*l.Cols)
		for k := range l.Cols {
			for o := range rows {
				l.QWeight[o*l.Cols+k] = t[k*rows+o]
			}
		}
		l.Zeros = unpackAWQ(qz, G, rows)
	} else {
		if len(qwShape) != 2 || int(qwShape[1]) != rows || len(qzShape) != 2 || int(qzShape[0]) != G || int(qzShape[1])*32 != rows*b {
			return nil, fmt.Errorf("%w: %s: GPTQ qweight %v, qzeros %v, scales %v", ErrFormat, prefix, qwShape, qzShape, st.Shape)
		}
		if int(qwShape[0])*32%b != 0 {
			return nil, fmt.Errorf("%w: %s: qweight rows %d for %d bits", ErrFormat, prefix, qwShape[0], b)
		}
		l.Cols = int(qwShape[0]) * 32 / b
		l.QWeight = unpackGPTQWeight(qw, rows, l.Cols, b)
		zeros := unpackRows(qz, G, rows, b)
		l.Zeros = make([]uint8, len(zeros))
		for i, z := range zeros {
			if c.config.CheckpointFormat == FormatGPTQ {
				z++ // v1 stores zero−1; loaders add 1 after masking
			}
			if z > 255 {
				return nil, fmt.Errorf("%w: %s: zero point %d", ErrFormat, prefix, z)
			}
			l.Zeros[i] = uint8(z)
		}
		if _, ok := c.model.Lookup(prefix + ".g_idx"); ok {
			gi, giShape, err := c.int32Tensor(prefix + ".g_idx")
			if err != nil {
				return nil, err
			}
			if len(giShape) != 1 || int(giShape[0]) != l.Cols {
				return nil, fmt.Errorf("%w: %s.g_idx has shape %v for %d inputs", ErrFormat, prefix, giShape, l.Cols)
			}
			l.GIdx = make([]int32, l.Cols)
			for k, g := range gi {
				if int32(g) < 0 || int(g) >= G {
					return nil, fmt.Errorf("%w: %s.g_idx[%d] = %d of %d groups", ErrFormat, prefix, k, int32(g), G)
				}
				l.GIdx[k] = int32(g)
			}
		} else if l.GroupSize == -1 {
			if G != 1 {
				return nil, fmt.Errorf("%w: %s: %d groups for per-channel quantization", ErrFormat, prefix, G)
			}
		} else if G != (l.Cols+l.GroupSize-1)/l.GroupSize {
			return nil, fmt.Errorf("%w: %s: %d groups for %d inputs of group size %d", ErrFormat, prefix, G, l.Cols, l.GroupSize)
		}
	}
	if _, ok := c.model.Lookup(prefix + ".bias"); ok {
		if l.Bias, err = c.model.ReadFloat32(prefix + ".bias"); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (c *Checkpoint) int32Tensor(name string) ([]uint32, []int64, error) {
	t, ok := c.model.Lookup(name)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q in %s", safetensors.ErrNotFound, name, c.model.Dir())
	}
	if t.DType != safetensors.I32 && t.DType != safetensors.U32 {
		return nil, nil, fmt.Errorf("%w: %s has dtype %s, want int32", ErrFormat, name, t.DType)
	}
	raw, err := c.model.ReadRaw(name)
	if err != nil {
		return nil, nil, err
	}
	v, err := bytesInt32(raw)
	return v, t.Shape, err
}

// Close closes the checkpoint's files.
func (c *Checkpoint) Close() error { return c.model.Close() }
