package cli

import (
	"context"
	"flag"

	"go.uber.org/zap"

	"quantfleet.dev/libs/cuda/llamacuda"
	"quantfleet.dev/libs/device"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/quantize"
)

// deviceFlag is --device of quantize, run and eval: one registration, one selection.
type deviceFlag struct{ value string }

func (f *deviceFlag) register(fs *flag.FlagSet) {
	fs.StringVar(&f.value, "device", string(device.Auto),
		"where to compute: auto (a CUDA GPU when one is usable, else the CPU), cpu, cuda or cuda:N")
}

// spec parses the flag's value (a usage error when it is not a device).
func (f *deviceFlag) spec() (device.Spec, error) {
	s, err := device.Parse(f.value)
	if err != nil {
		return device.Spec{}, usageError{err}
	}
	return s, nil
}

// open selects the device and logs the choice. A GPU asked for that cannot be used is bad
// input (cuda.ErrUnavailable): exit 2 with one line naming what was not found.
func (f *deviceFlag) open(ctx context.Context, log *zap.Logger) (*device.Device, error) {
	s, err := f.spec()
	if err != nil {
		return nil, err
	}
	d, err := device.Select(ctx, s)
	if err != nil {
		return nil, err
	}
	fields := []zap.Field{zap.String("device", d.Name()), zap.String("asked", s.String())}
	if d.IsGPU() {
		fields = append(fields, zap.String("gpu", d.GPUName()), zap.Stringer("detail", d))
	}
	if d.Fallback != "" {
		fields = append(fields, zap.String("fallback", d.Fallback))
	}
	log.Info("device selected", fields...)
	return d, nil
}

// withLayers returns ctx under which the layered pipeline (quantize, and the fleet's workers
// of run) quantizes calibrated GPTQ layers on d's GPU; AWQ and round-to-nearest stay on the
// CPU, which is logged.
func withLayers(ctx context.Context, d *device.Device, format domain.OutputFormat, o domain.LayerOptions, log *zap.Logger) context.Context {
	if !d.IsGPU() {
		return ctx
	}
	if format == domain.FormatGGUF {
		log.Warn("GGUF conversion runs on the CPU")
		return ctx
	}
	// Handles reads the method and RTN only; the bits and group size do not matter here.
	if !llamacuda.Handles(quantize.NewLayerConfig(format, 4, domain.DefaultGroupSize, o)) {
		log.Warn("the GPU quantizes calibrated GPTQ layers only: this job's layers run on the CPU",
			zap.String("format", string(format)), zap.Bool("rtn", o.RTN))
	}
	return quantize.WithLayerFunc(ctx, llamacuda.LayerFunc(d.GPU))
}

// recordDevice adds the device ("device", and "gpu" on a GPU) to a result's metadata.
func recordDevice(meta map[string]any, d *device.Device) map[string]any {
	if meta == nil {
		meta = map[string]any{}
	}
	d.Record(meta)
	return meta
}
