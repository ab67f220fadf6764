package device

import (
	"context"
	"errors"
	"testing"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/fault"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Spec
		bad  bool
	}{
		{"", Spec{Kind: Auto}, false},
		{"auto", Spec{Kind: Auto}, false},
		{"CPU", Spec{Kind: CPU}, false},
		{"cuda", Spec{Kind: CUDA}, false},
		{"cuda:1", Spec{Kind: CUDA, Ordinal: 1}, false},
		{"cuda:-1", Spec{}, true},
		{"cuda:x", Spec{}, true},
		{"gpu", Spec{}, true},
		{"rocm", Spec{}, true},
	} {
		got, err := Parse(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrBadDevice) || !fault.BadInput(err) {
				t.Errorf("Parse(%q) = %v, %v; want a bad-input error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// gpuPresent reports whether this machine can open a CUDA device.
func gpuPresent(t *testing.T) bool {
	t.Helper()
	n, err := cuda.Count(context.Background())
	return err == nil && n > 0
}

func TestSelectCPU(t *testing.T) {
	d, err := Select(context.Background(), Spec{Kind: CPU})
	if err != nil || d.IsGPU() || d.Name() != "cpu" {
		t.Fatalf("Select(cpu) = %v, %v", d, err)
	}
	meta := map[string]any{}
	d.Record(meta)
	if meta["device"] != "cpu" || meta["gpu"] != nil {
		t.Errorf("metadata %v", meta)
	}
}

// TestSelectWithoutGPU: on a machine without a usable GPU auto picks the CPU and says why,
// and cuda fails with a bad-input error of one line.
func TestSelectWithoutGPU(t *testing.T) {
	if gpuPresent(t) {
		t.Skip("a CUDA device is present")
	}
	ctx := context.Background()
	d, err := Select(ctx, Spec{Kind: Auto})
	if err != nil || d.IsGPU() || d.Fallback == "" {
		t.Fatalf("Select(auto) = %+v, %v; want the CPU with a reason", d, err)
	}
	_, err = Select(ctx, Spec{Kind: CUDA})
	if !errors.Is(err, cuda.ErrUnavailable) || !fault.BadInput(err) {
		t.Fatalf("Select(cuda) = %v; want cuda.ErrUnavailable", err)
	}
	t.Logf("cuda: %v", err)
}

// TestSelectGPU runs on a GPU machine: cuda and auto open it and record its name.
func TestSelectGPU(t *testing.T) {
	if !gpuPresent(t) {
		t.Skip("no CUDA device")
	}
	ctx := context.Background()
	for _, k := range []Kind{Auto, CUDA} {
		d, err := Select(ctx, Spec{Kind: k})
		if err != nil || !d.IsGPU() {
			t.Fatalf("FAIL Select(%s) = %v, %v", k, d, err)
		}
		meta := map[string]any{}
		d.Record(meta)
		if meta["device"] != "cuda" || meta["gpu"] == "" {
			t.Errorf("FAIL metadata %v", meta)
		}
		t.Logf("PASS %s: %s", k, d)
		d.Close()
	}
	if _, err := Select(ctx, Spec{Kind: CUDA, Ordinal: 99}); !errors.Is(err, cuda.ErrUnavailable) {
		t.Errorf("FAIL cuda:99 = %v; want ErrUnavailable", err)
	}
}
