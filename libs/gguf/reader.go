package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"

	"quantfleet.dev/libs/ggml"
)

// File is a parsed GGUF file. Tensor data is read on demand.
type File struct {
	Header
	Version uint32
	// DataOffset is the absolute offset of the data section.
	DataOffset int64

	r      io.ReaderAt
	size   int64
	closer io.Closer
	byName map[string]int
}

// Minimum encoded sizes, used to reject counts a file of its size cannot hold.
const (
	minKVSize     = 8 + 1 + 4 + 1     // key length, 1-byte key, type, 1-byte value
	minTensorSize = 8 + 4 + 8 + 4 + 8 // name length, n_dims, one dim, type, offset
)

// Open opens and parses the GGUF file at path. Close releases it.
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
	gf, err := Read(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	gf.closer = f
	return gf, nil
}

// Read parses a GGUF file of the given size from r, as strictly as llama.cpp's gguf.cpp:
// magic, version 2 or 3 (little-endian), counts the file can hold, non-empty unique keys,
// known value types, strings up to 1 GiB inside the file, unique tensor names shorter than
// 64 bytes, 1..4 dims, known ggml types, ne[0] a multiple of the block size, offsets equal
// to the running padded sum, and the data section inside the file.
func Read(r io.ReaderAt, size int64) (*File, error) {
	d := &decoder{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 64<<10), size: size}
	f := &File{r: r, size: size}
	if err := f.parse(d); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) parse(d *decoder) error {
	var magic [4]byte
	if err := d.read(magic[:]); err != nil {
		return fmt.Errorf("%w: reading magic: %v", ErrTruncated, err)
	}
	if string(magic[:]) != Magic {
		return fmt.Errorf("%w: %q, expected %q", ErrBadMagic, magic[:], Magic)
	}
	v, err := d.u32()
	if err != nil {
		return err
	}
	switch {
	case v == 0:
		return fmt.Errorf("%w: version 0", ErrVersion)
	case v&0xFFFF == 0:
		return fmt.Errorf("%w: version %#x; is the file big-endian? only little-endian files are supported", ErrVersion, v)
	case v == 1:
		return fmt.Errorf("%w: GGUF v1 is no longer supported", ErrVersion)
	case v > Version:
		return fmt.Errorf("%w: version %d, newest supported is %d", ErrVersion, v, Version)
	}
	f.Version = v
	nTensors, err := d.u64()
	if err != nil {
		return err
	}
	nKV, err := d.u64()
	if err != nil {
		return err
	}
	if rem := uint64(d.remain()); nTensors > rem/minTensorSize || nKV > rem/minKVSize ||
		nTensors*minTensorSize+nKV*minKVSize > rem {
		return fmt.Errorf("%w: %d tensors and %d key/value pairs cannot fit in %d bytes", ErrCorrupt, nTensors, nKV, d.size)
	}

	f.KV = make([]KV, 0, nKV)
	keys := make(map[string]bool, nKV)
	for i := range nKV {
		key, err := d.str()
		if err != nil {
			return fmt.Errorf("key %d: %w", i, err)
		}
		if key == "" {
			return fmt.Errorf("%w: key %d is empty", ErrCorrupt, i)
		}
		if keys[key] {
			return fmt.Errorf("%w: duplicate key %q", ErrCorrupt, key)
		}
		keys[key] = true
		val, err := d.value(key)
		if err != nil {
			return err
		}
		f.KV = append(f.KV, KV{Key: key, Value: val})
	}
	align, err := f.Alignment()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	f.byName = make(map[string]int, nTensors)
	for i := range nTensors {
		t, err := d.tensorInfo()
		if err != nil {
			return fmt.Errorf("tensor %d: %w", i, err)
		}
		if _, dup := f.byName[t.Name]; dup {
			return fmt.Errorf("%w: duplicate tensor name %q", ErrCorrupt, t.Name)
		}
		f.byName[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	f.DataOffset = d.pos + int64(padding(uint64(d.pos), align))
	var off uint64
	for _, t := range f.Tensors {
		if t.Offset != off {
			return fmt.Errorf("%w: tensor %q has offset %d, expected %d", ErrCorrupt, t.Name, t.Offset, off)
		}
		n := t.Size() // at most MaxInt64, checked by tensorInfo
		if n > math.MaxInt64-off {
			return fmt.Errorf("%w: tensor %q: data section size overflows", ErrCorrupt, t.Name)
		}
		off += n + padding(n, align)
		if off > uint64(math.MaxInt64-f.DataOffset) {
			return fmt.Errorf("%w: tensor %q: data section size overflows", ErrCorrupt, t.Name)
		}
	}
	// Like gguf.cpp, which reads the whole padded data section, require it to be present.
	if len(f.Tensors) > 0 && f.DataOffset+int64(off) > f.size {
		return fmt.Errorf("%w: data section of %d bytes at offset %d extends beyond the file size %d",
			ErrTruncated, off, f.DataOffset, f.size)
	}
	return nil
}

// Lookup returns the info of the named tensor.
func (f *File) Lookup(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// TensorReader returns a reader of the named tensor's bytes.
func (f *File) TensorReader(name string) (*io.SectionReader, error) {
	t, ok := f.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return io.NewSectionReader(f.r, f.DataOffset+int64(t.Offset), int64(t.Size())), nil
}

// TensorData reads the named tensor's bytes.
func (f *File) TensorData(name string) ([]byte, error) {
	sr, err := f.TensorReader(name)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, sr.Size())
	if _, err := io.ReadFull(sr, buf); err != nil {
		return nil, fmt.Errorf("gguf: reading tensor %q: %w", name, err)
	}
	return buf, nil
}

// Close closes the file opened by Open; it does nothing for Read.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	return f.closer.Close()
}

// decoder reads little-endian values sequentially, knowing how many bytes remain so that
// lengths and counts are checked before anything is allocated.
type decoder struct {
	r    *bufio.Reader
	pos  int64
	size int64
	buf  [8]byte
}

func (d *decoder) remain() int64 { return d.size - d.pos }

func (d *decoder) read(p []byte) error {
	if int64(len(p)) > d.remain() {
		return fmt.Errorf("%w: need %d bytes at offset %d, file has %d", ErrTruncated, len(p), d.pos, d.size)
	}
	n, err := io.ReadFull(d.r, p)
	d.pos += int64(n)
	if err != nil {
		return fmt.Errorf("%w: at offset %d: %v", ErrTruncated, d.pos, err)
	}
	return nil
}

func (d *decoder) u8() (uint8, error) {
	err := d.read(d.buf[:1])
	return d.buf[0], err
}

func (d *decoder) u16() (uint16, error) {
	err := d.read(d.buf[:2])
	return binary.LittleEndian.Uint16(d.buf[:]), err
}

func (d *decoder) u32() (uint32, error) {
	err := d.read(d.buf[:4])
	return binary.LittleEndian.Uint32(d.buf[:]), err
}

func (d *decoder) u64() (uint64, error) {
	err := d.read(d.buf[:8])
	return binary.LittleEndian.Uint64(d.buf[:]), err
}

func (d *decoder) str() (string, error) {
	n, err := d.u64()
	if err != nil {
		return "", err
	}
	if n > MaxStringLen {
		return "", fmt.Errorf("%w: string length %d exceeds maximum %d", ErrCorrupt, n, MaxStringLen)
	}
	if n > uint64(d.remain()) {
		return "", fmt.Errorf("%w: string length %d exceeds remaining file size %d", ErrTruncated, n, d.remain())
	}
	b := make([]byte, n)
	if err := d.read(b); err != nil {
		return "", err
	}
	return string(b), nil
}

func (d *decoder) value(key string) (any, error) {
	t, err := d.u32()
	if err != nil {
		return nil, err
	}
	if t != uint32(TypeArray) {
		v, err := d.scalar(ValueType(t))
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		return v, nil
	}
	et, err := d.u32()
	if err != nil {
		return nil, err
	}
	n, err := d.u64()
	if err != nil {
		return nil, err
	}
	v, err := d.array(ValueType(et), n)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", key, err)
	}
	return v, nil
}

func (d *decoder) scalar(t ValueType) (any, error) {
	switch t {
	case TypeUint8:
		return d.u8()
	case TypeInt8:
		v, err := d.u8()
		return int8(v), err
	case TypeUint16:
		return d.u16()
	case TypeInt16:
		v, err := d.u16()
		return int16(v), err
	case TypeUint32:
		return d.u32()
	case TypeInt32:
		v, err := d.u32()
		return int32(v), err
	case TypeFloat32:
		v, err := d.u32()
		return math.Float32frombits(v), err
	case TypeBool:
		v, err := d.u8()
		return v != 0, err
	case TypeString:
		return d.str()
	case TypeUint64:
		return d.u64()
	case TypeInt64:
		v, err := d.u64()
		return int64(v), err
	case TypeFloat64:
		v, err := d.u64()
		return math.Float64frombits(v), err
	}
	return nil, fmt.Errorf("%w: invalid value type %d", ErrCorrupt, uint32(t))
}

func readArray[T any](d *decoder, n uint64, conv func(*decoder) (T, error)) ([]T, error) {
	// Grow as elements arrive: the count was checked against the file size, but a
	// slice of n Go values (strings especially) can still be far larger than the file.
	out := make([]T, 0, min(n, 1<<16))
	for range n {
		v, err := conv(d)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (d *decoder) array(et ValueType, n uint64) (any, error) {
	size := et.size()
	switch {
	case size < 0 || et == TypeArray:
		return nil, fmt.Errorf("%w: invalid array element type %d", ErrCorrupt, uint32(et))
	case size == 0: // strings: at least their 8-byte length each
		size = 8
	}
	if n > uint64(d.remain())/uint64(size) {
		return nil, fmt.Errorf("%w: array of %d %s elements exceeds remaining file size %d", ErrTruncated, n, et, d.remain())
	}
	switch et {
	case TypeUint8:
		b := make([]byte, n)
		return b, d.read(b)
	case TypeInt8:
		return readArray(d, n, func(d *decoder) (int8, error) { v, err := d.u8(); return int8(v), err })
	case TypeUint16:
		return readArray(d, n, (*decoder).u16)
	case TypeInt16:
		return readArray(d, n, func(d *decoder) (int16, error) { v, err := d.u16(); return int16(v), err })
	case TypeUint32:
		return readArray(d, n, (*decoder).u32)
	case TypeInt32:
		return readArray(d, n, func(d *decoder) (int32, error) { v, err := d.u32(); return int32(v), err })
	case TypeFloat32:
		return readArray(d, n, func(d *decoder) (float32, error) { v, err := d.u32(); return math.Float32frombits(v), err })
	case TypeBool:
		return readArray(d, n, func(d *decoder) (bool, error) { v, err := d.u8(); return v != 0, err })
	case TypeString:
		return readArray(d, n, (*decoder).str)
	case TypeUint64:
		return readArray(d, n, (*decoder).u64)
	case TypeInt64:
		return readArray(d, n, func(d *decoder) (int64, error) { v, err := d.u64(); return int64(v), err })
	default: // TypeFloat64
		return readArray(d, n, func(d *decoder) (float64, error) { v, err := d.u64(); return math.Float64frombits(v), err })
	}
}

func (d *decoder) tensorInfo() (TensorInfo, error) {
	var t TensorInfo
	name, err := d.str()
	if err != nil {
		return t, err
	}
	t.Name = name
	if len(name) >= MaxNameLen {
		return t, fmt.Errorf("%w: tensor name %q is %d bytes, must be < %d", ErrCorrupt, name, len(name), MaxNameLen)
	}
	nDims, err := d.u32()
	if err != nil {
		return t, err
	}
	if nDims < 1 || nDims > MaxDims {
		return t, fmt.Errorf("%w: tensor %q has %d dimensions, must be 1..%d", ErrCorrupt, name, nDims, MaxDims)
	}
	t.Dims = make([]uint64, nDims)
	for i := range t.Dims {
		if t.Dims[i], err = d.u64(); err != nil {
			return t, err
		}
	}
	typ, err := d.u32()
	if err != nil {
		return t, err
	}
	t.Type = ggml.Type(typ)
	if t.Offset, err = d.u64(); err != nil {
		return t, err
	}
	if err := t.check(); err != nil {
		return t, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return t, nil
}
