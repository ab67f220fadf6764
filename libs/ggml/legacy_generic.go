//go:build !amd64 || purego

package ggml

func quantizeQ4_0(dst []byte, src []float32) { quantizeQ4_0Go(dst, src) }
func quantizeQ4_1(dst []byte, src []float32) { quantizeQ4_1Go(dst, src) }
func quantizeQ5_0(dst []byte, src []float32) { quantizeQ5_0Go(dst, src) }
func quantizeQ5_1(dst []byte, src []float32) { quantizeQ5_1Go(dst, src) }
func quantizeQ8_0(dst []byte, src []float32) { quantizeQ8_0Go(dst, src) }
