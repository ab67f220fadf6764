// Package device chooses where a command computes: on the CPU or on a CUDA GPU (--device
// auto|cpu|cuda). It opens the GPU through libs/cuda and checks that everything the GPU
// paths need loads (the driver, a device, NVRTC and cuBLAS) before any work starts, so that
// a command asked for a GPU it cannot use fails at once with one line.
package device

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"quantfleet.dev/libs/cuda"
	"quantfleet.dev/libs/fault"
)

// Kind is what the user asked for.
type Kind string

// Kinds.
const (
	Auto Kind = "auto" // CUDA when a usable GPU, driver, NVRTC and cuBLAS are found, else CPU
	CPU  Kind = "cpu"
	CUDA Kind = "cuda"
)

// ErrBadDevice reports a --device value that is not auto, cpu, cuda or cuda:N.
var ErrBadDevice = fault.New(fault.ErrBadInput, "bad device")

// Spec is a parsed --device value.
type Spec struct {
	Kind    Kind
	Ordinal int // the GPU of cuda:N (0 for cuda and auto)
}

func (s Spec) String() string {
	if s.Kind == CUDA && s.Ordinal != 0 {
		return "cuda:" + strconv.Itoa(s.Ordinal)
	}
	return string(s.Kind)
}

// Parse reads a --device value: auto, cpu, cuda or cuda:N ("" is auto).
func Parse(s string) (Spec, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	switch v {
	case "", string(Auto):
		return Spec{Kind: Auto}, nil
	case string(CPU):
		return Spec{Kind: CPU}, nil
	case string(CUDA):
		return Spec{Kind: CUDA}, nil
	}
	if n, ok := strings.CutPrefix(v, "cuda:"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 {
			return Spec{Kind: CUDA, Ordinal: i}, nil
		}
	}
	return Spec{}, fmt.Errorf("%w %q: want auto, cpu, cuda or cuda:N", ErrBadDevice, s)
}

// Device is the chosen device: the CPU, or an opened GPU.
type Device struct {
	// GPU is the opened CUDA device; nil on the CPU.
	GPU *cuda.Device
	// Fallback says why auto chose the CPU ("" when it did not).
	Fallback string
}

// Select opens the device s asks for. CUDA that cannot be used is an error wrapping
// cuda.ErrUnavailable (bad input) naming what was not found; auto falls back to the CPU
// then, with the reason in Fallback.
func Select(ctx context.Context, s Spec) (*Device, error) {
	if s.Kind == CPU {
		return &Device{}, nil
	}
	g, err := openGPU(ctx, s.Ordinal)
	if err == nil {
		return &Device{GPU: g}, nil
	}
	if s.Kind == Auto && errors.Is(err, cuda.ErrUnavailable) {
		return &Device{Fallback: err.Error()}, nil
	}
	return nil, fmt.Errorf("--device %s: %w", s, err)
}

// openGPU opens the device and loads NVRTC and cuBLAS: the GPU paths need all three.
func openGPU(ctx context.Context, ordinal int) (*cuda.Device, error) {
	g, err := cuda.Open(ctx, ordinal)
	if err != nil {
		return nil, err
	}
	if _, _, err := cuda.NVRTCVersion(); err != nil {
		g.Close()
		return nil, err
	}
	if _, err := g.BLAS(ctx); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// IsGPU reports whether the device is a GPU.
func (d *Device) IsGPU() bool { return d != nil && d.GPU != nil }

// Name is "cpu" or "cuda".
func (d *Device) Name() string {
	if d.IsGPU() {
		return string(CUDA)
	}
	return string(CPU)
}

// GPUName is the GPU's name ("NVIDIA H100 80GB HBM3"), "" on the CPU.
func (d *Device) GPUName() string {
	if d.IsGPU() {
		return d.GPU.Name()
	}
	return ""
}

// String describes the device in one line, for logs.
func (d *Device) String() string {
	if d.IsGPU() {
		return d.GPU.String()
	}
	if d.Fallback != "" {
		return "cpu (auto: " + d.Fallback + ")"
	}
	return "cpu"
}

// Record adds the device to a result's quantization metadata: "device" (cpu or cuda) and,
// on a GPU, "gpu" (its name).
func (d *Device) Record(meta map[string]any) {
	if meta == nil {
		return
	}
	meta["device"] = d.Name()
	if d.IsGPU() {
		meta["gpu"] = d.GPUName()
	}
}

// Close releases the GPU; a no-op on the CPU.
func (d *Device) Close() error {
	if d.IsGPU() {
		return d.GPU.Close()
	}
	return nil
}

// LogFields describes the choice made for asked, for the one log line a command or worker
// writes when it starts: the device, what was asked, the GPU and why auto fell back to the CPU.
func (d *Device) LogFields(asked Spec) []zap.Field {
	fields := []zap.Field{zap.String("device", d.Name()), zap.String("asked", asked.String())}
	if d.IsGPU() {
		fields = append(fields, zap.String("gpu", d.GPUName()), zap.Stringer("detail", d))
	}
	if d.Fallback != "" {
		fields = append(fields, zap.String("fallback", d.Fallback))
	}
	return fields
}
