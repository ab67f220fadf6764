package ggml

import (
	"fmt"
	"testing"
)

// BenchmarkQuantize reports MB/s of float32 input (4 bytes per element; divide by 4 for
// Melem/s) for one goroutine (QuantizeBlocks) and for all cores (Quantize, rows of 4096), on
// 2^20 weight-like values (σ = 0.02: splitmix64 seed 42, Irwin–Hall). Where the machine has
// more than one kernel set for the k-quants (amd64 with AVX2), 1core-<set> times the others.
func BenchmarkQuantize(b *testing.B) {
	const n = 1 << 20
	x := make([]float32, n)
	r := &rng{s: 42}
	for i := range x {
		x[i] = float32(r.normal() * 0.02)
	}
	for _, typ := range []Type{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, F16, BF16} {
		dst := make([]byte, typ.RowSize(n))
		b.Run(fmt.Sprintf("%v/1core", typ), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := QuantizeBlocks(typ, dst, x); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("%v/allcores", typ), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := Quantize(typ, dst, x, 4096); err != nil {
					b.Fatal(err)
				}
			}
		})
		for _, v := range kernelVariants[1:] {
			if typ.BlockSize() != QK_K { // only the k-quants have more than one kernel set
				continue
			}
			b.Run(fmt.Sprintf("%v/1core-%s", typ, v.name), func(b *testing.B) {
				defer v.use()()
				b.SetBytes(4 * n)
				for b.Loop() {
					if err := QuantizeBlocks(typ, dst, x); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkDequantize(b *testing.B) {
	const n = 1 << 20
	x := make([]float32, n)
	r := &rng{s: 42}
	for i := range x {
		x[i] = float32(r.normal() * 0.02)
	}
	for _, typ := range []Type{Q4_0, Q8_0, Q2_K, Q4_K, Q6_K} {
		q := make([]byte, typ.RowSize(n))
		if err := Quantize(typ, q, x, 4096); err != nil {
			b.Fatal(err)
		}
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				if err := Dequantize(typ, x, q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
