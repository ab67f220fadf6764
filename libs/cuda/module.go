package cuda

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// nvrtc holds the NVRTC functions.
var nvrtc struct {
	version            func(major, minor *int32) int32
	createProgram      func(prog *uintptr, src *byte, name *byte, numHeaders int32, headers, includeNames unsafe.Pointer) int32
	compileProgram     func(prog uintptr, numOptions int32, options unsafe.Pointer) int32
	getProgramLogSize  func(prog uintptr, n *uint64) int32
	getProgramLog      func(prog uintptr, log *byte) int32
	getPTXSize         func(prog uintptr, n *uint64) int32
	getPTX             func(prog uintptr, ptx *byte) int32
	getCUBINSize       func(prog uintptr, n *uint64) int32
	getCUBIN           func(prog uintptr, cubin *byte) int32
	destroyProgram     func(prog *uintptr) int32
	getErrorString     func(r int32) string
	getNumSupportedArc func(n *int32) int32
	getSupportedArchs  func(archs *int32) int32
}

func nvrtcSymbols() map[string]any {
	return map[string]any{
		"nvrtcVersion":              &nvrtc.version,
		"nvrtcCreateProgram":        &nvrtc.createProgram,
		"nvrtcCompileProgram":       &nvrtc.compileProgram,
		"nvrtcGetProgramLogSize":    &nvrtc.getProgramLogSize,
		"nvrtcGetProgramLog":        &nvrtc.getProgramLog,
		"nvrtcGetPTXSize":           &nvrtc.getPTXSize,
		"nvrtcGetPTX":               &nvrtc.getPTX,
		"nvrtcGetCUBINSize":         &nvrtc.getCUBINSize,
		"nvrtcGetCUBIN":             &nvrtc.getCUBIN,
		"nvrtcDestroyProgram":       &nvrtc.destroyProgram,
		"nvrtcGetErrorString":       &nvrtc.getErrorString,
		"nvrtcGetNumSupportedArchs": &nvrtc.getNumSupportedArc,
		"nvrtcGetSupportedArchs":    &nvrtc.getSupportedArchs,
	}
}

// image is a compiled module: a CUBIN for the device's architecture or, when NVRTC does not
// know that architecture, PTX for the newest one it knows (the driver compiles it on load).
type image struct {
	data []byte // NUL-terminated for PTX
	ptx  bool
	arch string
	log  string
}

// compiled caches images per process by source hash, options and target architecture, so
// every device of one kind and every Module call share one compilation.
var compiled struct {
	mu     sync.Mutex
	images map[string]*imageOnce
}

type imageOnce struct {
	once sync.Once
	img  *image
	err  error
}

// compile returns the image of src for compute capability cc (e.g. 90), compiling it once.
func compile(src, name string, opts []string, cc int) (*image, error) {
	if err := loadNVRTC(); err != nil {
		return nil, err
	}
	key := imageKey(src, opts, cc)
	compiled.mu.Lock()
	if compiled.images == nil {
		compiled.images = map[string]*imageOnce{}
	}
	e := compiled.images[key]
	if e == nil {
		e = &imageOnce{}
		compiled.images[key] = e
	}
	compiled.mu.Unlock()
	e.once.Do(func() { e.img, e.err = nvrtcCompile(src, name, opts, cc) })
	return e.img, e.err
}

func imageKey(src string, opts []string, cc int) string {
	h := sha256.New()
	h.Write([]byte(src))
	for _, o := range opts {
		h.Write([]byte{0})
		h.Write([]byte(o))
	}
	return fmt.Sprintf("%s/sm_%d", hex.EncodeToString(h.Sum(nil)), cc)
}

// targetArch picks the architecture option for cc: real (sm_XY, a CUBIN) when NVRTC supports
// it, else virtual (compute_XY, PTX) for the newest supported one not above cc.
func targetArch(cc int) (arch string, ptx bool, err error) {
	var n int32
	if err := nvrtcErr("nvrtcGetNumSupportedArchs", nvrtc.getNumSupportedArc(&n)); err != nil {
		return "", false, err
	}
	archs := make([]int32, max(n, 1))
	if err := nvrtcErr("nvrtcGetSupportedArchs", nvrtc.getSupportedArchs(&archs[0])); err != nil {
		return "", false, err
	}
	archs = archs[:n]
	if slices.Contains(archs, int32(cc)) {
		return fmt.Sprintf("sm_%d", cc), false, nil
	}
	best := int32(-1)
	for _, a := range archs {
		if a <= int32(cc) && a > best {
			best = a
		}
	}
	if best < 0 {
		return "", false, fmt.Errorf("%w: NVRTC supports none of the architectures up to sm_%d (it has %v)", ErrUnavailable, cc, archs)
	}
	return fmt.Sprintf("compute_%d", best), true, nil
}

func nvrtcCompile(src, name string, opts []string, cc int) (*image, error) {
	arch, ptx, err := targetArch(cc)
	if err != nil {
		return nil, err
	}
	return nvrtcBuild(src, name, append([]string{"--gpu-architecture=" + arch}, opts...), arch, ptx)
}

func nvrtcBuild(src, name string, opts []string, arch string, ptx bool) (*image, error) {
	csrc, cname := cString(src), cString(name)
	var prog uintptr
	if err := nvrtcErr("nvrtcCreateProgram", nvrtc.createProgram(&prog, &csrc[0], &cname[0], 0, nil, nil)); err != nil {
		return nil, err
	}
	defer nvrtc.destroyProgram(&prog)
	// The option strings and the array of pointers to them live in Go memory for the call.
	cstrs := make([][]byte, len(opts))
	ptrs := make([]*byte, len(opts)+1)
	for i, o := range opts {
		cstrs[i] = cString(o)
		ptrs[i] = &cstrs[i][0]
	}
	r := nvrtc.compileProgram(prog, int32(len(opts)), unsafe.Pointer(&ptrs[0]))
	runtime.KeepAlive(cstrs)
	runtime.KeepAlive(ptrs)
	runtime.KeepAlive(csrc)
	runtime.KeepAlive(cname)
	var logSize uint64
	var log string
	if nvrtc.getProgramLogSize(prog, &logSize) == 0 && logSize > 1 {
		b := make([]byte, logSize)
		if nvrtc.getProgramLog(prog, &b[0]) == 0 {
			log = strings.TrimRight(string(b), "\x00\n ")
		}
	}
	if err := nvrtcErr("nvrtcCompileProgram "+name, r); err != nil {
		err.(*Error).Log = log
		return nil, err
	}
	img := &image{ptx: ptx, arch: arch, log: log}
	var size uint64
	if ptx {
		if err := nvrtcErr("nvrtcGetPTXSize", nvrtc.getPTXSize(prog, &size)); err != nil {
			return nil, err
		}
		img.data = make([]byte, size)
		if err := nvrtcErr("nvrtcGetPTX", nvrtc.getPTX(prog, &img.data[0])); err != nil {
			return nil, err
		}
	} else {
		if err := nvrtcErr("nvrtcGetCUBINSize", nvrtc.getCUBINSize(prog, &size)); err != nil {
			return nil, err
		}
		img.data = make([]byte, size)
		if err := nvrtcErr("nvrtcGetCUBIN", nvrtc.getCUBIN(prog, &img.data[0])); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// NVRTCVersion returns the version of the loaded NVRTC, loading it if needed.
func NVRTCVersion() (major, minor int, err error) {
	if err := loadNVRTC(); err != nil {
		return 0, 0, err
	}
	var a, b int32
	if err := nvrtcErr("nvrtcVersion", nvrtc.version(&a, &b)); err != nil {
		return 0, 0, err
	}
	return int(a), int(b), nil
}

// Module is CUDA C++ source compiled by NVRTC and loaded on one device.
type Module struct {
	d     *Device
	h     uintptr
	arch  string
	mu    sync.Mutex
	funcs map[string]*Function
}

// Module compiles src (CUDA C++, kernels declared extern "C") for the device with the given
// NVRTC options, e.g. "--fmad=false", and loads it. Compilation happens once per process for
// each source, option list and compute capability; loading once per device.
func (d *Device) Module(ctx context.Context, name, src string, opts ...string) (*Module, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cc := d.major*10 + d.minor
	key := imageKey(src, opts, cc)
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.modules[key]; m != nil {
		return m, nil
	}
	img, err := compile(src, name, opts, cc)
	if err != nil {
		return nil, fmt.Errorf("compiling %s for sm_%d: %w", name, cc, err)
	}
	leave, err := d.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	var h uintptr
	if err := cuErr("cuModuleLoadData", cu.moduleLoadData(&h, unsafe.Pointer(&img.data[0]))); err != nil {
		return nil, fmt.Errorf("loading %s (%s) on %s: %w", name, img.arch, d.name, err)
	}
	m := &Module{d: d, h: h, arch: img.arch, funcs: map[string]*Function{}}
	d.modules[key] = m
	return m, nil
}

// Arch returns the architecture the module was compiled for (sm_90, or compute_XY for PTX).
func (m *Module) Arch() string { return m.arch }

// Function is a kernel of a module.
type Function struct {
	d    *Device
	h    uintptr
	name string
}

// Function looks up the kernel called name (extern "C", so not mangled).
func (m *Module) Function(name string) (*Function, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.funcs[name]; f != nil {
		return f, nil
	}
	leave, err := m.d.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	cname := cString(name)
	var h uintptr
	if err := cuErr("cuModuleGetFunction "+name, cu.moduleGetFunction(&h, m.h, &cname[0])); err != nil {
		return nil, err
	}
	f := &Function{d: m.d, h: h, name: name}
	m.funcs[name] = f
	return f, nil
}

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z int }

func (d Dim3) dims() (x, y, z uint32, err error) {
	x, y, z = uint32(max(d.X, 1)), uint32(max(d.Y, 1)), uint32(max(d.Z, 1))
	if d.X < 0 || d.Y < 0 || d.Z < 0 || d.X > math.MaxInt32 || d.Y > 65535 || d.Z > 65535 {
		return 0, 0, 0, fmt.Errorf("cuda: launch dimensions %v out of range", d)
	}
	return x, y, z, nil
}

// Launch starts the kernel (asynchronously) with grid×block threads, shared bytes of dynamic
// shared memory and the given arguments, which must match the kernel's parameters: Ptr for
// pointers, int32, uint32, int64, uint64, float32 or float64 (Go int is refused, its C
// width being ambiguous). Launch errors are returned; errors of the running kernel surface at
// the next synchronizing call.
func (f *Function) Launch(ctx context.Context, grid, block Dim3, shared int, args ...any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	gx, gy, gz, err := grid.dims()
	if err != nil {
		return err
	}
	bx, by, bz, err := block.dims()
	if err != nil {
		return err
	}
	// One 8-byte slot per argument; the driver reads each parameter's size from its slot.
	slots := make([]uint64, len(args)+1)
	params := make([]unsafe.Pointer, len(args)+1)
	for i, a := range args {
		switch v := a.(type) {
		case Ptr:
			slots[i] = uint64(v)
		case *Buffer:
			slots[i] = uint64(v.ptr)
		case int32:
			*(*int32)(unsafe.Pointer(&slots[i])) = v
		case uint32:
			*(*uint32)(unsafe.Pointer(&slots[i])) = v
		case int64:
			slots[i] = uint64(v)
		case uint64:
			slots[i] = v
		case float32:
			*(*float32)(unsafe.Pointer(&slots[i])) = v
		case float64:
			*(*float64)(unsafe.Pointer(&slots[i])) = v
		default:
			return fmt.Errorf("cuda: %s: argument %d has unsupported type %T", f.name, i, a)
		}
		params[i] = unsafe.Pointer(&slots[i])
	}
	leave, err := f.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	r := cu.launchKernel(f.h, gx, gy, gz, bx, by, bz, uint32(shared), 0, unsafe.Pointer(&params[0]), nil)
	runtime.KeepAlive(slots)
	runtime.KeepAlive(params)
	if err := cuErr("cuLaunchKernel "+f.name, r); err != nil {
		return err
	}
	return nil
}

// Resources returns the registers per thread and the local memory per thread (bytes: spilled
// registers and arrays the compiler did not keep in registers) of the compiled kernel.
func (f *Function) Resources() (registers, local int, err error) {
	leave, err := f.d.enter()
	if err != nil {
		return 0, 0, err
	}
	defer leave()
	const attrNumRegs, attrLocalBytes = 4, 3 // CU_FUNC_ATTRIBUTE_NUM_REGS, _LOCAL_SIZE_BYTES
	var r, l int32
	if err := cuErr("cuFuncGetAttribute", cu.funcGetAttribute(&r, attrNumRegs, f.h)); err != nil {
		return 0, 0, err
	}
	if err := cuErr("cuFuncGetAttribute", cu.funcGetAttribute(&l, attrLocalBytes, f.h)); err != nil {
		return 0, 0, err
	}
	return int(r), int(l), nil
}

// SetMaxDynamicShared allows launches with up to bytes of dynamic shared memory (above the
// default 48 KiB limit).
func (f *Function) SetMaxDynamicShared(bytes int) error {
	leave, err := f.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	const attrMaxDynamicShared = 8 // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
	return cuErr("cuFuncSetAttribute", cu.funcSetAttribute(f.h, attrMaxDynamicShared, int32(bytes)))
}
