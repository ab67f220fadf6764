package blob

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestPlanCompose checks the S3 part-size rules on many random part lists, with small limits so the
// cases stay cheap: every part but the last >= minPart, copies <= maxCopy, and the parts reproduce
// the input bytes in order.
func TestPlanCompose(t *testing.T) {
	const minPart, maxCopy, maxGlue = 100, 1000, 400
	fixed := [][]segment{
		{},
		{{data: make([]byte, 10)}},
		{{key: "a", n: 50}},
		{{data: make([]byte, 10)}, {key: "a", n: 5000}, {key: "b", n: 10}, {data: make([]byte, 3)}},
		{{key: "a", n: 99}, {key: "b", n: 100}, {key: "c", n: 1}},
		{{data: make([]byte, 99)}, {key: "a", n: 150}},
		{{data: make([]byte, 99)}, {key: "a", n: 150}, {key: "b", n: 1}},
		{{key: "a", n: 2001}},
		{{key: "a", n: 0}, {data: []byte{}}, {key: "b", n: 5}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		var segs []segment
		for j := rng.IntN(8); j >= 0; j-- {
			n := int64(rng.IntN(3)) * int64(rng.IntN(1200))
			if rng.IntN(3) == 0 {
				segs = append(segs, segment{data: make([]byte, n)})
			} else {
				segs = append(segs, segment{key: fmt.Sprintf("k%d", j), off: int64(rng.IntN(50)), n: n})
			}
		}
		fixed = append(fixed, segs)
	}
	for ci, segs := range fixed {
		parts := planCompose(segs, minPart, maxCopy, maxGlue)
		// Flatten input and output to (source, offset) byte positions and compare.
		type pos struct {
			seg int // index of input segment for data (by identity), or -1 for keyed
			key string
			off int64
		}
		var want, got []pos
		dataIdx := map[*byte]int{}
		for si, s := range segs {
			if s.data != nil {
				if len(s.data) > 0 {
					dataIdx[&s.data[0]] = si
				}
				for k := range s.data {
					want = append(want, pos{seg: si, off: int64(k)})
				}
				continue
			}
			for k := int64(0); k < s.n; k++ {
				want = append(want, pos{seg: -1, key: s.key, off: s.off + k})
			}
		}
		emit := func(s segment) {
			if s.data != nil {
				si := dataIdx[&s.data[0]]
				for k := range s.data {
					got = append(got, pos{seg: si, off: int64(k)})
				}
				return
			}
			for k := int64(0); k < s.n; k++ {
				got = append(got, pos{seg: -1, key: s.key, off: s.off + k})
			}
		}
		for pi, p := range parts {
			if p.size <= 0 {
				t.Fatalf("case %d part %d: empty part", ci, pi)
			}
			if pi < len(parts)-1 && p.size < minPart {
				t.Fatalf("case %d part %d of %d: size %d < %d", ci, pi, len(parts), p.size, minPart)
			}
			var sum int64
			if p.copy {
				if p.src.n > maxCopy {
					t.Fatalf("case %d part %d: copy of %d > %d", ci, pi, p.src.n, maxCopy)
				}
				emit(p.src)
				sum = p.src.n
			} else {
				for _, s := range p.pieces {
					emit(s)
					sum += s.size()
				}
			}
			if sum != p.size {
				t.Fatalf("case %d part %d: size %d, pieces sum %d", ci, pi, p.size, sum)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("case %d: %d bytes out, %d in", ci, len(got), len(want))
		}
		for k := range want {
			if got[k] != want[k] {
				t.Fatalf("case %d: byte %d comes from %+v, want %+v", ci, k, got[k], want[k])
			}
		}
	}
}
