package transformer

import "fmt"

// Tensor is a batch of sequences of vectors: Data holds Batch·Seq rows of Dim floats,
// sequence-major, row-major. Every sequence starts at position 0.
type Tensor struct {
	Data            []float32
	Batch, Seq, Dim int
}

// NewTensor returns a zeroed tensor.
func NewTensor(batch, seq, dim int) *Tensor {
	return &Tensor{Data: make([]float32, batch*seq*dim), Batch: batch, Seq: seq, Dim: dim}
}

// Rows is Batch·Seq.
func (t *Tensor) Rows() int { return t.Batch * t.Seq }

// Row returns row i (sequence i/Seq, position i%Seq).
func (t *Tensor) Row(i int) []float32 { return t.Data[i*t.Dim : (i+1)*t.Dim] }

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	c := *t
	c.Data = append([]float32(nil), t.Data...)
	return &c
}

// Sequences returns sequences [lo, hi) as a tensor sharing t's data.
func (t *Tensor) Sequences(lo, hi int) *Tensor {
	n := t.Seq * t.Dim
	return &Tensor{Data: t.Data[lo*n : hi*n], Batch: hi - lo, Seq: t.Seq, Dim: t.Dim}
}

func (t *Tensor) check() error {
	if t == nil {
		return fmt.Errorf("transformer: nil tensor")
	}
	if t.Batch < 0 || t.Seq < 0 || t.Dim < 0 || len(t.Data) != t.Batch*t.Seq*t.Dim {
		return fmt.Errorf("transformer: tensor of %d floats is not %d×%d×%d", len(t.Data), t.Batch, t.Seq, t.Dim)
	}
	return nil
}
