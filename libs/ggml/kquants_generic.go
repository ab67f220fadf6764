//go:build !amd64 || purego

package ggml

func quantizeQ2K(dst []byte, src []float32) { quantizeQ2KGo(dst, src) }
func quantizeQ4K(dst []byte, src []float32) { quantizeQ4KGo(dst, src) }
func quantizeQ5K(dst []byte, src []float32) { quantizeQ5KGo(dst, src) }
func quantizeQ3K(dst []byte, src []float32) { quantizeQ3KGo(dst, src) }
func quantizeQ6K(dst []byte, src []float32) { quantizeQ6KGo(dst, src) }
