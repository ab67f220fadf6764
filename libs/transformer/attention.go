package transformer

import (
	"math"
	"sync/atomic"
)

// attend computes causal grouped-query attention softmax(q·kᵀ/√hd)·v for each sequence
// and head into out (rows × heads·hd). Query head h reads key/value head h/(heads/kvHeads).
// window > 0 limits row i to keys j with i−window < j ≤ i.
//
// Work items are (sequence, kv head, range of query blocks). An item packs the head's
// keys and values once into micro-kernel panels and reuses them for every query block and
// every query head of the group; a query block only visits the keys its rows can see.
func attend(out, q, k, v []float32, batch, seq, heads, kvHeads, hd, window int) {
	ker := activeKernel
	threads := numThreads()
	group := heads / kvHeads
	rb := ker.mr * ((64 + ker.mr - 1) / ker.mr) // query rows per block
	blocks := (seq + rb - 1) / rb
	parts := 1
	if n := batch * kvHeads; n < 4*threads {
		parts = min(blocks, (4*threads+n-1)/n)
	}
	// Causal cost of blocks [0, b) grows as b²: cut the parts at equal cost.
	cut := make([]int, parts+1)
	for t := 1; t <= parts; t++ {
		cut[t] = int(math.Ceil(float64(blocks) * math.Sqrt(float64(t)/float64(parts))))
	}
	total := batch * kvHeads * parts
	var next atomic.Int64
	work := func() {
		a := &attnScratch{}
		for {
			w := int(next.Add(1) - 1)
			if w >= total {
				return
			}
			part := w % parts
			g := (w / parts) % kvHeads
			b := w / (parts * kvHeads)
			if cut[part] >= cut[part+1] {
				continue
			}
			a.run(ker, out, q, k, v, b, g, group, seq, heads, kvHeads, hd, window, rb, cut[part], cut[part+1])
		}
	}
	threads = min(threads, total)
	done := make(chan struct{}, threads)
	for t := 0; t < threads-1; t++ {
		go func() { work(); done <- struct{}{} }()
	}
	work()
	for t := 0; t < threads-1; t++ {
		<-done
	}
}

// attnScratch holds one worker's buffers.
type attnScratch struct {
	pk, pv, pa, s, o []float32
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

func ceilTo(n, m int) int { return (n + m - 1) / m * m }

// run handles query blocks [blk0, blk1) of kv head g of sequence b, for all query heads of
// the group.
func (a *attnScratch) run(ker *microKernel, out, q, k, v []float32, b, g, group, seq, heads, kvHeads, hd, window, rb, blk0, blk1 int) {
	mr, nr := ker.mr, ker.nr
	qd, kd := heads*hd, kvHeads*hd
	base := b * seq
	rows1 := min(seq, blk1*rb) // keys needed: [kStart, rows1)
	kStart := 0
	if window > 0 {
		kStart = max(0, blk0*rb-window+1) / nr * nr
	}
	keys := ceilTo(rows1, nr) - kStart // packed key columns, padded
	hdPad := ceilTo(hd, nr)
	scale := float32(1 / math.Sqrt(float64(hd)))

	// Kᵀ as B of q·kᵀ: depth hd (blocks of kc), columns keys kStart.., panels of nr.
	dBlocks := (hd + kc - 1) / kc
	a.pk = grow(a.pk, dBlocks*keys*min(hd, kc))
	for d := 0; d < dBlocks; d++ {
		kb := min(kc, hd-d*kc)
		blk := a.pk[d*keys*min(hd, kc):]
		for j := 0; j < keys; j += nr {
			packB(blk[j*kb:(j+nr)*kb], true, k[base*kd+g*hd:], kd, d*kc, kb, kStart+j, max(0, min(nr, rows1-kStart-j)), nr)
		}
	}
	// V as B of p·v: depth = keys (rows kStart.., zero past rows1), columns hd.
	a.pv = grow(a.pv, keys*hdPad)
	for j := 0; j < hdPad; j += nr {
		cols := min(nr, hd-j)
		panel := a.pv[j*keys : (j+nr)*keys]
		for p := 0; p < keys; p++ {
			dst := panel[p*nr : (p+1)*nr]
			if r := kStart + p; r < rows1 {
				copy(dst[:cols], v[(base+r)*kd+g*hd+j:])
				clear(dst[cols:])
			} else {
				clear(dst)
			}
		}
	}
	a.pa = grow(a.pa, rb*max(kc, min(hd, kc)))
	a.s = grow(a.s, rb*keys)
	a.o = grow(a.o, rb*hdPad)
	for h := g * group; h < (g+1)*group; h++ {
		for blk := blk0; blk < blk1; blk++ {
			r0 := blk * rb
			r1 := min(seq, r0+rb)
			m := r1 - r0
			mp := ceilTo(m, mr)
			c0 := 0 // first key column this block sees (relative to kStart), panel aligned
			if window > 0 {
				c0 = (max(0, r0-window+1) - kStart) / nr * nr
			}
			c1 := ceilTo(r1, nr) - kStart
			ld := c1 - c0
			s := a.s[:mp*ld]
			// s = scale · q[r0:r1, head h] · kᵀ
			for d := 0; d < dBlocks; d++ {
				kb := min(kc, hd-d*kc)
				blkK := a.pk[d*keys*min(hd, kc):]
				for i := 0; i < mp; i += mr {
					packA(a.pa[i*kb:(i+mr)*kb], false, q[(base+r0)*qd+h*hd:], qd, d*kc, kb, i, max(0, min(mr, m-i)), mr, scale)
				}
				for j := c0; j < c1; j += nr {
					for i := 0; i < mp; i += mr {
						ker.fn(kb, &a.pa[i*kb], &blkK[j*kb], &s[i*ld+j-c0], ld, d > 0)
					}
				}
			}
			for y := 0; y < m; y++ {
				i := r0 + y
				row := s[y*ld : (y+1)*ld]
				lo := 0
				if window > 0 {
					lo = max(0, i-window+1) - kStart - c0
				}
				hi := i + 1 - kStart - c0
				clear(row[:lo])
				softmaxRow(row[lo:hi])
				clear(row[hi:])
			}
			clear(s[m*ld:])
			// o = p · v over key columns [c0, c1), in depth blocks of kc.
			o := a.o[:mp*hdPad]
			for p0 := c0; p0 < c1; p0 += kc {
				kb := min(kc, c1-p0)
				if ker.fnU == nil {
					for i := 0; i < mp; i += mr {
						packA(a.pa[i*kb:(i+mr)*kb], false, s, ld, p0-c0, kb, i, mr, mr, 1)
					}
				}
				for j := 0; j < hdPad; j += nr {
					for i := 0; i < mp; i += mr {
						if ker.fnU != nil { // s has mp rows: every tile is full
							ker.fnU(kb, &s[i*ld+p0-c0], ld, &a.pv[j*keys+p0*nr], &o[i*hdPad+j], hdPad, p0 > c0)
						} else {
							ker.fn(kb, &a.pa[i*kb], &a.pv[j*keys+p0*nr], &o[i*hdPad+j], hdPad, p0 > c0)
						}
					}
				}
			}
			for y := 0; y < m; y++ {
				copy(out[(base+r0+y)*qd+h*hd:(base+r0+y)*qd+(h+1)*hd], o[y*hdPad:y*hdPad+hd])
			}
		}
	}
}
