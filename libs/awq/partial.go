package awq

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
)

// Binary form of the partial results (SHARDS.md): little-endian, a 4-byte magic "AWQP", a
// kind byte ('S' Stats, 'L' ScaleLosses, 'C' ClipStats) and a version byte (2), then the
// span (offset, tokens, total) and the kind's fields as int64 and IEEE float64 bit
// patterns, each slice preceded by its length. The same value always gives the same bytes.

// Version 2 added the Stats' per-group row counts.
const partialVersion = 2

// MarshalBinary encodes the statistics (see the binary form above).
func (st *Stats) MarshalBinary() ([]byte, error) {
	e := newEncoder('S', st.span)
	e.int(len(st.sums))
	for g, s := range st.sums {
		e.int(int(st.counts[g]))
		e.f64s(s)
	}
	return e.b, nil
}

// UnmarshalBinary decodes what MarshalBinary encoded.
func (st *Stats) UnmarshalBinary(b []byte) error {
	d, sp := newDecoder(b, 'S')
	var v Stats
	v.span = sp
	n := d.len(16)
	for range n {
		v.counts = append(v.counts, int64(d.int()))
		v.sums = append(v.sums, d.f64s())
	}
	if err := d.done(); err != nil {
		return err
	}
	*st = v
	return nil
}

// MarshalBinary encodes the losses (see the binary form above).
func (sl *ScaleLosses) MarshalBinary() ([]byte, error) {
	e := newEncoder('L', sl.span)
	e.u64(sl.key)
	e.int(len(sl.sums))
	for g, s := range sl.sums {
		e.int(int(sl.counts[g]))
		e.f64s(s)
	}
	return e.b, nil
}

// UnmarshalBinary decodes what MarshalBinary encoded.
func (sl *ScaleLosses) UnmarshalBinary(b []byte) error {
	d, sp := newDecoder(b, 'L')
	v := ScaleLosses{span: sp, key: d.u64()}
	n := d.len(16)
	for range n {
		v.counts = append(v.counts, int64(d.len(0)))
		v.sums = append(v.sums, d.f64s())
	}
	if err := d.done(); err != nil {
		return err
	}
	*sl = v
	return nil
}

// MarshalBinary encodes the clipping statistics (see the binary form above).
func (cs *ClipStats) MarshalBinary() ([]byte, error) {
	e := newEncoder('C', cs.span)
	e.u64(cs.key)
	e.int(cs.step)
	e.int(cs.gs)
	e.int(len(cs.linears))
	for _, cg := range cs.linears {
		e.int(len(cg.name))
		e.b = append(e.b, cg.name...)
		e.int(cg.cols)
		e.int(int(cg.samples))
		e.f64s(cg.gram)
	}
	return e.b, nil
}

// UnmarshalBinary decodes what MarshalBinary encoded.
func (cs *ClipStats) UnmarshalBinary(b []byte) error {
	d, sp := newDecoder(b, 'C')
	v := ClipStats{span: sp, key: d.u64(), step: d.len(0), gs: d.int()}
	n := d.len(32)
	for range n {
		cg := clipGram{name: string(d.bytes(d.len(1)))}
		cg.cols, cg.samples, cg.gram = d.len(0), int64(d.len(0)), d.f64s()
		gs := v.gs
		if gs == -1 {
			gs = cg.cols
		}
		if d.err == nil && (gs <= 0 || cg.cols%gs != 0 || len(cg.gram) != cg.cols*gs) {
			d.err = fmt.Errorf("%w: clip stats of %s: %d Gram values for %d columns in groups of %d", ErrPartial, cg.name, len(cg.gram), cg.cols, gs)
		}
		v.linears = append(v.linears, cg)
	}
	if err := d.done(); err != nil {
		return err
	}
	*cs = v
	return nil
}

type encoder struct{ b []byte }

func newEncoder(kind byte, sp span) *encoder {
	e := &encoder{b: append([]byte("AWQP"), kind, partialVersion)}
	e.int(sp.off)
	e.int(sp.n)
	e.int(sp.total)
	return e
}

func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *encoder) int(v int)    { e.u64(uint64(int64(v))) }

func (e *encoder) f64s(v []float64) {
	e.int(len(v))
	for _, x := range v {
		e.u64(math.Float64bits(x))
	}
}

// decoder reads an encoder's output; the first error sticks and later reads return zeros.
type decoder struct {
	b   []byte
	err error
}

func newDecoder(b []byte, kind byte) (*decoder, span) {
	d := &decoder{b: b}
	if h := d.bytes(6); d.err == nil && (string(h[:4]) != "AWQP" || h[4] != kind || h[5] != partialVersion) {
		d.err = fmt.Errorf("%w: header %q, want AWQP%c version %d", ErrPartial, h, kind, partialVersion)
	}
	sp := span{d.int(), d.int(), d.int()}
	if d.err == nil && (sp.off < 0 || sp.n < 0 || sp.off+sp.n > sp.total || sp.n > sp.total) {
		d.err = fmt.Errorf("%w: %v", ErrPartial, sp)
	}
	return d, sp
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.err = fmt.Errorf("%w: truncated", ErrPartial)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u64() uint64 {
	if b := d.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) int() int { return int(int64(d.u64())) }

// len reads a non-negative count of items of at least minSize encoded bytes each, so that a
// corrupt count cannot make the decoder allocate more than the input's size.
func (d *decoder) len(minSize int) int {
	n := d.int()
	if d.err == nil && (n < 0 || (minSize > 0 && n > len(d.b)/minSize)) {
		d.err = fmt.Errorf("%w: count %d with %d bytes left", ErrPartial, n, len(d.b))
		return 0
	}
	return n
}

func (d *decoder) f64s() []float64 {
	n := d.len(8)
	if d.err != nil {
		return nil
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = math.Float64frombits(d.u64())
	}
	return v
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrPartial, len(d.b))
	}
	return d.err
}

// scaleKey identifies the candidates of step 2: the complete stats they derive from and the
// config fields that shape them, so that losses of other candidates are never merged.
func scaleKey(st *Stats, cfg Config) (uint64, error) {
	b, err := st.MarshalBinary()
	if err != nil {
		return 0, err
	}
	h := fnv.New64a()
	h.Write(b)
	fmt.Fprintf(h, "|%d|%d|%d|%t|%t", cfg.Bits, cfg.GroupSize, cfg.Grid, cfg.PlainScaling, cfg.KeepIdentity)
	return h.Sum64(), nil
}

// scalesKey identifies the scales that step 3 divided the inputs by.
func scalesKey(scales []*Scales) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, s := range scales {
		if s == nil {
			continue
		}
		binary.LittleEndian.PutUint64(b[:], uint64(len(s.S)))
		h.Write(b[:])
		for _, v := range s.S {
			binary.LittleEndian.PutUint32(b[:4], math.Float32bits(v))
			h.Write(b[:4])
		}
	}
	return h.Sum64()
}
