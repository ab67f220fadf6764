// Package safetensors reads and writes the safetensors checkpoint format of Hugging Face:
// an 8-byte little-endian header length, a JSON header describing each tensor, and the raw
// little-endian tensor bytes.
//
// Readers only parse the header; tensor bytes are read on demand with ReadAt, so opening a
// large checkpoint costs a few kilobytes of memory.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"quantfleet.dev/libs/fault"
	"sort"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrTruncated reports a file shorter than its header says.
	ErrTruncated = fault.New(fault.ErrBadInput, "safetensors: truncated file")
	// ErrBadHeader reports a malformed JSON header or an inconsistent tensor entry.
	ErrBadHeader = fault.New(fault.ErrBadInput, "safetensors: bad header")
	// ErrUnsupportedDType reports a dtype the safetensors format does not define,
	// or a conversion this package cannot do exactly.
	ErrUnsupportedDType = fault.New(fault.ErrBadInput, "safetensors: unsupported dtype")
	// ErrOverlap reports two tensors whose byte ranges overlap.
	ErrOverlap = fault.New(fault.ErrBadInput, "safetensors: overlapping tensors")
	// ErrNotFound reports a tensor name that is not in the checkpoint.
	ErrNotFound = fault.New(fault.ErrBadInput, "safetensors: tensor not found")
)

// MaxHeaderSize bounds the JSON header, as the reference implementation does (100 MB).
// It keeps a lying length field from causing a huge allocation.
const MaxHeaderSize = 100_000_000

// DType is a safetensors element type name as stored in the header ("BF16", "F32", ...).
type DType string

// Element types defined by the safetensors format.
const (
	BOOL    DType = "BOOL"
	U8      DType = "U8"
	I8      DType = "I8"
	F8E5M2  DType = "F8_E5M2"
	F8E4M3  DType = "F8_E4M3"
	F8E8M0  DType = "F8_E8M0"
	I16     DType = "I16"
	U16     DType = "U16"
	F16     DType = "F16"
	BF16    DType = "BF16"
	I32     DType = "I32"
	U32     DType = "U32"
	F32     DType = "F32"
	F64     DType = "F64"
	I64     DType = "I64"
	U64     DType = "U64"
	C64     DType = "C64"
	F8E4M3U DType = "F8_E4M3FNUZ"
	F8E5M2U DType = "F8_E5M2FNUZ"
)

var dtypeSizes = map[DType]int64{
	BOOL: 1, U8: 1, I8: 1, F8E5M2: 1, F8E4M3: 1, F8E8M0: 1, F8E4M3U: 1, F8E5M2U: 1,
	I16: 2, U16: 2, F16: 2, BF16: 2,
	I32: 4, U32: 4, F32: 4,
	F64: 8, I64: 8, U64: 8, C64: 8,
}

// Size returns the byte size of one element, or 0 for an unknown dtype.
func (d DType) Size() int64 { return dtypeSizes[d] }

// Known reports whether d is a dtype of the safetensors format.
func (d DType) Known() bool { return dtypeSizes[d] != 0 }

// IsFloat reports whether ReadFloat32/DecodeFloat32 can convert d exactly (BF16, F16, F32).
func (d DType) IsFloat() bool { return d == BF16 || d == F16 || d == F32 }

// Tensor describes one tensor of a safetensors file.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	// Begin and End are absolute byte offsets in File.
	Begin, End int64
	// File is the path of the file holding the tensor (empty for ParseHeader).
	File string
}

// NumElements returns the product of the shape (1 for a scalar).
func (t Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Size returns the byte size of the tensor data.
func (t Tensor) Size() int64 { return t.End - t.Begin }

// Header is a parsed safetensors header.
type Header struct {
	// Tensors sorted by Begin.
	Tensors []Tensor
	// Metadata is the optional "__metadata__" string map (nil if absent).
	Metadata map[string]string
	// DataStart is the absolute offset of the data section (8 + header length).
	DataStart int64
}

type rawEntry struct {
	DType       DType   `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// readFault is a failed header read: a storage failure that may pass keeps its class (the file is
// not to blame), anything else means the file is shorter than it claims.
func readFault(what string, err error) error {
	if fault.Transient(err) {
		return fmt.Errorf("safetensors: %s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrTruncated, what, err)
}

// ParseHeader reads and validates the header of a safetensors file of the given size.
// It checks that the header fits in the file, that every entry has a known dtype, a
// non-negative shape and offsets inside the data section matching elements × dtype size,
// and that no two tensors overlap.
func ParseHeader(r io.ReaderAt, size int64) (*Header, error) {
	if size < 8 {
		return nil, fmt.Errorf("%w: %d bytes, need at least 8", ErrTruncated, size)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, readFault("reading header length", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header length %d exceeds limit %d", ErrBadHeader, n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, fmt.Errorf("%w: header length %d exceeds file size %d", ErrTruncated, n, size)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, readFault("reading header", err)
	}
	h := &Header{DataStart: 8 + int64(n)}
	if err := h.parseJSON(buf, size-h.DataStart); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Header) parseJSON(buf []byte, dataLen int64) error {
	// The reference implementation requires the header to start with '{' and allows
	// trailing spaces as padding.
	if len(buf) == 0 || buf[0] != '{' {
		return fmt.Errorf("%w: header is not a JSON object", ErrBadHeader)
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadHeader, err)
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadHeader, err)
		}
		name, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%w: unexpected token %v", ErrBadHeader, tok)
		}
		if seen[name] {
			return fmt.Errorf("%w: duplicate key %q", ErrBadHeader, name)
		}
		seen[name] = true
		if name == "__metadata__" {
			var md map[string]string
			if err := dec.Decode(&md); err != nil {
				return fmt.Errorf("%w: __metadata__ must map strings to strings: %v", ErrBadHeader, err)
			}
			h.Metadata = md
			continue
		}
		var e rawEntry
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("%w: tensor %q: %v", ErrBadHeader, name, err)
		}
		t, err := e.tensor(name, h.DataStart, dataLen)
		if err != nil {
			return err
		}
		h.Tensors = append(h.Tensors, t)
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadHeader, err)
	}
	// Only padding may follow the object.
	rest := buf[dec.InputOffset():]
	if len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return fmt.Errorf("%w: trailing data after JSON object", ErrBadHeader)
	}
	sort.SliceStable(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	// Empty tensors occupy no bytes and may sit anywhere; compare each non-empty tensor
	// with the previous non-empty one.
	prev := -1
	for i, b := range h.Tensors {
		if b.Size() == 0 {
			continue
		}
		if prev >= 0 {
			if a := h.Tensors[prev]; b.Begin < a.End {
				return fmt.Errorf("%w: %q [%d,%d) and %q [%d,%d)", ErrOverlap,
					a.Name, a.Begin-h.DataStart, a.End-h.DataStart, b.Name, b.Begin-h.DataStart, b.End-h.DataStart)
			}
		}
		prev = i
	}
	return nil
}

func (e *rawEntry) tensor(name string, dataStart, dataLen int64) (Tensor, error) {
	if e.DType == "" {
		return Tensor{}, fmt.Errorf("%w: tensor %q has no dtype", ErrBadHeader, name)
	}
	es := e.DType.Size()
	if es == 0 {
		return Tensor{}, fmt.Errorf("%w: tensor %q has dtype %q", ErrUnsupportedDType, name, e.DType)
	}
	if e.Shape == nil {
		return Tensor{}, fmt.Errorf("%w: tensor %q has no shape", ErrBadHeader, name)
	}
	if len(e.DataOffsets) != 2 {
		return Tensor{}, fmt.Errorf("%w: tensor %q: data_offsets must have 2 entries", ErrBadHeader, name)
	}
	// Element count with overflow detection: the product must stay below the data size.
	nbytes := es
	for _, d := range e.Shape {
		if d < 0 {
			return Tensor{}, fmt.Errorf("%w: tensor %q has negative dimension in shape %v", ErrBadHeader, name, e.Shape)
		}
		if d != 0 && nbytes > math.MaxInt64/d {
			return Tensor{}, fmt.Errorf("%w: tensor %q shape %v is too large", ErrBadHeader, name, e.Shape)
		}
		nbytes *= d
	}
	b, en := e.DataOffsets[0], e.DataOffsets[1]
	if b < 0 || en < b || en > dataLen {
		return Tensor{}, fmt.Errorf("%w: tensor %q data_offsets [%d,%d] outside data section of %d bytes",
			ErrBadHeader, name, b, en, dataLen)
	}
	if en-b != nbytes {
		return Tensor{}, fmt.Errorf("%w: tensor %q has %d data bytes, shape %v of %s needs %d",
			ErrBadHeader, name, en-b, e.Shape, e.DType, nbytes)
	}
	return Tensor{Name: name, DType: e.DType, Shape: e.Shape, Begin: dataStart + b, End: dataStart + en}, nil
}

// File is an open safetensors file.
type File struct {
	f      *os.File
	path   string
	header *Header
	byName map[string]int
}

// Open opens and validates the header of the safetensors file at path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	h, err := ParseHeader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sf := &File{f: f, path: path, header: h, byName: make(map[string]int, len(h.Tensors))}
	for i := range h.Tensors {
		h.Tensors[i].File = path
		sf.byName[h.Tensors[i].Name] = i
	}
	return sf, nil
}

// Header returns the parsed header. Tensor.File is set to the file's path.
func (f *File) Header() *Header { return f.header }

// Lookup returns the tensor with the given name.
func (f *File) Lookup(name string) (Tensor, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return f.header.Tensors[i], true
}

// ReadRaw reads the bytes of the named tensor.
func (f *File) ReadRaw(name string) ([]byte, error) {
	t, ok := f.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, name, f.path)
	}
	return readRange(f.f, t)
}

// ReadAt reads from the underlying file, so a File can be used as an io.ReaderAt.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

func readRange(r io.ReaderAt, t Tensor) ([]byte, error) {
	buf := make([]byte, t.Size())
	if _, err := r.ReadAt(buf, t.Begin); err != nil {
		return nil, fmt.Errorf("safetensors: reading %q from %s: %w", t.Name, t.File, err)
	}
	return buf, nil
}
