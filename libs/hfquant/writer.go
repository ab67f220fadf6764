package hfquant

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/x448/float16"

	"quantfleet.dev/libs/atomicfile"
	"quantfleet.dev/libs/safetensors"
)

// Options describe the checkpoint to write.
type Options struct {
	Method Method
	Bits   int
	// GroupSize is the quantization group size, or -1 for per-channel (GPTQ only).
	GroupSize int
	// GPTQ settings recorded in quantization_config.
	Sym            bool
	DescAct        bool
	DampPercent    float64
	TrueSequential bool
	StaticGroups   bool
	// CheckpointFormat is FormatGPTQ (default) or FormatGPTQv2.
	CheckpointFormat string
	// ModulesInBlockToQuantize, if set, lists the quantized linears of a decoder block
	// (e.g. [["self_attn.k_proj", ...], ["mlp.down_proj"]]); loaders then leave the others dense.
	ModulesInBlockToQuantize [][]string
	// ModulesToNotConvert lists AWQ linears left dense (null when empty).
	ModulesToNotConvert []string

	// SourceDir is the original model directory: config.json is extended with the
	// quantization_config, and tokenizer, generation and other non-weight files are copied.
	SourceDir string
	// DType, if set (e.g. "float16"), replaces the model dtype in config.json. AWQ kernels of
	// vLLM need float16 activations; GPTQ's exllama kernel (asymmetric or 2/3-bit) too.
	DType string
	// MaxShardSize splits the weights into shards of at most this many bytes (a larger
	// tensor gets a shard of its own). 0 means DefaultMaxShardSize.
	MaxShardSize int64
	// Quantizer names the producing tool for the config's meta, e.g. "quantfleet:0.1.0".
	Quantizer string
	// Meta adds entries to the config's meta object (GPTQ), e.g. the damping used per module.
	Meta map[string]any
}

func (o *Options) validate() error {
	switch o.Method {
	case GPTQ:
		switch o.Bits {
		case 2, 3, 4, 8:
		default:
			return fmt.Errorf("%w: GPTQ with %d bits", ErrOptions, o.Bits)
		}
		if o.CheckpointFormat == "" {
			o.CheckpointFormat = FormatGPTQ
		}
		if o.CheckpointFormat != FormatGPTQ && o.CheckpointFormat != FormatGPTQv2 {
			return fmt.Errorf("%w: checkpoint format %q", ErrOptions, o.CheckpointFormat)
		}
		if o.GroupSize == 0 || o.GroupSize < -1 {
			return fmt.Errorf("%w: group size %d", ErrOptions, o.GroupSize)
		}
	case AWQ:
		if o.Bits != 4 {
			return fmt.Errorf("%w: the AWQ GEMM format holds 4-bit weights, not %d", ErrOptions, o.Bits)
		}
		if o.GroupSize <= 0 {
			return fmt.Errorf("%w: AWQ group size %d", ErrOptions, o.GroupSize)
		}
	default:
		return fmt.Errorf("%w: quant method %q", ErrOptions, o.Method)
	}
	if o.MaxShardSize == 0 {
		o.MaxShardSize = DefaultMaxShardSize
	}
	if o.MaxShardSize < 0 {
		return fmt.Errorf("%w: max shard size %d", ErrOptions, o.MaxShardSize)
	}
	return nil
}

// QuantizationConfig returns the quantization_config object written into config.json and
// quantize_config.json.
func (o *Options) QuantizationConfig() map[string]any {
	if o.Method == AWQ {
		var skip any
		if len(o.ModulesToNotConvert) > 0 {
			skip = o.ModulesToNotConvert
		}
		return map[string]any{
			"quant_method": "awq", "zero_point": true, "group_size": o.GroupSize, "bits": o.Bits,
			"version": "gemm", "modules_to_not_convert": skip,
		}
	}
	meta := map[string]any{
		"damp_percent": o.DampPercent, "true_sequential": o.TrueSequential, "static_groups": o.StaticGroups,
	}
	if o.Quantizer != "" {
		meta["quantizer"] = []string{o.Quantizer}
	}
	for k, v := range o.Meta {
		meta[k] = v
	}
	c := map[string]any{
		"quant_method": "gptq", "bits": o.Bits, "group_size": o.GroupSize, "desc_act": o.DescAct,
		"sym": o.Sym, "lm_head": false, "checkpoint_format": o.CheckpointFormat,
		"damp_percent": o.DampPercent, "true_sequential": o.TrueSequential,
		"static_groups": o.StaticGroups, "pack_dtype": "int32", "meta": meta,
	}
	if o.ModulesInBlockToQuantize != nil {
		c["modules_in_block_to_quantize"] = o.ModulesInBlockToQuantize
	}
	return c
}

// Writer writes a checkpoint directory. Tensors are streamed to temporary shard files as
// they are added, so memory stays at one tensor; Close writes the final shards, the index and
// the configuration files.
type Writer struct {
	dir    string
	opts   Options
	shards []*shard
	names  map[string]bool
	closed bool
}

type shard struct {
	tmp     *os.File
	buf     *bufio.Writer
	size    int64
	tensors []tensorEntry
}

type tensorEntry struct {
	name  string
	dtype safetensors.DType
	shape []int64
	off   int64 // in the temporary file
	size  int64
}

// Create starts a checkpoint in dir (created if needed; files of the same names are
// replaced).
func Create(dir string, opts Options) (*Writer, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &Writer{dir: dir, opts: opts, names: map[string]bool{}}, nil
}

// AddLinear packs and adds the tensors of a quantized linear: for GPTQ qweight, qzeros,
// scales and g_idx; for AWQ qweight, qzeros and scales; and the bias if any.
func (w *Writer) AddLinear(l *Linear) error {
	if err := l.check(); err != nil {
		return err
	}
	o := &w.opts
	if l.Bits != o.Bits || l.GroupSize != o.GroupSize {
		return fmt.Errorf("%w: %s has %d bits, group %d; the checkpoint %d bits, group %d", ErrShape, l.Name, l.Bits, l.GroupSize, o.Bits, o.GroupSize)
	}
	b := l.Bits
	G := l.groups()
	if o.Method == GPTQ {
		if l.Cols*b%32 != 0 || l.Rows*b%32 != 0 {
			return fmt.Errorf("%w: %s: GPTQ packs %d-bit codes of %d inputs and %d outputs into int32 words; both must be multiples of %d",
				ErrShape, l.Name, b, l.Cols, l.Rows, 32/gcd(b, 32))
		}
		if !o.DescAct {
			for k := range l.Cols {
				if want := k / max(l.GroupSize, 1); l.GroupSize != -1 && l.groupOf(k) != want || l.GroupSize == -1 && l.groupOf(k) != 0 {
					return fmt.Errorf("%w: %s has an act-order g_idx but desc_act is false", ErrOptions, l.Name)
				}
			}
		}
		zeros := make([]uint32, len(l.Zeros))
		for i, z := range l.Zeros {
			zeros[i] = uint32(z)
			if o.CheckpointFormat == FormatGPTQ {
				if z == 0 {
					return fmt.Errorf("%w: %s group %d row %d has zero point 0, which GPTQ v1 (zero−1) cannot store; quantize with zero points ≥ 1 or write gptq_v2",
						ErrZeroPoint, l.Name, i/l.Rows, i%l.Rows)
				}
				zeros[i] = uint32(z) - 1
			}
		}
		gidx := make([]byte, 4*l.Cols)
		for k := range l.Cols {
			binary.LittleEndian.PutUint32(gidx[4*k:], uint32(l.groupOf(k)))
		}
		ts := []struct {
			suffix string
			dtype  safetensors.DType
			shape  []int64
			data   []byte
		}{
			{".qweight", safetensors.I32, []int64{int64(l.Cols * b / 32), int64(l.Rows)}, int32Bytes(packGPTQWeight(l.QWeight, l.Rows, l.Cols, b))},
			{".qzeros", safetensors.I32, []int64{int64(G), int64(l.Rows * b / 32)}, int32Bytes(packRows(zeros, G, l.Rows, b))},
			{".scales", safetensors.F16, []int64{int64(G), int64(l.Rows)}, encodeFloat32(safetensors.F16, l.Scales)},
			{".g_idx", safetensors.I32, []int64{int64(l.Cols)}, gidx},
		}
		for _, t := range ts {
			if err := w.AddTensor(l.Name+t.suffix, t.dtype, t.shape, t.data); err != nil {
				return err
			}
		}
	} else {
		if l.GIdx != nil {
			for k := range l.Cols {
				if l.groupOf(k) != k/l.GroupSize {
					return fmt.Errorf("%w: %s: AWQ has no g_idx, groups must be contiguous", ErrShape, l.Name)
				}
			}
		}
		if l.Cols%l.GroupSize != 0 || l.Rows%8 != 0 {
			return fmt.Errorf("%w: %s: AWQ GEMM needs inputs (%d) a multiple of the group size %d and outputs (%d) a multiple of 8",
				ErrShape, l.Name, l.Cols, l.GroupSize, l.Rows)
		}
		// qweight [in][out/8]: transpose the codes to [in][out] first.
		t := make([]uint8, l.Rows*l.Cols)
		for o := range l.Rows {
			for k := range l.Cols {
				t[k*l.Rows+o] = l.QWeight[o*l.Cols+k]
			}
		}
		if err := w.AddTensor(l.Name+".qweight", safetensors.I32, []int64{int64(l.Cols), int64(l.Rows / 8)}, int32Bytes(packAWQ(t, l.Cols, l.Rows))); err != nil {
			return err
		}
		if err := w.AddTensor(l.Name+".qzeros", safetensors.I32, []int64{int64(G), int64(l.Rows / 8)}, int32Bytes(packAWQ(l.Zeros, G, l.Rows))); err != nil {
			return err
		}
		if err := w.AddTensor(l.Name+".scales", safetensors.F16, []int64{int64(G), int64(l.Rows)}, encodeFloat32(safetensors.F16, l.Scales)); err != nil {
			return err
		}
	}
	if l.Bias != nil {
		return w.AddTensor(l.Name+".bias", safetensors.F16, []int64{int64(l.Rows)}, encodeFloat32(safetensors.F16, l.Bias))
	}
	return nil
}

// AddFloat32 adds a tensor given as float32 values, stored as dtype (F32, F16 or BF16,
// rounded to nearest even).
func (w *Writer) AddFloat32(name string, dtype safetensors.DType, shape []int64, data []float32) error {
	if dtype != safetensors.F32 && dtype != safetensors.F16 && dtype != safetensors.BF16 {
		return fmt.Errorf("%w: cannot store %s as %s", ErrOptions, name, dtype)
	}
	return w.AddTensor(name, dtype, shape, encodeFloat32(dtype, data))
}

// CopyTensor adds the named tensor of m unchanged (same dtype and bytes).
func (w *Writer) CopyTensor(m *safetensors.Model, name string) error {
	t, ok := m.Lookup(name)
	if !ok {
		return fmt.Errorf("%w: %q in %s", safetensors.ErrNotFound, name, m.Dir())
	}
	raw, err := m.ReadRaw(name)
	if err != nil {
		return err
	}
	return w.AddTensor(name, t.DType, t.Shape, raw)
}

// AddTensor adds a tensor of raw little-endian data.
func (w *Writer) AddTensor(name string, dtype safetensors.DType, shape []int64, data []byte) error {
	if w.closed {
		return ErrClosed
	}
	if name == "" || name == "__metadata__" || w.names[name] {
		return fmt.Errorf("%w: tensor name %q empty, reserved or already added", ErrOptions, name)
	}
	n := dtype.Size()
	if n == 0 {
		return fmt.Errorf("%w: tensor %s has dtype %q", ErrOptions, name, dtype)
	}
	for _, d := range shape {
		n *= d
	}
	if int64(len(data)) != n {
		return fmt.Errorf("%w: tensor %s has %d bytes for shape %v of %s", ErrShape, name, len(data), shape, dtype)
	}
	sh := w.current(n)
	if sh == nil {
		var err error
		if sh, err = w.newShard(); err != nil {
			return err
		}
	}
	if _, err := sh.buf.Write(data); err != nil {
		return err
	}
	sh.tensors = append(sh.tensors, tensorEntry{name: name, dtype: dtype, shape: append([]int64{}, shape...), off: sh.size, size: n})
	sh.size += n
	w.names[name] = true
	return nil
}

// current returns the shard that takes a tensor of n bytes, or nil if a new one is needed.
func (w *Writer) current(n int64) *shard {
	if len(w.shards) == 0 {
		return nil
	}
	sh := w.shards[len(w.shards)-1]
	if sh.size > 0 && sh.size+n > w.opts.MaxShardSize {
		return nil
	}
	return sh
}

func (w *Writer) newShard() (*shard, error) {
	f, err := os.CreateTemp(w.dir, ".shard-*.tmp")
	if err != nil {
		return nil, err
	}
	sh := &shard{tmp: f, buf: bufio.NewWriterSize(f, 1<<20)}
	w.shards = append(w.shards, sh)
	return sh, nil
}

// Abort removes the temporary files; the directory keeps whatever it had before.
func (w *Writer) Abort() {
	w.closed = true
	for _, sh := range w.shards {
		sh.tmp.Close()
		os.Remove(sh.tmp.Name())
	}
	w.shards = nil
}

// Close writes the shards (model.safetensors, or model-0000i-of-0000n.safetensors with
// model.safetensors.index.json), config.json with the quantization_config,
// quantize_config.json, and copies the source directory's other non-weight files.
func (w *Writer) Close() (err error) {
	if w.closed {
		return ErrClosed
	}
	defer w.Abort()
	if len(w.shards) == 0 {
		return fmt.Errorf("%w: no tensors added", ErrOptions)
	}
	weightMap := map[string]string{}
	var total int64
	n := len(w.shards)
	for i, sh := range w.shards {
		if err := sh.buf.Flush(); err != nil {
			return err
		}
		name := "model.safetensors"
		if n > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
		}
		if err := sh.write(filepath.Join(w.dir, name)); err != nil {
			return err
		}
		for _, t := range sh.tensors {
			weightMap[t.name] = name
			total += t.size
		}
	}
	if n > 1 {
		index := map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}
		if err := writeJSON(filepath.Join(w.dir, safetensors.IndexFile), index); err != nil {
			return err
		}
	} else {
		os.Remove(filepath.Join(w.dir, safetensors.IndexFile))
	}
	return w.writeConfigs()
}

// write writes the shard's final file: tensors ordered by decreasing element size, then name
// (as the safetensors library orders them, which keeps every tensor aligned).
func (sh *shard) write(path string) error {
	ts := append([]tensorEntry(nil), sh.tensors...)
	sort.Slice(ts, func(i, j int) bool {
		if a, b := ts[i].dtype.Size(), ts[j].dtype.Size(); a != b {
			return a > b
		}
		return ts[i].name < ts[j].name
	})
	hdr, err := encodeHeader(ts, map[string]string{"format": "pt"})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if _, err = bw.Write(hdr); err != nil {
		return err
	}
	for _, t := range ts {
		if _, err = io.Copy(bw, io.NewSectionReader(sh.tmp, t.off, t.size)); err != nil {
			return err
		}
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// encodeHeader returns the length-prefixed safetensors header of tensors laid out in order.
func encodeHeader(ts []tensorEntry, metadata map[string]string) ([]byte, error) {
	type entry struct {
		DType       safetensors.DType `json:"dtype"`
		Shape       []int64           `json:"shape"`
		DataOffsets [2]int64          `json:"data_offsets"`
	}
	obj := map[string]any{"__metadata__": metadata}
	var off int64
	for _, t := range ts {
		shape := t.shape
		if shape == nil {
			shape = []int64{}
		}
		obj[t.name] = entry{t.dtype, shape, [2]int64{off, off + t.size}}
		off += t.size
	}
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	js = append(js, bytes.Repeat([]byte{' '}, (8-len(js)%8)%8)...)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	return append(out, js...), nil
}

func (w *Writer) writeConfigs() error {
	qc := w.opts.QuantizationConfig()
	cfg := map[string]any{}
	if w.opts.SourceDir != "" {
		raw, err := os.ReadFile(filepath.Join(w.opts.SourceDir, "config.json"))
		if err != nil {
			return err
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber() // keep numbers as written (1e-05 stays 1e-05)
		if err := dec.Decode(&cfg); err != nil {
			return fmt.Errorf("hfquant: %s/config.json: %w", w.opts.SourceDir, err)
		}
	}
	cfg["quantization_config"] = qc
	if d := w.opts.DType; d != "" {
		_, hasTorch := cfg["torch_dtype"]
		_, hasDType := cfg["dtype"]
		if hasDType {
			cfg["dtype"] = d
		}
		if hasTorch || !hasDType {
			cfg["torch_dtype"] = d
		}
	}
	if err := writeJSON(filepath.Join(w.dir, "config.json"), cfg); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(w.dir, "quantize_config.json"), qc); err != nil {
		return err
	}
	if w.opts.SourceDir == "" {
		return nil
	}
	return copyAuxFiles(w.opts.SourceDir, w.dir)
}

// copyAuxFiles copies the regular (or linked to regular), non-hidden files of src that are neither weights nor
// configurations this package writes: tokenizer files, generation_config.json, chat
// templates, README, license.
func copyAuxFiles(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	skipExt := []string{".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".tmp"}
	skipName := map[string]bool{
		"config.json": true, "quantize_config.json": true, "quant_config.json": true,
		safetensors.IndexFile: true, "pytorch_model.bin.index.json": true,
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || skipName[name] || strings.HasSuffix(name, ".index.json") {
			continue
		}
		// Stat, not the entry's type: a Hugging Face cache snapshot's files are symlinks to its blobs.
		if st, err := os.Stat(filepath.Join(src, name)); err != nil || !st.Mode().IsRegular() {
			continue
		}
		if skip := func() bool {
			for _, ext := range skipExt {
				if strings.HasSuffix(name, ext) {
					return true
				}
			}
			return false
		}(); skip {
			continue
		}
		if err := atomicfile.CopyFile(os.DirFS(src), name, filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(path string, v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(js, '\n'), 0o644)
}

func encodeFloat32(dtype safetensors.DType, data []float32) []byte {
	switch dtype {
	case safetensors.F16:
		out := make([]byte, 2*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint16(out[2*i:], float16.Fromfloat32(v).Bits())
		}
		return out
	case safetensors.BF16:
		out := make([]byte, 2*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint16(out[2*i:], toBF16(v))
		}
		return out
	default:
		out := make([]byte, 4*len(data))
		for i, v := range data {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out
	}
}

// toBF16 rounds to the nearest bfloat16, ties to even (NaN stays a quiet NaN).
func toBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b >> 16 & 1)
	return uint16(b >> 16)
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
