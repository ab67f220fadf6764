package cuda

import (
	"fmt"

	"quantfleet.dev/libs/fault"
)

// ErrUnavailable reports that CUDA cannot be used on this machine: a library is missing or too
// old, or there is no (such) device. It is bad input (asking for a GPU where there is none),
// so a command run with --device cuda on a machine without a GPU exits 2.
var ErrUnavailable = fault.New(fault.ErrBadInput, "cuda: not available")

// Error is a failed call of the driver, NVRTC or cuBLAS, with the library's name of the code.
type Error struct {
	Lib  string // "cu", "nvrtc" or "cublas"
	Call string // the function called
	Code int
	Name string // CUDA_ERROR_OUT_OF_MEMORY, NVRTC_ERROR_COMPILATION, CUBLAS_STATUS_NOT_SUPPORTED, ...
	Log  string // NVRTC's compile log, if any
}

func (e *Error) Error() string {
	s := fmt.Sprintf("cuda: %s: %s (%d)", e.Call, e.Name, e.Code)
	if e.Log != "" {
		s += "\n" + e.Log
	}
	return s
}

const (
	cudaErrorNoDevice = 100
)

// cuErr returns nil for CUDA_SUCCESS, else an *Error naming the code.
func cuErr(call string, r cuResult) error {
	if r == 0 {
		return nil
	}
	return &Error{Lib: "cu", Call: call, Code: int(r), Name: cuErrorName(r)}
}

func cuErrorName(r cuResult) string {
	if cu.getErrorName != nil {
		var p *byte
		if cu.getErrorName(r, &p) == 0 && p != nil {
			return goString(p)
		}
	}
	return fmt.Sprintf("CUDA error %d", int(r))
}

func nvrtcErr(call string, r int32) error {
	if r == 0 {
		return nil
	}
	name := fmt.Sprintf("NVRTC error %d", r)
	if nvrtc.getErrorString != nil {
		name = nvrtc.getErrorString(r)
	}
	return &Error{Lib: "nvrtc", Call: call, Code: int(r), Name: name}
}

var cublasStatusNames = map[int32]string{
	1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
	8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func cublasErr(call string, r int32) error {
	if r == 0 {
		return nil
	}
	name, ok := cublasStatusNames[r]
	if blas.getStatusName != nil {
		name = blas.getStatusName(r)
	} else if !ok {
		name = fmt.Sprintf("cuBLAS status %d", r)
	}
	return &Error{Lib: "cublas", Call: call, Code: int(r), Name: name}
}
