package cuda

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/x448/float16"

	"quantfleet.dev/libs/fault"
)

func TestSearchDirs(t *testing.T) {
	env := map[string]string{EnvLibDir: "/opt/x", "LD_LIBRARY_PATH": "/a:/usr/local/cuda/lib64::/opt/x"}
	glob := func(p string) ([]string, error) {
		if strings.HasPrefix(p, "/opt/*/.venv") {
			return []string{"/opt/t/.venv/lib/python3.12/site-packages/nvidia/cu12/lib", "/opt/t/.venv/lib/python3.12/site-packages/nvidia/cu13/lib"}, nil
		}
		return nil, nil
	}
	got := searchDirs(func(k string) string { return env[k] }, glob)
	want := []string{"/opt/x", "/a", "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
		"/usr/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib64",
		"/opt/t/.venv/lib/python3.12/site-packages/nvidia/cu13/lib", "/opt/t/.venv/lib/python3.12/site-packages/nvidia/cu12/lib"}
	if !slices.Equal(got, want) {
		t.Fatalf("search dirs\n%q\nwant\n%q", got, want)
	}
}

// TestLibraryNotFound checks the one-line error for a missing library: it names the library
// and is bad input (a command asked for a GPU this machine cannot provide exits 2).
func TestLibraryNotFound(t *testing.T) {
	l := library{what: "the frobnicator", names: []string{"libfrobnicate.so.7"}}
	_, _, err := l.open([]string{t.TempDir()})
	if err == nil {
		t.Fatal("no error for a missing library")
	}
	if !errors.Is(err, ErrUnavailable) || !fault.BadInput(err) {
		t.Errorf("error %v is not ErrUnavailable / bad input", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "libfrobnicate.so.7") || strings.Contains(msg, "\n") || !strings.Contains(msg, EnvLibDir) {
		t.Errorf("error %q should be one line naming the library and %s", msg, EnvLibDir)
	}
}

// TestLibraryLoadFails checks that a file that exists but is not a library is reported with
// its path.
func TestLibraryLoadFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "libfrobnicate.so.7")
	if err := os.WriteFile(p, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := library{what: "the frobnicator", names: []string{"libfrobnicate.so.7"}}
	_, _, err := l.open([]string{dir})
	if err == nil || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v, want ErrUnavailable naming %s", err, p)
	}
}

// TestOpenWithoutGPU: where there is no driver or no device (CI), Open fails with
// ErrUnavailable and a message saying what is missing; on a GPU machine it must succeed.
func TestOpenWithoutGPU(t *testing.T) {
	d, err := Open(context.Background(), 0)
	if err == nil {
		t.Logf("GPU present: %v", d)
		d.Close()
		return
	}
	t.Logf("Open: %v", err)
	if !errors.Is(err, ErrUnavailable) || !fault.BadInput(err) {
		t.Fatalf("Open error %v is not ErrUnavailable / bad input", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("Open error %q is not one line", err)
	}
	if !strings.Contains(err.Error(), "libcuda.so.1") && !strings.Contains(err.Error(), "device") && !strings.Contains(err.Error(), "-tags nocuda") {
		t.Fatalf("Open error %q names neither the driver library nor the device", err)
	}
	// The failure is remembered: a second call answers the same without searching again.
	if _, err2 := Open(context.Background(), 0); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second Open: %v", err2)
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Lib: "cu", Call: "cuMemAlloc", Code: 2, Name: "CUDA_ERROR_OUT_OF_MEMORY"}
	if got := e.Error(); got != "cuda: cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY (2)" {
		t.Fatal(got)
	}
	if err := cublasErr("cublasSgemm", 15); err == nil || !strings.Contains(err.Error(), "CUBLAS_STATUS_NOT_SUPPORTED") {
		t.Fatalf("cuBLAS error %v", err)
	}
	if cuErr("x", 0) != nil || cublasErr("x", 0) != nil || nvrtcErr("x", 0) != nil {
		t.Fatal("success reported as an error")
	}
}

// openGPU opens device 0 or skips the test when there is none.
func openGPU(t testing.TB) *Device {
	t.Helper()
	d, err := Open(context.Background(), 0)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("no GPU: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDevice(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	free, total, err := d.MemInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	drv, _, _ := Libraries()
	t.Logf("%v, memory %d / %d MiB free, driver library %s", d, free>>20, total>>20, drv)
	if major, _ := d.ComputeCapability(); major < 3 || total <= 0 || free <= 0 || free > total || d.Name() == "" {
		t.Fatalf("implausible device properties: %v, %d/%d", d, free, total)
	}
	if _, err := Open(ctx, 1<<20); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open of a missing ordinal: %v", err)
	}
}

func TestMemory(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	b, err := Alloc[float64](ctx, d, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	c, err := Alloc[float64](ctx, d, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Free()
	src := make([]float64, 1000)
	for i := range src {
		src[i] = float64(i) * 1.5
	}
	if err := Upload(ctx, b, 0, src); err != nil {
		t.Fatal(err)
	}
	if err := b.Zero(ctx, 8*10, 8*5); err != nil {
		t.Fatal(err)
	}
	if err := Copy(ctx, c, 0, b, 0, 8000); err != nil {
		t.Fatal(err)
	}
	got := make([]float64, 995)
	if err := Download(ctx, got, c, 5); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		want := src[i+5]
		if i+5 >= 10 && i+5 < 15 {
			want = 0
		}
		if v != want {
			t.Fatalf("element %d: %v, want %v", i+5, v, want)
		}
	}
	if err := Upload(ctx, b, 1, src); err == nil {
		t.Fatal("out-of-bounds upload accepted")
	}
	var ce *Error
	if _, err := d.Alloc(ctx, 1<<50); !errors.As(err, &ce) || !strings.HasPrefix(ce.Name, "CUDA_ERROR_") {
		t.Fatalf("allocating 1 PiB: %v, want a named CUDA error (out of memory)", err)
	} else {
		t.Logf("allocating 1 PiB: %v", err)
	}
}

// TestUploadStaged: an upload large enough to go through the page-locked staging buffers
// (several chunks, the last one ragged, at an offset) arrives intact, also twice in a row (the
// buffers reused) and after a kernel that writes the same buffer (the copy ordered after it).
func TestUploadStaged(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	n := 2*stagingBytes/4*3/2 + 12345 // 3½ chunks of float32
	src := make([]float32, n)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range src {
		src[i] = rng.Float32()
	}
	b, err := Alloc[float32](ctx, d, n+7)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	got := make([]float32, n)
	for round := range 2 {
		if round == 1 {
			for i := range src {
				src[i] = -src[i]
			}
			if err := b.Zero(ctx, 0, 4*(n+7)); err != nil { // queued before the upload
				t.Fatal(err)
			}
		}
		if err := Upload(ctx, b, 7, src); err != nil {
			t.Fatal(err)
		}
		if err := Download(ctx, got, b, 7); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != src[i] {
				t.Fatalf("round %d: element %d of %d is %v, want %v", round, i, n, got[i], src[i])
			}
		}
	}
}

const testKernels = `
extern "C" __global__ void axpy(float *y, const float *x, float a, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) y[i] += a * x[i];
}
extern "C" __global__ void fill64(double *y, double v, long long n) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) y[i] = v + (double)i;
}
`

func TestKernel(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	m, err := d.Module(ctx, "test.cu", testKernels, "--fmad=false")
	if err != nil {
		t.Fatal(err)
	}
	if m2, err := d.Module(ctx, "test.cu", testKernels, "--fmad=false"); err != nil || m2 != m {
		t.Fatalf("second Module call: %v (same module: %v)", err, m2 == m)
	}
	major, minor, _ := NVRTCVersion()
	_, nv, _ := Libraries()
	t.Logf("NVRTC %d.%d (%s), module arch %s", major, minor, nv, m.Arch())
	axpy, err := m.Function("axpy")
	if err != nil {
		t.Fatal(err)
	}
	const n = 100003
	x, y := make([]float32, n), make([]float32, n)
	for i := range x {
		x[i], y[i] = float32(i), 1
	}
	bx, _ := Alloc[float32](ctx, d, n)
	by, _ := Alloc[float32](ctx, d, n)
	defer bx.Free()
	defer by.Free()
	Upload(ctx, bx, 0, x)
	Upload(ctx, by, 0, y)
	if err := axpy.Launch(ctx, Dim3{X: (n + 255) / 256}, Dim3{X: 256}, 0, by.Ptr(), bx.Ptr(), float32(0.5), int32(n)); err != nil {
		t.Fatal(err)
	}
	if err := Download(ctx, y, by, 0); err != nil {
		t.Fatal(err)
	}
	for i, v := range y {
		if v != 1+0.5*float32(i) {
			t.Fatalf("y[%d] = %v", i, v)
		}
	}
	fill, _ := m.Function("fill64")
	bz, _ := Alloc[float64](ctx, d, 10)
	defer bz.Free()
	if err := fill.Launch(ctx, Dim3{X: 1}, Dim3{X: 32}, 0, bz, 2.5, int64(10)); err != nil {
		t.Fatal(err)
	}
	z := make([]float64, 10)
	Download(ctx, z, bz, 0)
	if z[9] != 11.5 {
		t.Fatalf("fill64: %v", z)
	}
	if err := fill.Launch(ctx, Dim3{X: 1}, Dim3{X: 32}, 0, bz, 2.5, 10); err == nil {
		t.Fatal("int argument accepted")
	}
	if _, err := m.Function("nope"); err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_NOT_FOUND") {
		t.Fatalf("missing kernel: %v", err)
	}
	// Compile errors carry NVRTC's name and log.
	_, err = d.Module(ctx, "bad.cu", `extern "C" __global__ void k() { undeclared(); }`)
	var ce *Error
	if !errors.As(err, &ce) || ce.Name != "NVRTC_ERROR_COMPILATION" || !strings.Contains(ce.Log, "undeclared") {
		t.Fatalf("compile error: %v", err)
	}
}

// TestGemm compares every transpose combination with a float64 product. The error bound is
// float32's: with TF32 (10-bit mantissa) it would be about 1e-3 relative.
func TestGemm(t *testing.T) {
	d, b := openBLAS(t)
	ctx := context.Background()
	t.Logf("cuBLAS %d", b.Version())
	rng := rand.New(rand.NewPCG(1, 2))
	const m, n, k = 70, 90, 1030
	for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
		ta, tb := tr[0], tr[1]
		a, bb := randMat(rng, m*k), randMat(rng, k*n)
		c := randMat(rng, m*n)
		lda, ldb := k, n
		at := func(i, p int) float64 { return float64(a[i*k+p]) }
		bt := func(p, j int) float64 { return float64(bb[p*n+j]) }
		if ta {
			lda = m
			at = func(i, p int) float64 { return float64(a[p*m+i]) }
		}
		if tb {
			ldb = k
			bt = func(p, j int) float64 { return float64(bb[j*k+p]) }
		}
		da, db, dc := upload(t, d, a), upload(t, d, bb), upload(t, d, c)
		if err := b.Gemm(ctx, ta, tb, m, n, k, 2, da.Ptr(), lda, db.Ptr(), ldb, 0.5, dc.Ptr(), n); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, m*n)
		if err := Download(ctx, got, dc, 0); err != nil {
			t.Fatal(err)
		}
		var worst float64
		for i := range m {
			for j := range n {
				var s, abs float64
				for p := range k {
					s += at(i, p) * bt(p, j)
					abs += math.Abs(at(i, p) * bt(p, j))
				}
				want := 2*s + 0.5*float64(c[i*n+j])
				worst = max(worst, math.Abs(float64(got[i*n+j])-want)/(2*abs+1))
			}
		}
		t.Logf("trans %v %v: worst error / Σ|a·b| = %.2g", ta, tb, worst)
		if worst > 2e-6 {
			t.Errorf("trans %v %v: error %.3g relative to Σ|a·b| (TF32 on?)", ta, tb, worst)
		}
		da.Free()
		db.Free()
		dc.Free()
	}
}

// TestGemmStridedBatched: each triple of a batch is the product of its own A and B (here
// transposed B shared by all triples, stride 0) with float32's error, and rows past m of a
// strided C are left alone.
func TestGemmStridedBatched(t *testing.T) {
	d, b := openBLAS(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	const m, n, k, count = 33, 20, 70, 3
	const sa, sc = m*k + 5, (m + 2) * n // padded strides: the extra rows of C must stay untouched
	a, bb, c := randMat(rng, count*sa), randMat(rng, n*k), randMat(rng, count*sc)
	da, db, dc := upload(t, d, a), upload(t, d, bb), upload(t, d, c)
	defer da.Free()
	defer db.Free()
	defer dc.Free()
	if err := b.GemmStridedBatched(ctx, false, true, m, n, k, 1.5, da.Ptr(), k, sa, db.Ptr(), k, 0, 0, dc.Ptr(), n, sc, count); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, len(c))
	if err := Download(ctx, got, dc, 0); err != nil {
		t.Fatal(err)
	}
	var worst float64
	for p := range count {
		for i := m; i < m+2; i++ {
			if !slices.Equal(got[p*sc+i*n:p*sc+(i+1)*n], c[p*sc+i*n:p*sc+(i+1)*n]) {
				t.Fatalf("triple %d: row %d past m written", p, i)
			}
		}
		worst = max(worst, worstABt(got[p*sc:], a[p*sa:], bb, m, n, k, 1.5))
	}
	t.Logf("worst error / Σ|a·b| = %.2g", worst)
	if worst > 2e-6 {
		t.Errorf("error %.3g relative to Σ|a·b|", worst)
	}
}

// TestGemmHalf: on inputs that are half-precision values, the half GEMM's error is float32
// summation's (the products of two halves are exact in float32; the tensor cores' sums may
// truncate rather than round, hence a bound of 1e-5 rather than IEEE's 2e-6).
func TestGemmHalf(t *testing.T) {
	d, b := openBLAS(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	const m, n, k = 40, 24, 300
	half := func(v []float32) ([]float32, []uint16) {
		bits := make([]uint16, len(v))
		for i, x := range v {
			h := float16.Fromfloat32(x)
			bits[i], v[i] = h.Bits(), h.Float32()
		}
		return v, bits
	}
	a, ab := half(randMat(rng, m*k))
	bb, bbits := half(randMat(rng, n*k))
	da, db, dc := upload(t, d, ab), upload(t, d, bbits), upload(t, d, make([]float32, m*n))
	defer da.Free()
	defer db.Free()
	defer dc.Free()
	if err := b.GemmHalf(ctx, false, true, m, n, k, 1, da.Ptr(), k, db.Ptr(), k, 0, dc.Ptr(), n); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, m*n)
	if err := Download(ctx, got, dc, 0); err != nil {
		t.Fatal(err)
	}
	worst := worstABt(got, a, bb, m, n, k, 1)
	t.Logf("worst error / Σ|a·b| = %.2g", worst)
	if worst > 1e-5 {
		t.Errorf("error %.3g relative to Σ|a·b|", worst)
	}

	// GemmHalfOut: the same sums rounded to half, within one half ulp (its kernel may sum in
	// another order) of the float32 product's rounding.
	dh := upload(t, d, make([]uint16, m*n))
	defer dh.Free()
	if err := b.GemmHalfOut(ctx, false, true, m, n, k, 1, da.Ptr(), k, db.Ptr(), k, 0, dh.Ptr(), n); err != nil {
		t.Fatal(err)
	}
	hbits := make([]uint16, m*n)
	if err := Download(ctx, hbits, dh, 0); err != nil {
		t.Fatal(err)
	}
	for i, h := range hbits {
		want := float16.Fromfloat32(got[i])
		if d := int(h) - int(want.Bits()); d < -1 || d > 1 {
			t.Fatalf("GemmHalfOut element %d: %v (bits %#04x), the float32 product rounds to %v (%#04x)",
				i, float16.Frombits(h).Float32(), h, want.Float32(), want.Bits())
		}
	}
}

// TestGemmTF32: the TF32 handle's products are TF32's (error relative to Σ|a·b| well
// above IEEE float32's), and the IEEE handle is unaffected by its existence.
func TestGemmTF32(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	fast, err := d.BLASTF32(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ieee, err := d.BLAS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fast == ieee {
		t.Fatal("FAIL BLASTF32 returned the IEEE handle")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	const m, n, k = 256, 256, 1024
	a, bb := randMat(rng, m*k), randMat(rng, k*n)
	da, db, dc := upload(t, d, a), upload(t, d, bb), upload(t, d, make([]float32, m*n))
	defer da.Free()
	defer db.Free()
	defer dc.Free()
	worst := func(h *BLAS) float64 {
		if err := h.Gemm(ctx, false, true, m, n, k, 1, da.Ptr(), k, db.Ptr(), k, 0, dc.Ptr(), n); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, m*n)
		if err := Download(ctx, got, dc, 0); err != nil {
			t.Fatal(err)
		}
		return worstABt(got, a, bb, m, n, k, 1)
	}
	wf, wi := worst(fast), worst(ieee)
	t.Logf("TF32 handle: worst error / Σ|a·b| = %.2g; IEEE handle: %.2g", wf, wi)
	if wi > 2e-6 || wf > 2e-3 || wf < 3e-6 {
		t.Errorf("FAIL TF32 %.3g (want 3e-6..2e-3), IEEE %.3g (want ≤ 2e-6)", wf, wi)
	} else {
		t.Logf("PASS TF32 and IEEE handles")
	}
}

func TestSyrk(t *testing.T) {
	d, b := openBLAS(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	const n, k = 77, 500
	a := randMat(rng, k*n)
	c := make([]float32, n*n)
	for i := range c {
		c[i] = -7 // sentinel: the lower triangle must stay
	}
	da, dc := upload(t, d, a), upload(t, d, c)
	defer da.Free()
	defer dc.Free()
	if err := b.SyrkUpper(ctx, n, k, 1, da.Ptr(), n, 0, dc.Ptr(), n); err != nil {
		t.Fatal(err)
	}
	Download(ctx, c, dc, 0)
	for i := range n {
		for j := range n {
			if j < i {
				if c[i*n+j] != -7 {
					t.Fatalf("lower element [%d][%d] changed to %v", i, j, c[i*n+j])
				}
				continue
			}
			var s float64
			for p := range k {
				s += float64(a[p*n+i]) * float64(a[p*n+j])
			}
			if math.Abs(float64(c[i*n+j])-s) > 1e-4*(1+math.Abs(s)) {
				t.Fatalf("[%d][%d] = %v, want %v", i, j, c[i*n+j], s)
			}
		}
	}
}

// worstABt is the error of got = alpha·A·Bᵀ (row-major A m×k, B n×k, got m×n) relative to the
// sum of the absolute products: max over (i, j) of |got[i][j] − alpha·Σ a·b| / (alpha·Σ |a·b|),
// the sums in float64.
func worstABt(got, a, b []float32, m, n, k int, alpha float64) float64 {
	var worst float64
	for i := range m {
		for j := range n {
			var s, abs float64
			for p := range k {
				v := float64(a[i*k+p]) * float64(b[j*k+p])
				s, abs = s+v, abs+math.Abs(v)
			}
			worst = max(worst, math.Abs(float64(got[i*n+j])-alpha*s)/(alpha*abs))
		}
	}
	return worst
}

func randMat(rng *rand.Rand, n int) []float32 {
	m := make([]float32, n)
	for i := range m {
		m[i] = float32(rng.NormFloat64())
	}
	return m
}

// openBLAS is openGPU and its IEEE cuBLAS handle.
func openBLAS(t *testing.T) (*Device, *BLAS) {
	t.Helper()
	d := openGPU(t)
	b, err := d.BLAS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d, b
}

func upload[T Elem](t testing.TB, d *Device, v []T) *Buffer {
	t.Helper()
	b, err := Alloc[T](context.Background(), d, len(v))
	if err != nil {
		t.Fatal(err)
	}
	if err := Upload(context.Background(), b, 0, v); err != nil {
		t.Fatal(err)
	}
	return b
}
