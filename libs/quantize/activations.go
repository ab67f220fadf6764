package quantize

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"quantfleet.dev/libs/perplexity"
	"quantfleet.dev/libs/transformer"
)

// CalibrationInputs returns the inputs of decoder layer 0 for a layer-sequential job: the
// embeddings of calibration samples first..first+n-1 of seqlen tokens of the file at path (see
// CalibrationSamples). The model's embedding matrix is released afterwards.
func CalibrationInputs(m *transformer.Model, tok perplexity.Encoder, path string, seqlen, first, n int) (*transformer.Tensor, error) {
	samples, err := CalibrationSamples(tok, path, seqlen, first, n)
	if err != nil {
		return nil, err
	}
	x, err := m.Embed(samples)
	m.ReleaseEmbeddings()
	return x, err
}

// activationsMagic starts the binary form of an activation tensor.
const activationsMagic = "QFACT\x00\x00\x01"

// ErrBadActivations reports data that MarshalActivations did not produce.
var ErrBadActivations = errors.New("quantize: not an encoded activation tensor")

// MarshalActivations encodes calibration activations (a layer's inputs or outputs) for
// storage between the layers of a job: a header (magic, batch, seq, dim as little-endian
// uint64) and the float32 values, little-endian, bit for bit.
func MarshalActivations(t *transformer.Tensor) []byte {
	h := len(activationsMagic) + 24
	buf := make([]byte, activationsBytes(t.Batch, t.Seq, t.Dim))
	copy(buf, activationsMagic)
	for i, v := range []int{t.Batch, t.Seq, t.Dim} {
		binary.LittleEndian.PutUint64(buf[len(activationsMagic)+8*i:], uint64(v))
	}
	if littleEndian {
		copy(buf[h:], float32Bytes(t.Data)) // one memmove: a shard of a 8B model is gigabytes
		return buf
	}
	for i, v := range t.Data {
		binary.LittleEndian.PutUint32(buf[h+4*i:], math.Float32bits(v))
	}
	return buf
}

// UnmarshalActivations decodes what MarshalActivations produced. On little-endian hosts the
// tensor's data is b's memory, not a copy (decoding a shard would cost as long as reading it):
// b must not be modified or reused afterwards.
func UnmarshalActivations(b []byte) (*transformer.Tensor, error) {
	h := len(activationsMagic) + 24
	if len(b) < h || string(b[:len(activationsMagic)]) != activationsMagic {
		return nil, ErrBadActivations
	}
	var dims [3]uint64
	for i := range dims {
		dims[i] = binary.LittleEndian.Uint64(b[len(activationsMagic)+8*i:])
		if dims[i] > 1<<31 {
			return nil, fmt.Errorf("%w: dimension %d", ErrBadActivations, dims[i])
		}
	}
	n := dims[0] * dims[1] * dims[2]
	if uint64(len(b)-h) != 4*n {
		return nil, fmt.Errorf("%w: %d bytes of values for %d×%d×%d", ErrBadActivations, len(b)-h, dims[0], dims[1], dims[2])
	}
	t := &transformer.Tensor{Batch: int(dims[0]), Seq: int(dims[1]), Dim: int(dims[2])}
	if v := b[h:]; littleEndian && uintptr(unsafe.Pointer(unsafe.SliceData(v)))%4 == 0 {
		t.Data = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(v))), n)
		return t, nil
	}
	t.Data = make([]float32, n)
	for i := range t.Data {
		t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[h+4*i:]))
	}
	return t, nil
}

// activationsBytes is the size of MarshalActivations' encoding of batch×seq×dim values.
func activationsBytes(batch, seq, dim int) int { return len(activationsMagic) + 24 + 4*batch*seq*dim }

// littleEndian reports a host whose float32 memory is the encoding's byte order.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float32Bytes views v's memory as bytes.
func float32Bytes(v []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
}
