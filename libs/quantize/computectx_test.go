package quantize

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/sharedtest"
)

// warmCPU is the CPU with start-up work: Warm counts its calls and returns err.
type warmCPU struct {
	CPU
	calls atomic.Int32
	err   error
}

func (w *warmCPU) Warm(context.Context) error {
	w.calls.Add(1)
	return w.err
}

// TestLayeredWarmsCompute: the local pipeline runs its compute's Warm once for a calibrated job
// and not for round-to-nearest; a start-up error fails the job with it, leaving nothing at the
// output path.
func TestLayeredWarmsCompute(t *testing.T) {
	model := sharedtest.Path(t, "models", "tiny-llama")
	calib := sharedtest.Path(t, "data", "calib.txt")
	errStart := errors.New("no kernels")
	for _, tc := range []struct {
		name  string
		rtn   bool
		err   error
		calls int32
	}{
		{"gptq", false, nil, 1},
		{"rtn", true, nil, 0},
		{"failing", false, errStart, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := &warmCPU{err: tc.err}
			req := Request{ModelDir: model, CalibrationData: calib, CalibrationSamples: 2, SeqLen: 32,
				TempDir: dir, OutputDir: dir, OutputName: "out"}
			_, err := Layered(WithCompute(context.Background(), w), req, domain.FormatGPTQ, "4bit", 128, domain.LayerOptions{RTN: tc.rtn})
			if !errors.Is(err, tc.err) {
				t.Fatalf("Layered: %v, want %v", err, tc.err)
			}
			if got := w.calls.Load(); got != tc.calls {
				t.Errorf("Warm called %d times, want %d", got, tc.calls)
			}
			if _, statErr := os.Stat(filepath.Join(dir, "out")); (tc.err == nil) != (statErr == nil) {
				t.Errorf("output path after %v: %v", err, statErr)
			}
		})
	}
}
