package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"quantfleet.dev/libs/fault"
	"sort"
)

// ErrNoWeights reports a checkpoint directory without safetensors files.
var ErrNoWeights = fault.New(fault.ErrBadInput, "safetensors: no safetensors weights")

// IndexFile is the name of the shard index of a sharded checkpoint.
const IndexFile = "model.safetensors.index.json"

// Model is a checkpoint directory: either sharded with model.safetensors.index.json, a single
// model.safetensors, or else every *.safetensors file in the directory.
type Model struct {
	dir     string
	files   []*File // sorted by file name
	tensors []Tensor
	byName  map[string]int
	index   map[string]string // weight_map, nil without an index
}

// OpenModel opens the safetensors checkpoint in dir. Every shard's header is parsed and
// validated; with an index, every name in its weight_map must exist in the named shard.
// A tensor name present in two shards is an error.
func OpenModel(dir string) (*Model, error) {
	shards, index, err := modelShards(dir)
	if err != nil {
		return nil, err
	}
	m := &Model{dir: dir, byName: make(map[string]int), index: index}
	for _, name := range shards {
		f, err := Open(filepath.Join(dir, name))
		if err != nil {
			m.Close()
			return nil, err
		}
		m.files = append(m.files, f)
		for _, t := range f.Header().Tensors {
			if _, dup := m.byName[t.Name]; dup {
				m.Close()
				return nil, fmt.Errorf("%w: tensor %q appears in %s and %s", ErrBadHeader,
					t.Name, m.tensors[m.byName[t.Name]].File, t.File)
			}
			m.byName[t.Name] = len(m.tensors)
			m.tensors = append(m.tensors, t)
		}
	}
	for name, shard := range index {
		i, ok := m.byName[name]
		if !ok || filepath.Base(m.tensors[i].File) != filepath.Base(shard) {
			m.Close()
			return nil, fmt.Errorf("%w: %s lists %q in %s, which does not hold it", ErrNotFound, IndexFile, name, shard)
		}
	}
	return m, nil
}

type indexJSON struct {
	WeightMap map[string]string `json:"weight_map"`
}

func modelShards(dir string) (shards []string, index map[string]string, err error) {
	raw, err := os.ReadFile(filepath.Join(dir, IndexFile))
	switch {
	case err == nil:
		var ix indexJSON
		if err := json.Unmarshal(raw, &ix); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrBadHeader, IndexFile, err)
		}
		if len(ix.WeightMap) == 0 {
			return nil, nil, fmt.Errorf("%w: %s has an empty weight_map", ErrBadHeader, IndexFile)
		}
		set := make(map[string]bool)
		for name, shard := range ix.WeightMap {
			if shard == "" || filepath.Base(shard) != shard {
				return nil, nil, fmt.Errorf("%w: %s maps %q to bad shard name %q", ErrBadHeader, IndexFile, name, shard)
			}
			set[shard] = true
		}
		for s := range set {
			shards = append(shards, s)
		}
		sort.Strings(shards)
		return shards, ix.WeightMap, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
		return []string{"model.safetensors"}, nil, nil
	}
	matches, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return nil, nil, err
	}
	if len(matches) == 0 {
		return nil, nil, fmt.Errorf("%w in %s", ErrNoWeights, dir)
	}
	for _, p := range matches {
		shards = append(shards, filepath.Base(p))
	}
	sort.Strings(shards)
	return shards, nil, nil
}

// Dir returns the checkpoint directory.
func (m *Model) Dir() string { return m.dir }

// Metadata returns the "__metadata__" map of the first shard (nil if absent).
func (m *Model) Metadata() map[string]string {
	if len(m.files) == 0 {
		return nil
	}
	return m.files[0].Header().Metadata
}

// Tensors returns all tensors: shards in sorted file-name order, each in offset order.
// The slice is shared; do not modify it.
func (m *Model) Tensors() []Tensor { return m.tensors }

// Lookup returns the tensor with the given name.
func (m *Model) Lookup(name string) (Tensor, bool) {
	i, ok := m.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return m.tensors[i], true
}

// ReadRaw reads only the byte range of the named tensor from its shard.
func (m *Model) ReadRaw(name string) ([]byte, error) {
	t, ok := m.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, name, m.dir)
	}
	for _, f := range m.files {
		if f.path == t.File {
			return readRange(f.f, t)
		}
	}
	return nil, fmt.Errorf("%w: shard %s of %q is not open", ErrNotFound, t.File, name)
}

// ReadFloat32 reads the named tensor and widens it exactly to float32.
// Only BF16, F16 and F32 tensors can be read this way.
func (m *Model) ReadFloat32(name string) ([]float32, error) {
	t, ok := m.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, name, m.dir)
	}
	if !t.DType.IsFloat() {
		return nil, fmt.Errorf("%w: tensor %q has dtype %s, not a float type convertible to F32", ErrUnsupportedDType, name, t.DType)
	}
	raw, err := m.ReadRaw(name)
	if err != nil {
		return nil, err
	}
	dst := make([]float32, t.NumElements())
	if err := DecodeFloat32(t.DType, raw, dst); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return dst, nil
}

// Close closes all shards.
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
