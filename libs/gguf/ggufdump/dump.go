package ggufdump

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"quantfleet.dev/libs/gguf"
)

// summaryThreshold: gguf_dump.py replaces arrays longer than this by an ArraySummary.
const summaryThreshold = 16

// Dump is the content of a GGUF file as /work/shared/tools/gguf_dump.py reports it:
// every KV (long arrays summarised) and, per tensor, type, shape, offset, size and the
// SHA-256 of its bytes. Reference dumps of llama.cpp's outputs are stored in this form.
type Dump struct {
	Version uint32
	// KV in file order. Values are JSON values: bool, json.Number (Python's text of the
	// int or float), string, []any of those, or ArraySummary; a loaded dump may also hold
	// nil and map[string]any.
	KV      []DumpKV
	Tensors []DumpTensor
}

// DumpKV is one key with its JSON value.
type DumpKV struct {
	Key   string
	Value any
}

// ArraySummary stands for an array of more than 16 elements: its length and the SHA-256
// of Python's json.dumps(list, ensure_ascii=False).
type ArraySummary struct {
	Len    int
	SHA256 string
}

func (s ArraySummary) object() object {
	return object{{"array_len", json.Number(strconv.Itoa(s.Len))}, {"sha256", s.SHA256}}
}

// DumpTensor is one tensor of a Dump.
type DumpTensor struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Shape  []uint64 `json:"shape"`
	Offset uint64   `json:"offset"`
	NBytes uint64   `json:"nbytes"`
	SHA256 string   `json:"sha256"`
}

// Get returns the JSON value of key.
func (d *Dump) Get(key string) (any, bool) {
	for _, kv := range d.KV {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// summarize mirrors gguf_dump.py's summarize.
func summarize(v any) any {
	l, ok := v.([]any)
	if !ok || len(l) <= summaryThreshold {
		return v
	}
	sum := sha256.Sum256(appendPyJSON(nil, l, false, -1, 0))
	return ArraySummary{Len: len(l), SHA256: hex.EncodeToString(sum[:])}
}

// NewDump builds the dump of f, hashing tensor data read from data (the whole file, as
// f was read from it); data nil means the reader f was read from.
func NewDump(f *gguf.File, data io.ReaderAt) (*Dump, error) {
	d := &Dump{Version: f.Version}
	for _, kv := range f.KV {
		d.KV = append(d.KV, DumpKV{Key: pyDecodeReplace(kv.Key), Value: summarize(pyValue(kv.Value))})
	}
	h := sha256.New()
	var err error
	for _, t := range f.Tensors {
		h.Reset()
		sr := io.NewSectionReader(data, f.DataOffset+int64(t.Offset), int64(t.Size()))
		if data == nil {
			if sr, err = f.TensorReader(t.Name); err != nil {
				return nil, err
			}
		}
		if n, err := io.Copy(h, sr); err != nil || n != int64(t.Size()) {
			return nil, fmt.Errorf("gguf: hashing tensor %q: %d of %d bytes: %v", t.Name, n, t.Size(), err)
		}
		d.Tensors = append(d.Tensors, DumpTensor{
			Name:   pyDecodeReplace(t.Name),
			Type:   t.Type.String(),
			Shape:  t.Dims,
			Offset: t.Offset,
			NBytes: t.Size(),
			SHA256: hex.EncodeToString(h.Sum(nil)),
		})
	}
	return d, nil
}

// DumpFile opens the GGUF file at path and dumps it.
func DumpFile(path string) (*Dump, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return NewDump(f, nil)
}

func (d *Dump) object() object {
	kv := make(object, len(d.KV))
	for i, m := range d.KV {
		kv[i] = member{m.Key, m.Value}
	}
	ts := make([]any, len(d.Tensors))
	for i, t := range d.Tensors {
		shape := make([]any, len(t.Shape))
		for j, s := range t.Shape {
			shape[j] = json.Number(strconv.FormatUint(s, 10))
		}
		ts[i] = object{{"name", t.Name}, {"type", t.Type}, {"shape", shape},
			{"offset", json.Number(strconv.FormatUint(t.Offset, 10))},
			{"nbytes", json.Number(strconv.FormatUint(t.NBytes, 10))}, {"sha256", t.SHA256}}
	}
	return object{{"version", json.Number(strconv.FormatUint(uint64(d.Version), 10))}, {"kv", kv}, {"tensors", ts}}
}

// MarshalJSON returns exactly the bytes gguf_dump.py prints for the same file
// (json.dump with indent=1, ensure_ascii=False; no trailing newline).
func (d *Dump) MarshalJSON() ([]byte, error) {
	return appendPyJSON(nil, d.object(), false, 1, 0), nil
}

// UnmarshalJSON loads a dump written by gguf_dump.py (or MarshalJSON), keeping KV order.
// Like Python's json module it accepts NaN, Infinity and -Infinity.
func (d *Dump) UnmarshalJSON(b []byte) error {
	p := &pyParser{s: b}
	v, err := p.parseDocument()
	if err != nil {
		return fmt.Errorf("gguf: loading dump: %w", err)
	}
	top, ok := v.(object)
	if !ok {
		return fmt.Errorf("gguf: loading dump: not a JSON object")
	}
	*d = Dump{}
	for _, m := range top {
		switch m.key {
		case "version":
			n, _ := m.val.(json.Number)
			ver, err := strconv.ParseUint(string(n), 10, 32)
			if err != nil {
				return fmt.Errorf("gguf: loading dump: bad version %v", m.val)
			}
			d.Version = uint32(ver)
		case "kv":
			kv, ok := m.val.(object)
			if !ok {
				return fmt.Errorf("gguf: loading dump: kv is not an object")
			}
			for _, e := range kv {
				d.KV = append(d.KV, DumpKV{Key: e.key, Value: fromLoaded(e.val)})
			}
		case "tensors":
			// The tensor list has a fixed shape: let encoding/json check it.
			var ts []DumpTensor
			if err := json.Unmarshal(appendPyJSON(nil, m.val, false, -1, 0), &ts); err != nil {
				return fmt.Errorf("gguf: loading dump: tensors: %w", err)
			}
			d.Tensors = ts
		}
	}
	return nil
}

// fromLoaded turns a loaded {"array_len", "sha256"} object into an ArraySummary and
// any other object into a map.
func fromLoaded(v any) any {
	switch v := v.(type) {
	case []any:
		for i := range v {
			v[i] = fromLoaded(v[i])
		}
	case object:
		if len(v) == 2 && v[0].key == "array_len" && v[1].key == "sha256" {
			n, ok1 := v[0].val.(json.Number)
			s, ok2 := v[1].val.(string)
			if l, err := strconv.Atoi(string(n)); ok1 && ok2 && err == nil {
				return ArraySummary{Len: l, SHA256: s}
			}
		}
		m := make(map[string]any, len(v))
		for _, e := range v {
			m[e.key] = fromLoaded(e.val)
		}
		return m
	}
	return v
}

// LoadDump reads a JSON dump, such as /work/shared/reference/tiny-llama/Q4_K_M.json.
func LoadDump(path string) (*Dump, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d := new(Dump)
	if err := d.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// CompareDump lists the differences of got from the reference ref, as gguf_dump.py
// --compare prints them: reference KVs missing or different in got (keys in ignoreKV
// skipped; values compared with Python's ==), reference tensors missing or differing in
// type, shape or bytes, and tensors of got not in the reference. Nil means identical.
func CompareDump(ref, got *Dump, ignoreKV []string) []string {
	_, diffs := CompareDumpCount(ref, got, ignoreKV)
	return diffs
}

// CompareDumpCount is CompareDump that also returns the number of reference tensors whose
// type, shape and bytes match.
func CompareDumpCount(ref, got *Dump, ignoreKV []string) (same int, diffs []string) {
	ignore := make(map[string]bool, len(ignoreKV))
	for _, k := range ignoreKV {
		ignore[k] = true
	}
	for _, kv := range ref.KV {
		if ignore[kv.Key] {
			continue
		}
		g, ok := got.Get(kv.Key)
		switch {
		case !ok:
			diffs = append(diffs, "kv missing: "+kv.Key)
		case !pyEqual(g, kv.Value):
			diffs = append(diffs, fmt.Sprintf("kv differs: %s: want %s got %s", kv.Key, pyDumps80(kv.Value), pyDumps80(g)))
		}
	}
	gt := make(map[string]DumpTensor, len(got.Tensors))
	for _, t := range got.Tensors {
		gt[t.Name] = t
	}
	inRef := make(map[string]bool, len(ref.Tensors))
	for _, t := range ref.Tensors {
		inRef[t.Name] = true
		g, ok := gt[t.Name]
		switch {
		case !ok:
			diffs = append(diffs, "tensor missing: "+t.Name)
		case g.Type != t.Type || !equalShape(g.Shape, t.Shape):
			diffs = append(diffs, fmt.Sprintf("tensor %s: want %s %s got %s %s", t.Name, t.Type, pyList(t.Shape), g.Type, pyList(g.Shape)))
		case g.SHA256 != t.SHA256:
			diffs = append(diffs, fmt.Sprintf("tensor %s (%s): bytes differ", t.Name, t.Type))
		default:
			same++
		}
	}
	var extra []string
	for name := range gt {
		if !inRef[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, n := range extra {
		diffs = append(diffs, "tensor not in reference: "+n)
	}
	return same, diffs
}

// pyDumps80 is Python's json.dumps(v)[:80].
func pyDumps80(v any) string {
	s := string(appendPyJSON(nil, v, true, -1, 0))
	if len(s) > 80 { // ensure_ascii output is ASCII: bytes are characters
		s = s[:80]
	}
	return s
}

func pyList(s []uint64) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = strconv.FormatUint(v, 10)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func equalShape(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
