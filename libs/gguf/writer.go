package gguf

import (
	"fmt"
	"io"
)

// Writer streams a GGUF file: the header first, then each tensor's data in header order.
// It holds no tensor data itself.
type Writer struct {
	w     io.Writer
	h     *Header
	align uint64
	next  int // index of the next tensor to write
	err   error
}

var zeros [256]byte

// NewWriter lays out h (see Header.Layout), validates it and writes the header to w.
func NewWriter(w io.Writer, h *Header) (*Writer, error) {
	if err := h.Layout(); err != nil {
		return nil, err
	}
	b, err := h.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	align, _ := h.Alignment()
	return &Writer{w: w, h: h, align: align}, nil
}

// WriteTensor writes the data of the next tensor, which must be called name and have
// exactly its Size() bytes, followed by zero padding to the alignment.
func (w *Writer) WriteTensor(name string, data []byte) error {
	t, err := w.expect(name)
	if err != nil {
		return err
	}
	if uint64(len(data)) != t.Size() {
		return fmt.Errorf("%w: tensor %q has %d bytes of data, its info needs %d", ErrInvalid, name, len(data), t.Size())
	}
	if _, err := w.w.Write(data); err != nil {
		return w.fail(err)
	}
	return w.pad(t)
}

// WriteTensorFrom copies the data of the next tensor from r: exactly its Size() bytes,
// which r must provide. It lets assemblers copy tensors without holding them in memory.
func (w *Writer) WriteTensorFrom(name string, r io.Reader) error {
	t, err := w.expect(name)
	if err != nil {
		return err
	}
	n, err := io.Copy(w.w, io.LimitReader(r, int64(t.Size())))
	if err != nil {
		return w.fail(err)
	}
	if uint64(n) != t.Size() {
		return w.fail(fmt.Errorf("%w: tensor %q: got %d bytes of data, its info needs %d", ErrInvalid, name, n, t.Size()))
	}
	return w.pad(t)
}

func (w *Writer) expect(name string) (TensorInfo, error) {
	if w.err != nil {
		return TensorInfo{}, w.err
	}
	if w.next >= len(w.h.Tensors) {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q written after all %d tensors", ErrInvalid, name, len(w.h.Tensors))
	}
	t := w.h.Tensors[w.next]
	if t.Name != name {
		return TensorInfo{}, fmt.Errorf("%w: wrote tensor %q, expected %q (tensor %d in header order)", ErrInvalid, name, t.Name, w.next)
	}
	return t, nil
}

func (w *Writer) pad(t TensorInfo) error {
	for p := padding(t.Size(), w.align); p > 0; {
		n := min(p, uint64(len(zeros)))
		if _, err := w.w.Write(zeros[:n]); err != nil {
			return w.fail(err)
		}
		p -= n
	}
	w.next++
	return nil
}

// fail records a write error: the output is unusable after a partial write.
func (w *Writer) fail(err error) error {
	w.err = err
	return err
}

// Close reports an error if a write failed or tensors are missing. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.next != len(w.h.Tensors) {
		return fmt.Errorf("%w: %d of %d tensors written, next missing is %q", ErrInvalid,
			w.next, len(w.h.Tensors), w.h.Tensors[w.next].Name)
	}
	return nil
}
