package transformer

import "testing"

func BenchmarkPack(b *testing.B) {
	a := make([]float32, 4096*512)
	dst := make([]float32, 14*256)
	b.Run("A14", func(b *testing.B) {
		for b.Loop() {
			for i := 0; i < 4096; i += 14 {
				packA(dst, false, a, 512, 0, 256, i%4000, 14, 14, 1)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(4096*256), "ns/elem")
	})
	dstB := make([]float32, 32*256)
	b.Run("Bt32", func(b *testing.B) {
		for b.Loop() {
			for j := 0; j < 4096; j += 32 {
				kernels[0].packB(dstB, true, a, 512, 0, 256, j%4000, 32)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(4096*256), "ns/elem")
	})
}
