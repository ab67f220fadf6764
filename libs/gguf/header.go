package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"quantfleet.dev/libs/fault"

	"quantfleet.dev/libs/ggml"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrTruncated reports a file that ends before the data its header describes.
	ErrTruncated = errors.New("gguf: truncated file")
	// ErrBadMagic reports a file that does not start with "GGUF".
	ErrBadMagic = errors.New("gguf: bad magic")
	// ErrVersion reports an unsupported GGUF version (or a big-endian file).
	ErrVersion = errors.New("gguf: unsupported version")
	// ErrCorrupt reports an inconsistent header in a file being read.
	ErrCorrupt = fault.New(fault.ErrBadInput, "gguf: corrupt file")
	// ErrInvalid reports a header that cannot be written.
	ErrInvalid = errors.New("gguf: invalid header")
	// ErrNotFound reports a tensor that is not in the file.
	ErrNotFound = errors.New("gguf: tensor not found")
)

const (
	// Magic is the file magic "GGUF".
	Magic = "GGUF"
	// Version is the GGUF version this package writes and the newest it reads.
	Version = 3
	// Alignment is the default (and the only written) data alignment.
	Alignment = 32
	// KeyAlignment is the optional key overriding Alignment.
	KeyAlignment = "general.alignment"
	// MaxNameLen is GGML_MAX_NAME: tensor names must be shorter.
	MaxNameLen = 64
	// MaxDims is GGML_MAX_DIMS.
	MaxDims = 4
	// MaxStringLen is the longest string the reference reader accepts.
	MaxStringLen = 1 << 30
)

// DataPadding returns the number of zero bytes that follow n bytes of tensor data
// to reach the default alignment.
func DataPadding(n uint64) uint64 { return padding(n, Alignment) }

func padding(n, align uint64) uint64 { return (align - n%align) % align }

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name string
	// Dims in ggml order: Dims[0] (ne[0]) is the contiguous dimension, the last of a torch shape.
	Dims []uint64
	Type ggml.Type
	// Offset of the data relative to the start of the data section.
	Offset uint64
}

// NumElements returns the product of Dims.
func (t TensorInfo) NumElements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Size returns the byte size of the tensor data: ne[0]/block size × type size × the other dims.
func (t TensorInfo) Size() uint64 {
	if len(t.Dims) == 0 {
		return uint64(t.Type.RowSize(1))
	}
	n := uint64(t.Type.RowSize(int64(t.Dims[0])))
	for _, d := range t.Dims[1:] {
		n *= d
	}
	return n
}

// check validates the tensor's name, dims and type; the size must be representable.
func (t TensorInfo) check() error {
	if len(t.Name) >= MaxNameLen {
		return fmt.Errorf("tensor name %q is %d bytes, must be < %d", t.Name, len(t.Name), MaxNameLen)
	}
	if len(t.Dims) < 1 || len(t.Dims) > MaxDims {
		return fmt.Errorf("tensor %q has %d dimensions, must be 1..%d", t.Name, len(t.Dims), MaxDims)
	}
	if !t.Type.Known() {
		return fmt.Errorf("tensor %q has unknown ggml type %d", t.Name, uint32(t.Type))
	}
	n := uint64(1)
	for i, d := range t.Dims {
		if d > math.MaxInt64 {
			return fmt.Errorf("tensor %q dimension %d is %d, beyond int64", t.Name, i, d)
		}
		hi, lo := bits.Mul64(n, d)
		if hi != 0 || lo > math.MaxInt64 {
			return fmt.Errorf("tensor %q with dims %v has too many elements", t.Name, t.Dims)
		}
		n = lo
	}
	bs := uint64(t.Type.BlockSize())
	if t.Dims[0]%bs != 0 {
		return fmt.Errorf("tensor %q of type %s has %d elements per row, not a multiple of block size %d",
			t.Name, t.Type, t.Dims[0], bs)
	}
	if hi, lo := bits.Mul64(n/bs, uint64(t.Type.TypeSize())); hi != 0 || lo > math.MaxInt64 {
		return fmt.Errorf("tensor %q with dims %v has a byte size beyond int64", t.Name, t.Dims)
	}
	return nil
}

// Header is the metadata of a GGUF file: its key/value pairs and tensor infos, in file order.
type Header struct {
	KV      []KV
	Tensors []TensorInfo
}

// Get returns the value of key.
func (h *Header) Get(key string) (any, bool) {
	for _, kv := range h.KV {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Set removes key if present and appends it with value, as gguf_set_val_* does; so a set
// key always ends up last.
func (h *Header) Set(key string, value any) {
	h.Remove(key)
	h.KV = append(h.KV, KV{Key: key, Value: value})
}

// Remove deletes key (every occurrence) and reports whether it was present.
func (h *Header) Remove(key string) bool {
	found := false
	kept := h.KV[:0]
	for _, kv := range h.KV {
		if kv.Key == key {
			found = true
			continue
		}
		kept = append(kept, kv)
	}
	clear(h.KV[len(kept):])
	h.KV = kept
	return found
}

// Tensor returns the info of the named tensor.
func (h *Header) Tensor(name string) (TensorInfo, bool) {
	for _, t := range h.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// Alignment returns the data alignment: general.alignment if present (it must be a
// UINT32 power of two), else 32.
func (h *Header) Alignment() (uint64, error) {
	v, ok := h.Get(KeyAlignment)
	if !ok {
		return Alignment, nil
	}
	a, ok := v.(uint32)
	if !ok {
		return 0, fmt.Errorf("%w: %s has type %T, must be uint32", ErrInvalid, KeyAlignment, v)
	}
	if a == 0 || a&(a-1) != 0 {
		return 0, fmt.Errorf("%w: %s is %d, not a power of 2", ErrInvalid, KeyAlignment, a)
	}
	return uint64(a), nil
}

// Layout sets every tensor's Offset to the running sum of the previous tensors' sizes,
// each padded to the alignment, which is the only layout readers accept.
func (h *Header) Layout() error {
	align, err := h.Alignment()
	if err != nil {
		return err
	}
	var off uint64
	for i := range h.Tensors {
		h.Tensors[i].Offset = off
		n := h.Tensors[i].Size()
		off += n + padding(n, align)
	}
	return nil
}

// Validate checks that the header can be written and read back: non-empty unique keys,
// supported value types, a valid alignment, unique tensor names shorter than 64 bytes,
// 1..4 dims, ne[0] a multiple of the block size, and offsets as Layout sets them.
func (h *Header) Validate() error {
	align, err := h.Alignment()
	if err != nil {
		return err
	}
	keys := make(map[string]bool, len(h.KV))
	for i, kv := range h.KV {
		if kv.Key == "" {
			return fmt.Errorf("%w: key %d is empty", ErrInvalid, i)
		}
		if keys[kv.Key] {
			return fmt.Errorf("%w: duplicate key %q", ErrInvalid, kv.Key)
		}
		keys[kv.Key] = true
		if _, _, err := ValueTypeOf(kv.Value); err != nil {
			return fmt.Errorf("key %q: %w", kv.Key, err)
		}
		if err := checkStrings(kv.Value); err != nil {
			return fmt.Errorf("%w: key %q: %v", ErrInvalid, kv.Key, err)
		}
	}
	names := make(map[string]bool, len(h.Tensors))
	var off uint64
	for _, t := range h.Tensors {
		if err := t.check(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if names[t.Name] {
			return fmt.Errorf("%w: duplicate tensor %q", ErrInvalid, t.Name)
		}
		names[t.Name] = true
		if t.Offset != off {
			return fmt.Errorf("%w: tensor %q has offset %d, expected %d (call Layout)", ErrInvalid, t.Name, t.Offset, off)
		}
		n := t.Size()
		off += n + padding(n, align)
	}
	return nil
}

func checkStrings(v any) error {
	switch v := v.(type) {
	case string:
		if len(v) > MaxStringLen {
			return fmt.Errorf("string of %d bytes exceeds %d", len(v), MaxStringLen)
		}
	case []string:
		for _, s := range v {
			if len(s) > MaxStringLen {
				return fmt.Errorf("string of %d bytes exceeds %d", len(s), MaxStringLen)
			}
		}
	}
	return nil
}

// MarshalBinary encodes the header: magic, version 3, counts, KVs, tensor infos and the
// zero padding that aligns the start of the data section. It validates the header first.
func (h *Header) MarshalBinary() ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	align, _ := h.Alignment()
	b := make([]byte, 0, 4096)
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint32(b, Version)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(h.Tensors)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(h.KV)))
	for _, kv := range h.KV {
		b = appendString(b, kv.Key)
		b = appendValue(b, kv.Value)
	}
	for _, t := range h.Tensors {
		b = appendString(b, t.Name)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(t.Dims)))
		for _, d := range t.Dims {
			b = binary.LittleEndian.AppendUint64(b, d)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(t.Type))
		b = binary.LittleEndian.AppendUint64(b, t.Offset)
	}
	return append(b, make([]byte, padding(uint64(len(b)), align))...), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// appendValue encodes a value already checked by ValueTypeOf: type, then the value
// (for arrays: element type, count, elements).
func appendValue(b []byte, v any) []byte {
	t, et, _ := ValueTypeOf(v)
	b = binary.LittleEndian.AppendUint32(b, uint32(t))
	if t == TypeArray {
		b = binary.LittleEndian.AppendUint32(b, uint32(et))
	}
	le := binary.LittleEndian
	switch v := v.(type) {
	case uint8:
		b = append(b, v)
	case int8:
		b = append(b, byte(v))
	case uint16:
		b = le.AppendUint16(b, v)
	case int16:
		b = le.AppendUint16(b, uint16(v))
	case uint32:
		b = le.AppendUint32(b, v)
	case int32:
		b = le.AppendUint32(b, uint32(v))
	case float32:
		b = le.AppendUint32(b, math.Float32bits(v))
	case bool:
		b = append(b, boolByte(v))
	case string:
		b = appendString(b, v)
	case uint64:
		b = le.AppendUint64(b, v)
	case int64:
		b = le.AppendUint64(b, uint64(v))
	case float64:
		b = le.AppendUint64(b, math.Float64bits(v))
	case []uint8:
		b = le.AppendUint64(b, uint64(len(v)))
		b = append(b, v...)
	case []int8:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = append(b, byte(x))
		}
	case []uint16:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint16(b, x)
		}
	case []int16:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint16(b, uint16(x))
		}
	case []uint32:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint32(b, x)
		}
	case []int32:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint32(b, uint32(x))
		}
	case []float32:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint32(b, math.Float32bits(x))
		}
	case []bool:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = append(b, boolByte(x))
		}
	case []string:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = appendString(b, x)
		}
	case []uint64:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint64(b, x)
		}
	case []int64:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint64(b, uint64(x))
		}
	case []float64:
		b = le.AppendUint64(b, uint64(len(v)))
		for _, x := range v {
			b = le.AppendUint64(b, math.Float64bits(x))
		}
	}
	return b
}
