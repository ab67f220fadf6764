package ggml

// KernelVariant selects one of the kernel sets this machine can run, for the external tests.
type KernelVariant struct {
	Name string
	Use  func() (restore func())
}

// KernelVariants lists the kernel sets (see kernelVariants in paths_test.go).
func KernelVariants() []KernelVariant {
	var vs []KernelVariant
	for _, v := range kernelVariants {
		vs = append(vs, KernelVariant{v.name, v.use})
	}
	return vs
}
