package cuda

import "unsafe"

// cuResult is the driver API's CUresult.
type cuResult int32

// cu holds the driver API functions (libcuda.so.1). The _v2 names are the 64-bit-size variants
// the CUDA headers map the plain names to.
var cu struct {
	init               func(flags uint32) cuResult
	driverGetVersion   func(v *int32) cuResult
	deviceGetCount     func(n *int32) cuResult
	deviceGet          func(dev *int32, ordinal int32) cuResult
	deviceGetName      func(name *byte, n int32, dev int32) cuResult
	deviceGetAttribute func(v *int32, attr int32, dev int32) cuResult
	deviceTotalMem     func(bytes *uint64, dev int32) cuResult
	primaryCtxRetain   func(ctx *uintptr, dev int32) cuResult
	primaryCtxRelease  func(dev int32) cuResult
	ctxSetCurrent      func(ctx uintptr) cuResult
	ctxSynchronize     func() cuResult
	memGetInfo         func(free, total *uint64) cuResult
	memAlloc           func(p *uint64, bytes uint64) cuResult
	memFree            func(p uint64) cuResult
	memcpyHtoD         func(dst uint64, src unsafe.Pointer, bytes uint64) cuResult
	memcpyHtoDAsync    func(dst uint64, src unsafe.Pointer, bytes uint64, stream uintptr) cuResult
	memHostAlloc       func(p *unsafe.Pointer, bytes uint64, flags uint32) cuResult
	memFreeHost        func(p unsafe.Pointer) cuResult
	memcpyDtoH         func(dst unsafe.Pointer, src uint64, bytes uint64) cuResult
	memcpyDtoD         func(dst, src uint64, bytes uint64) cuResult
	memsetD8           func(dst uint64, v uint8, n uint64) cuResult
	moduleLoadData     func(m *uintptr, image unsafe.Pointer) cuResult
	moduleUnload       func(m uintptr) cuResult
	moduleGetFunction  func(f *uintptr, m uintptr, name *byte) cuResult
	launchKernel       func(f uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params unsafe.Pointer, extra unsafe.Pointer) cuResult
	getErrorName       func(r cuResult, name **byte) cuResult
	funcSetAttribute   func(f uintptr, attr int32, v int32) cuResult
	funcGetAttribute   func(v *int32, attr int32, f uintptr) cuResult
}

func driverSymbols() map[string]any {
	return map[string]any{
		"cuInit":                       &cu.init,
		"cuDriverGetVersion":           &cu.driverGetVersion,
		"cuDeviceGetCount":             &cu.deviceGetCount,
		"cuDeviceGet":                  &cu.deviceGet,
		"cuDeviceGetName":              &cu.deviceGetName,
		"cuDeviceGetAttribute":         &cu.deviceGetAttribute,
		"cuDeviceTotalMem_v2":          &cu.deviceTotalMem,
		"cuDevicePrimaryCtxRetain":     &cu.primaryCtxRetain,
		"cuDevicePrimaryCtxRelease_v2": &cu.primaryCtxRelease,
		"cuCtxSetCurrent":              &cu.ctxSetCurrent,
		"cuCtxSynchronize":             &cu.ctxSynchronize,
		"cuMemGetInfo_v2":              &cu.memGetInfo,
		"cuMemAlloc_v2":                &cu.memAlloc,
		"cuMemFree_v2":                 &cu.memFree,
		"cuMemcpyHtoD_v2":              &cu.memcpyHtoD,
		"cuMemcpyHtoDAsync_v2":         &cu.memcpyHtoDAsync,
		"cuMemHostAlloc":               &cu.memHostAlloc,
		"cuMemFreeHost":                &cu.memFreeHost,
		"cuMemcpyDtoH_v2":              &cu.memcpyDtoH,
		"cuMemcpyDtoD_v2":              &cu.memcpyDtoD,
		"cuMemsetD8_v2":                &cu.memsetD8,
		"cuModuleLoadData":             &cu.moduleLoadData,
		"cuModuleUnload":               &cu.moduleUnload,
		"cuModuleGetFunction":          &cu.moduleGetFunction,
		"cuLaunchKernel":               &cu.launchKernel,
		"cuGetErrorName":               &cu.getErrorName,
		"cuFuncSetAttribute":           &cu.funcSetAttribute,
		"cuFuncGetAttribute":           &cu.funcGetAttribute,
	}
}

// Device attributes (CUdevice_attribute).
const (
	attrMultiprocessorCount = 16
	attrComputeMajor        = 75
	attrComputeMinor        = 76
)
