package cuda

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Device is one CUDA device with its primary context. Its methods may be called from any
// goroutine: each call makes the context current on a locked OS thread for its duration.
// All work is issued on the legacy default stream, so it runs in the order issued and a copy
// to the host waits for the kernels before it.
type Device struct {
	ordinal      int
	dev          int32
	ctx          uintptr
	name         string
	major, minor int
	sms          int
	driver       int // driver API version, e.g. 13000

	mu       sync.Mutex
	modules  map[string]*Module // by compiled image key
	blas     *BLAS
	blasTF32 *BLAS
	closed   bool

	staging staging
}

// Count returns the number of CUDA devices, or an error wrapping ErrUnavailable if the
// driver cannot be loaded or initialized.
func Count(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := loadDriver(); err != nil {
		return 0, err
	}
	var n int32
	if err := cuErr("cuDeviceGetCount", cu.deviceGetCount(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// Open loads the driver (once per process) and opens device ordinal. A missing driver, no
// device or an ordinal out of range is an error wrapping ErrUnavailable.
func Open(ctx context.Context, ordinal int) (*Device, error) {
	n, err := Count(ctx)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: no CUDA device", ErrUnavailable)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("%w: no CUDA device %d (%d present)", ErrUnavailable, ordinal, n)
	}
	d := &Device{ordinal: ordinal, modules: map[string]*Module{}}
	if err := cuErr("cuDeviceGet", cu.deviceGet(&d.dev, int32(ordinal))); err != nil {
		return nil, err
	}
	name := make([]byte, 256)
	if err := cuErr("cuDeviceGetName", cu.deviceGetName(&name[0], int32(len(name)), d.dev)); err != nil {
		return nil, err
	}
	d.name = goString(&name[0])
	for _, a := range []struct {
		attr int32
		v    *int
	}{{attrComputeMajor, &d.major}, {attrComputeMinor, &d.minor}, {attrMultiprocessorCount, &d.sms}} {
		var v int32
		if err := cuErr("cuDeviceGetAttribute", cu.deviceGetAttribute(&v, a.attr, d.dev)); err != nil {
			return nil, err
		}
		*a.v = int(v)
	}
	var ver int32
	if err := cuErr("cuDriverGetVersion", cu.driverGetVersion(&ver)); err != nil {
		return nil, err
	}
	d.driver = int(ver)
	// The primary context is the one the runtime API (PyTorch, cuBLAS) shares per device.
	if err := cuErr("cuDevicePrimaryCtxRetain", cu.primaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return nil, err
	}
	return d, nil
}

// enter makes the device's context current on this goroutine's OS thread, locked until the
// returned function is called.
func (d *Device) enter() (leave func(), err error) {
	runtime.LockOSThread()
	if d.closed {
		runtime.UnlockOSThread()
		return nil, errClosed
	}
	if err := cuErr("cuCtxSetCurrent", cu.ctxSetCurrent(d.ctx)); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return runtime.UnlockOSThread, nil
}

// Name returns the device's name, e.g. "NVIDIA H100 80GB HBM3".
func (d *Device) Name() string { return d.name }

// Ordinal returns the device's index.
func (d *Device) Ordinal() int { return d.ordinal }

// ComputeCapability returns the major and minor compute capability (9, 0 for an H100).
func (d *Device) ComputeCapability() (major, minor int) { return d.major, d.minor }

// Multiprocessors returns the number of streaming multiprocessors.
func (d *Device) Multiprocessors() int { return d.sms }

// DriverVersion returns the driver API version, e.g. 13000 for CUDA 13.0.
func (d *Device) DriverVersion() int { return d.driver }

// String describes the device in one line.
func (d *Device) String() string {
	return fmt.Sprintf("cuda:%d %s (sm_%d%d, %d SMs, driver API %d.%d)", d.ordinal, d.name, d.major, d.minor, d.sms, d.driver/1000, d.driver%1000/10)
}

// MemInfo returns the free and total device memory in bytes.
func (d *Device) MemInfo(ctx context.Context) (free, total int64, err error) {
	leave, err := d.enter()
	if err != nil {
		return 0, 0, err
	}
	defer leave()
	var f, t uint64
	if err := cuErr("cuMemGetInfo", cu.memGetInfo(&f, &t)); err != nil {
		return 0, 0, err
	}
	return int64(f), int64(t), nil
}

// Synchronize waits until all work issued on the device has finished; it returns the error of
// a failed kernel.
func (d *Device) Synchronize(ctx context.Context) error {
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return cuErr("cuCtxSynchronize", cu.ctxSynchronize())
}

// Close releases the device's cuBLAS handle, modules and primary context. Buffers must have
// been freed before.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	for _, b := range []**BLAS{&d.blas, &d.blasTF32} {
		if *b != nil {
			keep(cublasErr("cublasDestroy", blas.destroy((*b).h)))
			*b = nil
		}
	}
	for k, m := range d.modules {
		keep(cuErr("cuModuleUnload", cu.moduleUnload(m.h)))
		delete(d.modules, k)
	}
	keep(d.staging.free())
	keep(cuErr("cuDevicePrimaryCtxRelease", cu.primaryCtxRelease(d.dev)))
	d.closed = true
	return first
}

// Ptr is a device address.
type Ptr uint64

// Add returns p advanced by bytes.
func (p Ptr) Add(bytes int) Ptr { return p + Ptr(bytes) }

// Buffer is device memory.
type Buffer struct {
	d    *Device
	ptr  Ptr
	size int
}

// Alloc allocates bytes of device memory (not initialized).
func (d *Device) Alloc(ctx context.Context, bytes int) (*Buffer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if bytes <= 0 {
		return nil, fmt.Errorf("cuda: Alloc(%d)", bytes)
	}
	leave, err := d.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	var p uint64
	if err := cuErr("cuMemAlloc", cu.memAlloc(&p, uint64(bytes))); err != nil {
		return nil, fmt.Errorf("allocating %d MiB on %s: %w", bytes>>20, d.name, err)
	}
	return &Buffer{d: d, ptr: Ptr(p), size: bytes}, nil
}

// Alloc allocates device memory for n elements of T.
func Alloc[T Elem](ctx context.Context, d *Device, n int) (*Buffer, error) {
	var z T
	return d.Alloc(ctx, n*int(unsafe.Sizeof(z)))
}

// Ptr returns the buffer's device address.
func (b *Buffer) Ptr() Ptr { return b.ptr }

// Size returns the buffer's size in bytes.
func (b *Buffer) Size() int { return b.size }

// Free releases the memory; freeing twice is a no-op.
func (b *Buffer) Free() error {
	if b == nil || b.ptr == 0 {
		return nil
	}
	leave, err := b.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	err = cuErr("cuMemFree", cu.memFree(uint64(b.ptr)))
	b.ptr = 0
	return err
}

// Zero sets bytes [off, off+n) of the buffer to 0.
func (b *Buffer) Zero(ctx context.Context, off, n int) error {
	if off < 0 || n < 0 || off+n > b.size {
		return fmt.Errorf("cuda: Zero [%d, %d) of a %d-byte buffer", off, off+n, b.size)
	}
	if n == 0 {
		return nil
	}
	leave, err := b.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return cuErr("cuMemsetD8", cu.memsetD8(uint64(b.ptr.Add(off)), 0, uint64(n)))
}

// Elem is a type that can be copied to and from device memory.
type Elem interface {
	~float32 | ~float64 | ~int32 | ~uint32 | ~int64 | ~uint64 | ~uint8 | ~int8 | ~uint16 | ~int16
}

func elemSize[T Elem]() int {
	var z T
	return int(unsafe.Sizeof(z))
}

// Upload copies src to the buffer, starting at element off (counted in T).
func Upload[T Elem](ctx context.Context, dst *Buffer, off int, src []T) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	es := elemSize[T]()
	if off < 0 || (off+len(src))*es > dst.size {
		return fmt.Errorf("cuda: upload of %d elements at %d into a %d-byte buffer", len(src), off, dst.size)
	}
	if len(src) == 0 {
		return nil
	}
	leave, err := dst.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	n := len(src) * es
	if n >= 2*stagingBytes {
		err = dst.d.staging.upload(uint64(dst.ptr.Add(off*es)), unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), n))
	} else {
		err = cuErr("cuMemcpyHtoD", cu.memcpyHtoD(uint64(dst.ptr.Add(off*es)), unsafe.Pointer(&src[0]), uint64(n)))
	}
	runtime.KeepAlive(src)
	return err
}

// Download copies len(dst) elements from the buffer, starting at element off, after the work
// issued before it has finished.
func Download[T Elem](ctx context.Context, dst []T, src *Buffer, off int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	es := elemSize[T]()
	if off < 0 || (off+len(dst))*es > src.size {
		return fmt.Errorf("cuda: download of %d elements at %d from a %d-byte buffer", len(dst), off, src.size)
	}
	if len(dst) == 0 {
		return nil
	}
	leave, err := src.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	err = cuErr("cuMemcpyDtoH", cu.memcpyDtoH(unsafe.Pointer(&dst[0]), uint64(src.ptr.Add(off*es)), uint64(len(dst)*es)))
	runtime.KeepAlive(dst)
	return err
}

// Copy copies bytes between device buffers of one device.
func Copy(ctx context.Context, dst *Buffer, dstOff int, src *Buffer, srcOff, bytes int) error {
	if dstOff < 0 || srcOff < 0 || dstOff+bytes > dst.size || srcOff+bytes > src.size {
		return fmt.Errorf("cuda: copy of %d bytes out of bounds", bytes)
	}
	leave, err := dst.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return cuErr("cuMemcpyDtoD", cu.memcpyDtoD(uint64(dst.ptr.Add(dstOff)), uint64(src.ptr.Add(srcOff)), uint64(bytes)))
}
