package quantize

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/progress"
	"quantfleet.dev/libs/safetensors"
	"quantfleet.dev/libs/transformer"
)

// layerResultMagic starts the binary form of a LayerResult: the magic, the gob of a
// storedLayer, and a CRC-32C of both (big endian). Gob alone decodes a flipped bit in a value,
// or a blob with bytes appended, without complaint.
const layerResultMagic = "QFLAYER\x02"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadLayerResult reports data that MarshalLayerResult did not produce.
var ErrBadLayerResult = errors.New("quantize: not an encoded layer result")

// storedLayer is what MarshalLayerResult keeps of a LayerResult: everything WriteLayer and the
// checkpoint metadata need, not the next layer's inputs (stored apart, MarshalActivations).
type storedLayer struct {
	Index   int
	Linears []*hfquant.Linear
	Tensors []DenseTensor
	Stats   []LinearStats
	Scales  []ScaleStats
	Damp    float64
}

// MarshalLayerResult encodes a layer's quantized linears, changed dense tensors and statistics
// (not Outputs) for storage between a job's layer tasks and its assembly. Values are kept bit
// for bit, so WriteLayer on the decoded result writes the same bytes as on r.
func MarshalLayerResult(r *LayerResult) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(layerResultMagic)
	s := storedLayer{Index: r.Index, Linears: r.Linears, Tensors: r.Tensors, Stats: r.Stats, Scales: r.Scales, Damp: r.Damp}
	if err := gob.NewEncoder(&buf).Encode(&s); err != nil {
		return nil, fmt.Errorf("encoding layer %d: %w", r.Index, err)
	}
	return binary.BigEndian.AppendUint32(buf.Bytes(), crc32.Checksum(buf.Bytes(), castagnoli)), nil
}

// UnmarshalLayerResult decodes what MarshalLayerResult produced; Outputs is nil.
func UnmarshalLayerResult(b []byte) (*LayerResult, error) {
	if len(b) < len(layerResultMagic)+4 || string(b[:len(layerResultMagic)]) != layerResultMagic {
		return nil, ErrBadLayerResult
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch (corrupted or truncated)", ErrBadLayerResult)
	}
	var s storedLayer
	dec := bytes.NewReader(body[len(layerResultMagic):])
	if err := gob.NewDecoder(dec).Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadLayerResult, err)
	}
	if dec.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the layer", ErrBadLayerResult, dec.Len())
	}
	return &LayerResult{Index: s.Index, Linears: s.Linears, Tensors: s.Tensors, Stats: s.Stats, Scales: s.Scales, Damp: s.Damp}, nil
}

// ValidateCheckpointTensors is ValidateCheckpoint against the source's tensor list (names and
// shapes) rather than an opened local model: a fleet assembler knows the source only from its
// headers in object storage.
func ValidateCheckpointTensors(dir string, src []safetensors.Tensor, rep progress.Reporter) error {
	if rep == nil {
		rep = progress.Nop()
	}
	if _, err := transformer.ReadConfig(dir); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOutput, err)
	}
	c, err := hfquant.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOutput, err)
	}
	defer c.Close()
	if c.Config().Method == "" {
		return fmt.Errorf("%w: %s has no quantization config", ErrInvalidOutput, dir)
	}
	if n := len(c.Names()); n != len(src) {
		return fmt.Errorf("%w: %d tensors, the source has %d", ErrInvalidOutput, n, len(src))
	}
	// Tensors are read back by up to GOMAXPROCS goroutines, at most validateBytes of float32
	// values (or the largest tensor) at once; the error returned is the first tensor's in the
	// source's order, as one after another would find it.
	var most int64
	for _, t := range src {
		most = max(most, 4*t.NumElements())
	}
	sem := semaphore.NewWeighted(max(most, validateBytes))
	errs := make([]error, len(src))
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), len(src)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(src); i = int(next.Add(1)) - 1 {
				w := 4 * src[i].NumElements()
				_ = sem.Acquire(context.Background(), w) // fails only with its context
				errs[i] = checkTensor(c, src[i])
				sem.Release(w)
				rep.Add(src[i].Name, 1)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// validateBytes bounds the float32 values that ValidateCheckpointTensors holds at once.
const validateBytes = 2 << 30

// checkTensor reads t back from c: its shape, and finite values (quantized linears
// dequantized).
func checkTensor(c *hfquant.Checkpoint, t safetensors.Tensor) error {
	data, shape, err := c.Float32(t.Name)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOutput, err)
	}
	if !slices.Equal(shape, t.Shape) {
		return fmt.Errorf("%w: %s has shape %v, the source %v", ErrInvalidOutput, t.Name, shape, t.Shape)
	}
	for j, v := range data {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 { // NaN or ±Inf
			return fmt.Errorf("%w: %s element %d is %v", ErrInvalidOutput, t.Name, j, v)
		}
	}
	return nil
}
