//go:build !nocuda

package cuda

import "github.com/ebitengine/purego"

// cudaBuilt reports whether this binary can load CUDA (not built with -tags nocuda).
const cudaBuilt = true

// errNotBuilt is never returned by this build.
var errNotBuilt error

func dlopen(path string) (uintptr, error) {
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

func dlsym(lib uintptr, name string) (uintptr, error) { return purego.Dlsym(lib, name) }

func registerFunc(fptr any, sym uintptr) { purego.RegisterFunc(fptr, sym) }
