package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// EnvLibDir names a directory searched first for the CUDA libraries.
const EnvLibDir = "QUANTFLEET_CUDA_LIB_DIR"

// fixedDirs are searched after $QUANTFLEET_CUDA_LIB_DIR and $LD_LIBRARY_PATH.
var fixedDirs = []string{
	"/usr/local/cuda/lib64",
	"/usr/local/cuda/targets/x86_64-linux/lib",
	"/usr/lib/x86_64-linux-gnu",
	"/usr/local/nvidia/lib64",
}

// pipGlobs find the libraries of the pip nvidia-* wheels (PyTorch's CUDA): nvidia/<pkg>/lib,
// and nvidia/cu13/lib for the CUDA 13 wheels.
var pipGlobs = []string{
	"/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib",
	"/opt/*/venv/lib/python3*/site-packages/nvidia/*/lib",
	"/usr/local/lib/python3*/dist-packages/nvidia/*/lib",
	"/usr/local/lib/python3*/site-packages/nvidia/*/lib",
	"/usr/lib/python3/dist-packages/nvidia/*/lib",
}

// searchDirs returns the directories searched for a library, in order, without duplicates.
// getenv and glob are parameters so that tests can fake the environment.
func searchDirs(getenv func(string) string, glob func(string) ([]string, error)) []string {
	var dirs []string
	add := func(d string) {
		if d != "" && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	add(getenv(EnvLibDir))
	for _, d := range filepath.SplitList(getenv("LD_LIBRARY_PATH")) {
		add(d)
	}
	for _, d := range fixedDirs {
		add(d)
	}
	for _, g := range pipGlobs {
		m, _ := glob(g)
		slices.Sort(m)
		slices.Reverse(m) // newer Python and cu13 before cu12
		for _, d := range m {
			add(d)
		}
	}
	return dirs
}

// library is one shared library to load: candidate file names, most preferred first.
type library struct {
	what  string   // for messages: "the CUDA driver"
	names []string // libcuda.so.1, ...
	// companions are loaded from the same directory first (globally), so that the library's
	// dependencies resolve even when that directory is not on the loader's path.
	companions []string
}

var (
	libDriver = library{what: "the CUDA driver", names: []string{"libcuda.so.1", "libcuda.so"}}
	libNVRTC  = library{what: "NVRTC", names: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"},
		companions: []string{"libnvrtc-builtins.so*"}}
	libCUBLAS = library{what: "cuBLAS", names: []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so"},
		companions: []string{"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"}}
)

// open loads the first candidate found in dirs; if none exists there, it asks the system
// loader for each name (ld.so.cache finds the driver wherever the distribution put it).
// The error is one line naming the library and where it was looked for.
func (l library) open(dirs []string) (handle uintptr, path string, err error) {
	for _, d := range dirs {
		for _, n := range l.names {
			p := filepath.Join(d, n)
			if _, err := os.Stat(p); err != nil {
				continue
			}
			l.openCompanions(d)
			h, err := dlopen(p)
			if err != nil {
				return 0, "", fmt.Errorf("%w: loading %s: %v", ErrUnavailable, p, err)
			}
			return h, p, nil
		}
	}
	for _, n := range l.names {
		if h, err := dlopen(n); err == nil {
			return h, n, nil
		}
	}
	return 0, "", fmt.Errorf("%w: %s (%s) not found in $%s, $LD_LIBRARY_PATH, %s, the pip nvidia/*/lib directories or the system loader's path",
		ErrUnavailable, l.what, strings.Join(l.names, ", "), EnvLibDir, strings.Join(fixedDirs, ", "))
}

func (l library) openCompanions(dir string) {
	for _, pat := range l.companions {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		if len(m) > 0 {
			slices.Sort(m)
			// Failure is not fatal here: the library's own load reports what is missing.
			_, _ = dlopen(m[len(m)-1])
			return
		}
	}
}

// bind sets each function pointer of fns (name → pointer to a func variable) to the symbol of
// that name in lib.
func bind(lib uintptr, path string, fns map[string]any) error {
	for name, fp := range fns {
		sym, err := dlsym(lib, name)
		if err != nil {
			return fmt.Errorf("%w: %s has no symbol %s (too old?)", ErrUnavailable, path, name)
		}
		registerFunc(fp, sym)
	}
	return nil
}

// loadState is the result of loading one library, once per process.
type loadState struct {
	once sync.Once
	path string
	err  error
}

var loaded struct{ driver, nvrtc, cublas loadState }

// load opens lib, binds its symbols and runs then (if not nil) on the handle, once.
func (s *loadState) load(lib library, symbols func() map[string]any, then func(h uintptr, path string) error) error {
	s.once.Do(func() {
		if !cudaBuilt {
			s.err = errNotBuilt
			return
		}
		h, path, err := lib.open(searchDirs(os.Getenv, filepath.Glob))
		if err != nil {
			s.err = err
			return
		}
		s.path = path
		if s.err = bind(h, path, symbols()); s.err == nil && then != nil {
			s.err = then(h, path)
		}
	})
	return s.err
}

// loadDriver loads libcuda and calls cuInit once per process.
func loadDriver() error {
	return loaded.driver.load(libDriver, driverSymbols, func(_ uintptr, path string) error {
		if r := cu.init(0); r != 0 {
			what := "cuInit failed"
			if r == cudaErrorNoDevice {
				what = "no CUDA device"
			}
			return fmt.Errorf("%w: %s (%s, driver %s)", ErrUnavailable, what, cuErrorName(r), path)
		}
		return nil
	})
}

func loadNVRTC() error { return loaded.nvrtc.load(libNVRTC, nvrtcSymbols, nil) }

func loadCUBLAS() error {
	return loaded.cublas.load(libCUBLAS, cublasSymbols, func(h uintptr, _ string) error {
		// Optional: names of status codes (cuBLAS ≥ 11.4.2); a table covers older ones.
		if sym, err := dlsym(h, "cublasGetStatusName"); err == nil {
			registerFunc(&blas.getStatusName, sym)
		}
		return nil
	})
}

// Libraries reports the paths of the libraries loaded so far (for logs and test output).
func Libraries() (driver, nvrtc, cublas string) {
	return loaded.driver.path, loaded.nvrtc.path, loaded.cublas.path
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	var n int
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// cString returns s as a NUL-terminated byte slice kept in Go memory.
func cString(s string) []byte { return append([]byte(s), 0) }

var errClosed = errors.New("cuda: use of a freed object")
