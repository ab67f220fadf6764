//go:build amd64 && !purego

package transformer

import "golang.org/x/sys/cpu"

//go:noescape
func kernelAVX512(k int, a, b, c *float32, ldc int, add bool)

//go:noescape
func kernelAVX2(k int, a, b, c *float32, ldc int, add bool)

//go:noescape
func kernelAVX512U(k int, a *float32, lda int, b, c *float32, ldc int, add bool)

//go:noescape
func kernelAVX2U(k int, a *float32, lda int, b, c *float32, ldc int, add bool)

//go:noescape
func packBT32(dst, src *float32, ldb, kb int)

//go:noescape
func packBT16(dst, src *float32, ldb, kb int)

func archKernels() []*microKernel {
	var ks []*microKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, &microKernel{name: "avx512 14x32", mr: 14, nr: 32, mc: 14 * 24, nc: 32 * 64, fn: kernelAVX512, fnU: kernelAVX512U, packBT: packBT32})
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, &microKernel{name: "avx2 6x16", mr: 6, nr: 16, mc: 6 * 48, nc: 16 * 128, fn: kernelAVX2, fnU: kernelAVX2U, packBT: packBT16})
	}
	return ks
}
