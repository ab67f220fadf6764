//go:build !amd64 || purego

package transformer

func archVecMath() []*vecMath { return nil }
