//go:build !amd64 || purego

package transformer

func archKernels() []*microKernel { return nil }
