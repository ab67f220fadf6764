package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// WriteTensor is one tensor to write with WriteFile.
type WriteTensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte // little-endian, row-major; exactly elements × dtype size bytes
}

type writeEntry struct {
	DType       DType    `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// EncodeHeader returns the length-prefixed header for tensors laid out back to back in the
// given order: the 8-byte length followed by JSON with sorted keys, padded with spaces so
// that the data section starts at a multiple of 8, as the reference implementation does.
func EncodeHeader(tensors []WriteTensor, metadata map[string]string) ([]byte, error) {
	obj := make(map[string]any, len(tensors)+1)
	if len(metadata) > 0 {
		obj["__metadata__"] = metadata
	}
	var off int64
	for _, t := range tensors {
		if t.Name == "" || t.Name == "__metadata__" {
			return nil, fmt.Errorf("%w: invalid tensor name %q", ErrBadHeader, t.Name)
		}
		if _, dup := obj[t.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor %q", ErrBadHeader, t.Name)
		}
		if !t.DType.Known() {
			return nil, fmt.Errorf("%w: tensor %q has dtype %q", ErrUnsupportedDType, t.Name, t.DType)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int64{}
		}
		n := t.DType.Size()
		for _, d := range shape {
			if d < 0 {
				return nil, fmt.Errorf("%w: tensor %q has negative dimension in shape %v", ErrBadHeader, t.Name, shape)
			}
			n *= d
		}
		if int64(len(t.Data)) != n {
			return nil, fmt.Errorf("%w: tensor %q has %d data bytes, shape %v of %s needs %d",
				ErrBadHeader, t.Name, len(t.Data), shape, t.DType, n)
		}
		obj[t.Name] = writeEntry{DType: t.DType, Shape: shape, DataOffsets: [2]int64{off, off + n}}
		off += n
	}
	js, err := json.Marshal(obj) // map keys are emitted sorted
	if err != nil {
		return nil, err
	}
	pad := (8 - len(js)%8) % 8
	js = append(js, bytes.Repeat([]byte{' '}, pad)...)
	out := make([]byte, 8, 8+len(js))
	binary.LittleEndian.PutUint64(out, uint64(len(js)))
	return append(out, js...), nil
}

// WriteFile writes tensors, in the given order, to a safetensors file at path. It writes
// to a temporary file in the same directory and renames it into place.
func WriteFile(path string, tensors []WriteTensor, metadata map[string]string) (err error) {
	hdr, err := EncodeHeader(tensors, metadata)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if _, err = tmp.Write(hdr); err != nil {
		return err
	}
	for _, t := range tensors {
		if _, err = tmp.Write(t.Data); err != nil {
			return err
		}
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
