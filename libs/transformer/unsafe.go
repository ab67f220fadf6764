package transformer

import "unsafe"

// unsafeSlice views n floats starting at p; kernels receive raw pointers into packed panels.
func unsafeSlice(p *float32, n int) []float32 { return unsafe.Slice(p, n) }
