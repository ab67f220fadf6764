package llamacuda

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/perplexity"
	"quantfleet.dev/libs/quantize"
)

// evalData is the evaluation text: $QUANTFLEET_EVAL, else eval.txt beside $QUANTFLEET_CALIB,
// else ../shared/data/eval.txt.
func evalData(t testing.TB) string {
	if p := os.Getenv("QUANTFLEET_EVAL"); p != "" {
		return p
	}
	if c := os.Getenv("QUANTFLEET_CALIB"); c != "" {
		if p := filepath.Join(filepath.Dir(c), "eval.txt"); fileExists(p) {
			return p
		}
		return c
	}
	return shared(t, "QUANTFLEET_EVAL", "data", "eval.txt")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// evalBoth evaluates the model in dir on the CPU (quantize.Evaluate, the eval command's path)
// and on the GPU (Evaluate) and checks that the perplexities agree within 1e-4 relative and
// every window's mean NLL within 1e-4 absolute. It returns the GPU's perplexity.
func evalBoth(t *testing.T, name, dir string, ctxLen, windows int) float64 {
	t.Helper()
	d := openGPU(t)
	ctx := context.Background()
	req := quantize.EvalRequest{ModelDir: dir, DataPath: evalData(t), Ctx: ctxLen, Windows: windows}
	t0 := time.Now()
	cpu, err := quantize.Evaluate(ctx, req)
	if err != nil {
		t.Fatalf("FAIL %s: CPU eval: %v", name, err)
	}
	tc := time.Since(t0)
	t0 = time.Now()
	gpu, err := Evaluate(ctx, d, req)
	if err != nil {
		t.Fatalf("FAIL %s: GPU eval: %v", name, err)
	}
	tg := time.Since(t0)
	rel := math.Abs(gpu.Perplexity-cpu.Perplexity) / cpu.Perplexity
	var worst float64
	for i := range cpu.WindowNLL {
		worst = max(worst, math.Abs(gpu.WindowNLL[i]-cpu.WindowNLL[i]))
	}
	status := "PASS"
	if !(rel <= 1e-4) || !(worst <= 1e-4) || gpu.Tokens != cpu.Tokens {
		status = "FAIL"
		t.Errorf("FAIL %s: perplexity GPU %.6f CPU %.6f (rel %.2e, bound 1e-4); worst window |ΔNLL| %.2e (bound 1e-4); tokens %d/%d",
			name, gpu.Perplexity, cpu.Perplexity, rel, worst, gpu.Tokens, cpu.Tokens)
	}
	t.Logf("%s eval %s (%d×%d): perplexity GPU %.6f CPU %.6f rel %.2e, worst window |ΔNLL| %.2e; CPU %.2fs GPU %.2fs",
		status, name, windows, ctxLen, gpu.Perplexity, cpu.Perplexity, rel, worst, tc.Seconds(), tg.Seconds())
	return gpu.Perplexity
}

// TestEvalTinyLlama: `eval --device cuda` agrees with `eval --device cpu` within 1e-4
// relative on tiny-llama (bf16), on 400 windows of 512 tokens (the quality protocol's eval)
// and on 3 windows of 2047 (rope tables and attention tiles of long windows).
func TestEvalTinyLlama(t *testing.T) {
	dir := shared(t, "QUANTFLEET_TINY_LLAMA", "models", "tiny-llama")
	n := 400
	if testing.Short() {
		n = 40
	}
	evalBoth(t, "bf16", dir, 512, n)
	evalBoth(t, "bf16-long", dir, 2047, 3)
}

// TestEvalGPTQTinyLlama quantizes tiny-llama to GPTQ 4-bit g128 (asymmetric, act-order) with
// quantize.Layered twice, on the CPU and on the GPU (quantize.WithCompute(Compute): the path
// of `quantize --device cuda`), on 128×512 calibration tokens, and checks:
//   - each checkpoint's GPU perplexity agrees with its CPU perplexity within 1e-4 relative;
//   - the GPU-quantized checkpoint's perplexity is within 1% of the CPU-quantized one's
//     (GPTQ runs on slightly different float32 sums differ by a few tenths of a percent);
//   - the GPU quantization is deterministic: a second GPU run writes byte-identical files.
func TestEvalGPTQTinyLlama(t *testing.T) {
	checkQuantizeOnGPU(t, openGPU(t), domain.FormatGPTQ, domain.LayerOptions{Sym: false, ActOrder: true, Damp: 0.01, SeqLen: 512}, "gptq", 0.01)
}

// checkQuantizeOnGPU quantizes tiny-llama (format, 4 bits, group 128, 128×512 calibration
// tokens) with the CPU's arithmetic and twice with the GPU's (quantize.WithCompute), and checks:
// each checkpoint's GPU perplexity agrees with its CPU one (evalBoth); the GPU-quantized
// perplexity is within tol (relative) of the CPU-quantized one; the two GPU runs wrote
// byte-identical checkpoints.
func checkQuantizeOnGPU(t *testing.T, d *cuda.Device, format domain.OutputFormat, opts domain.LayerOptions, name string, tol float64) {
	ctx := context.Background()
	dir := shared(t, "QUANTFLEET_TINY_LLAMA", "models", "tiny-llama")
	calib := shared(t, "QUANTFLEET_CALIB", "data", "calib.txt")
	out := t.TempDir()
	quant := func(run string, gpu bool) (string, time.Duration) {
		qctx := ctx
		if gpu {
			qctx = quantize.WithCompute(ctx, &Compute{D: d})
		}
		t0 := time.Now()
		res, err := quantize.Layered(qctx, quantize.Request{ModelDir: dir, ModelName: "tiny-llama", CalibrationData: calib,
			CalibrationSamples: 128, OutputDir: out, OutputName: run}, format, "4bit", 128, opts)
		if err != nil {
			t.Fatalf("FAIL quantize %s: %v", run, err)
		}
		return res.OutputPath, time.Since(t0)
	}
	cpuDir, tc := quant("cpu", false)
	gpuDir, tg := quant("gpu", true)
	gpuDir2, _ := quant("gpu2", true)
	t.Logf("quantize tiny-llama %s 4bit g128, 128×512 tokens: CPU %.1fs, GPU %.1fs", name, tc.Seconds(), tg.Seconds())
	n := 400
	if testing.Short() {
		n = 40
	}
	pc := evalBoth(t, name+"-cpu-quantized", cpuDir, 512, n)
	pg := evalBoth(t, name+"-gpu-quantized", gpuDir, 512, n)
	rel := (pg - pc) / pc
	if math.Abs(rel) > tol {
		t.Errorf("FAIL %s GPU-quantized perplexity %.4f vs CPU-quantized %.4f: %+.3f%% (bound ±%g%%)", name, pg, pc, 100*rel, 100*tol)
	} else {
		t.Logf("PASS %s GPU-quantized perplexity %.4f vs CPU-quantized %.4f: %+.3f%% (bound ±%g%%)", name, pg, pc, 100*rel, 100*tol)
	}
	same, diff := compareDirs(t, gpuDir, gpuDir2)
	if !same {
		t.Errorf("FAIL two GPU %s quantizations differ: %s", name, diff)
	} else {
		t.Logf("PASS two GPU %s quantizations wrote byte-identical checkpoints", name)
	}
}

// compareDirs reports whether two checkpoint directories hold the same files with the same
// bytes.
func compareDirs(t *testing.T, a, b string) (bool, string) {
	t.Helper()
	ea, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := os.ReadDir(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ea) != len(eb) {
		return false, "different file lists"
	}
	for i, e := range ea {
		if eb[i].Name() != e.Name() {
			return false, "different file lists: " + e.Name() + " vs " + eb[i].Name()
		}
		x, err := os.ReadFile(filepath.Join(a, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join(b, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if string(x) != string(y) {
			return false, e.Name() + " differs"
		}
	}
	return true, ""
}

// TestEvaluateModelErrors: windows of unequal lengths are refused before any device work.
func TestEvaluateModelErrors(t *testing.T) {
	d := openGPU(t)
	m := tinyLlama(t)
	if _, err := EvaluateModel(context.Background(), d, m, [][]int{{1, 2, 3}, {1, 2}}, perplexity.Options{}); err == nil {
		t.Error("FAIL unequal windows accepted")
	}
}
