package hfmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/fault"
	"quantfleet.dev/libs/safetensors"
)

// File names of a checkpoint directory.
const (
	ConfigFile           = "config.json"
	GenerationConfigFile = "generation_config.json"
	IndexFile            = safetensors.IndexFile
)

// Model is an opened checkpoint: its configuration and the headers of its safetensors shards.
// Tensor bytes are read on demand by byte range, so a Model over object storage reads only what
// it is asked for.
type Model struct {
	// Name is the model's name for records: the directory base name or the Hub id.
	Name   string
	Config *Config
	// Tensors in the converter's order: shards sorted by file name, names sorted within a shard.
	Tensors []safetensors.Tensor

	fsys   fs.FS
	byName map[string]int
	files  map[string]readerAtFile
}

type readerAtFile interface {
	fs.File
	io.ReaderAt
}

// OpenDir opens a checkpoint directory on the local file system.
func OpenDir(dir string) (*Model, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model path %s is not a directory", dir)
	}
	return Open(os.DirFS(dir), pathBase(dir))
}

func pathBase(dir string) string {
	return path.Base(strings.TrimRight(strings.ReplaceAll(dir, "\\", "/"), "/"))
}

// Open opens the checkpoint held by fsys. The files holding tensors must implement io.ReaderAt
// (os.DirFS files do).
func Open(fsys fs.FS, name string) (*Model, error) {
	raw, err := fs.ReadFile(fsys, ConfigFile)
	if fault.Transient(err) { // storage that may come back, not a bad config
		return nil, fmt.Errorf("%s: %w", ConfigFile, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil, err
	}
	m := &Model{Name: name, Config: cfg, fsys: fsys, byName: map[string]int{}, files: map[string]readerAtFile{}}
	shards, index, err := shardNames(fsys)
	if err != nil {
		return nil, err
	}
	for _, shard := range shards {
		if err := m.addShard(shard); err != nil {
			m.Close()
			return nil, err
		}
	}
	for name, shard := range index {
		i, ok := m.byName[name]
		if !ok || m.Tensors[i].File != shard {
			m.Close()
			return nil, fmt.Errorf("%w: %s lists %q in %s, which does not hold it", safetensors.ErrNotFound, IndexFile, name, shard)
		}
	}
	if err := m.checkTensors(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// checkTensors checks config.json against the tensors present before anyone sizes anything
// by config.json.
func (m *Model) checkTensors() error {
	d, err := m.Config.Dims()
	if err != nil {
		return err
	}
	return d.CheckTensors(m.Tensors)
}

func (m *Model) addShard(shard string) error {
	f, err := m.fsys.Open(shard)
	if err != nil {
		return err
	}
	rf, ok := f.(readerAtFile)
	if !ok {
		f.Close()
		return fmt.Errorf("%s: file system does not support ranged reads", shard)
	}
	m.files[shard] = rf
	st, err := rf.Stat()
	if err != nil {
		return err
	}
	h, err := safetensors.ParseHeader(rf, st.Size())
	if err != nil {
		return fmt.Errorf("%s: %w", shard, err)
	}
	ts := append([]safetensors.Tensor(nil), h.Tensors...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	for _, t := range ts {
		if prev, dup := m.byName[t.Name]; dup {
			return fmt.Errorf("%w: tensor %q appears in %s and %s", safetensors.ErrBadHeader, t.Name, m.Tensors[prev].File, shard)
		}
		t.File = shard
		m.byName[t.Name] = len(m.Tensors)
		m.Tensors = append(m.Tensors, t)
	}
	return nil
}

func shardNames(fsys fs.FS) (shards []string, index map[string]string, err error) {
	raw, err := fs.ReadFile(fsys, IndexFile)
	switch {
	case err == nil:
		var ix struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(raw, &ix); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", safetensors.ErrBadHeader, IndexFile, err)
		}
		set := map[string]bool{}
		for name, shard := range ix.WeightMap {
			if shard == "" || path.Base(shard) != shard {
				return nil, nil, fmt.Errorf("%w: %s maps %q to bad shard name %q", safetensors.ErrBadHeader, IndexFile, name, shard)
			}
			set[shard] = true
		}
		for s := range set {
			shards = append(shards, s)
		}
		if len(shards) == 0 {
			return nil, nil, fmt.Errorf("%w: %s has an empty weight_map", safetensors.ErrBadHeader, IndexFile)
		}
		sort.Strings(shards)
		return shards, ix.WeightMap, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, nil, err
	}
	if _, err := fs.Stat(fsys, "model.safetensors"); err == nil {
		return []string{"model.safetensors"}, nil, nil
	}
	matches, err := fs.Glob(fsys, "*.safetensors")
	if err != nil {
		return nil, nil, err
	}
	if len(matches) == 0 {
		return nil, nil, safetensors.ErrNoWeights
	}
	sort.Strings(matches)
	return matches, nil, nil
}

// FS returns the file system holding the checkpoint.
func (m *Model) FS() fs.FS { return m.fsys }

// Lookup returns the tensor with the given Hugging Face name.
func (m *Model) Lookup(name string) (safetensors.Tensor, bool) {
	i, ok := m.byName[name]
	if !ok {
		return safetensors.Tensor{}, false
	}
	return m.Tensors[i], true
}

// ReadRaw reads one tensor's bytes.
func (m *Model) ReadRaw(t safetensors.Tensor) ([]byte, error) {
	f, ok := m.files[t.File]
	if !ok {
		return nil, fmt.Errorf("%w: %s (shard %q)", safetensors.ErrNotFound, t.Name, t.File)
	}
	buf := make([]byte, t.Size())
	if _, err := f.ReadAt(buf, t.Begin); err != nil {
		return nil, fmt.Errorf("reading tensor %s from %s: %w", t.Name, t.File, err)
	}
	return buf, nil
}

// ReadFloat32 reads one tensor and widens it to float32 exactly.
func (m *Model) ReadFloat32(name string) ([]float32, error) {
	t, ok := m.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s", safetensors.ErrNotFound, name)
	}
	raw, err := m.ReadRaw(t)
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.NumElements())
	if err := safetensors.DecodeFloat32(t.DType, raw, out); err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	return out, nil
}

// ParameterCount is the number of elements of all tensors.
func (m *Model) ParameterCount() int64 {
	var n int64
	for _, t := range m.Tensors {
		n += t.NumElements()
	}
	return n
}

// WeightBytes is the total byte size of the weights.
func (m *Model) WeightBytes() int64 {
	var n int64
	for _, t := range m.Tensors {
		n += t.Size()
	}
	return n
}

// DType returns the dtype of the weights as transformers names it ("bfloat16"): the config's
// dtype when set, else the dtype of the first floating-point matrix.
func (m *Model) DType() string {
	if m.Config.TorchDtype != "" {
		return m.Config.TorchDtype
	}
	for _, t := range m.Tensors {
		if len(t.Shape) >= 2 {
			switch t.DType {
			case safetensors.BF16:
				return "bfloat16"
			case safetensors.F16:
				return "float16"
			case safetensors.F32:
				return "float32"
			}
		}
	}
	return ""
}

// Metadata returns the seed's ModelMetadata for this checkpoint.
func (m *Model) Metadata() domain.ModelMetadata {
	c := m.Config
	return domain.ModelMetadata{
		ModelName:             m.Name,
		Architecture:          c.Architecture,
		HiddenSize:            c.HiddenSize,
		NumLayers:             c.NumLayers,
		NumHeads:              c.NumHeads,
		VocabSize:             c.VocabSize,
		MaxPositionEmbeddings: c.MaxPositionEmbeddings,
		TorchDtype:            m.DType(),
	}
}

// Close releases the shard files.
func (m *Model) Close() error {
	var first error
	for _, f := range m.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	m.files = nil
	return first
}
