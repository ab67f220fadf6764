//go:build nocuda

package cuda

import "fmt"

// cudaBuilt reports whether this binary can load CUDA: built with -tags nocuda, it cannot.
// Such a binary does not import purego, so it stays statically linked (scratch and distroless
// static images); every CUDA call fails with errNotBuilt.
const cudaBuilt = false

var errNotBuilt = fmt.Errorf("%w: this binary was built without CUDA support (-tags nocuda)", ErrUnavailable)

func dlopen(string) (uintptr, error) { return 0, errNotBuilt }

func dlsym(uintptr, string) (uintptr, error) { return 0, errNotBuilt }

func registerFunc(any, uintptr) {}
