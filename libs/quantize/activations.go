package quantize

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

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
	buf := make([]byte, 0, len(activationsMagic)+24+4*len(t.Data))
	buf = append(buf, activationsMagic...)
	for _, v := range []int{t.Batch, t.Seq, t.Dim} {
		buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
	}
	for _, v := range t.Data {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
	}
	return buf
}

// UnmarshalActivations decodes what MarshalActivations produced.
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
	t := transformer.NewTensor(int(dims[0]), int(dims[1]), int(dims[2]))
	for i := range t.Data {
		t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[h+4*i:]))
	}
	return t, nil
}
