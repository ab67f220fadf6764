//go:build amd64 && !purego

package transformer

import "golang.org/x/sys/cpu"

//go:noescape
func expSubSumAVX512(x []float32, m float32) float32

//go:noescape
func sumExpSubAVX512(x []float32, m float32) float32

//go:noescape
func siluMulAVX512(g, u []float32)

//go:noescape
func maxAVX512(x []float32) float32

//go:noescape
func expSubSumAVX2(x []float32, m float32) float32

//go:noescape
func sumExpSubAVX2(x []float32, m float32) float32

//go:noescape
func siluMulAVX2(g, u []float32)

//go:noescape
func maxAVX2(x []float32) float32

func archVecMath() []*vecMath {
	var vs []*vecMath
	if cpu.X86.HasAVX512F {
		vs = append(vs, &vecMath{name: "avx512", lanes: 16, expSubSum: expSubSumAVX512, sumExpSub: sumExpSubAVX512, siluMul: siluMulAVX512, max: maxAVX512})
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		vs = append(vs, &vecMath{name: "avx2", lanes: 8, expSubSum: expSubSumAVX2, sumExpSub: sumExpSubAVX2, siluMul: siluMulAVX2, max: maxAVX2})
	}
	return vs
}
