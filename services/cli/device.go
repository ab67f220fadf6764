package cli

import (
	"context"
	"flag"

	"go.uber.org/zap"

	"quantfleet.dev/libs/cuda/llamacuda"
	"quantfleet.dev/libs/device"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/hfquant"
	"quantfleet.dev/libs/quantize"
)

// deviceFlag is --device of quantize, run and eval: one registration, one selection. After
// open, dev is the chosen device and gpu the GPU arithmetic's options ($QUANTFLEET_GPU_TF32).
type deviceFlag struct {
	value string
	spec  device.Spec
	dev   *device.Device
	gpu   llamacuda.Options
}

func (f *deviceFlag) register(fs *flag.FlagSet) {
	fs.StringVar(&f.value, "device", string(device.Auto),
		"where to compute: auto (a CUDA GPU when one is usable, else the CPU), cpu, cuda or cuda:N")
}

// open selects the device and logs the choice. A bad value is a usage error; a GPU asked for
// that cannot be used is bad input (cuda.ErrUnavailable): exit 2 with one line naming what was
// not found. Close the device when done.
func (f *deviceFlag) open(ctx context.Context, env Env, log *zap.Logger) (*device.Device, error) {
	s, err := device.Parse(f.value)
	if err != nil {
		return nil, usageError{err}
	}
	d, err := device.Select(ctx, s)
	if err != nil {
		return nil, err
	}
	f.spec, f.dev = s, d
	fields := d.LogFields(s)
	if d.IsGPU() {
		f.gpu = llamacuda.OptionsFromEnv(env.Getenv)
		fields = append(fields, zap.Bool("tf32", f.gpu.TF32), zap.Bool("awq_half", f.gpu.AWQHalf))
	}
	log.Info("device selected", fields...)
	return d, nil
}

// withLayers returns ctx under which the layered pipeline (quantize, and the fleet's workers
// of run) quantizes calibrated GPTQ and AWQ layers on the GPU; round-to-nearest stays on the
// CPU, which is logged.
func (f *deviceFlag) withLayers(ctx context.Context, format domain.OutputFormat, o domain.LayerOptions, log *zap.Logger) context.Context {
	if !f.dev.IsGPU() {
		return ctx
	}
	if format == domain.FormatGGUF {
		log.Warn("GGUF conversion runs on the CPU")
		return ctx
	}
	// Handles reads the method and RTN only; the bits and group size do not matter here.
	if !llamacuda.Handles(quantize.NewLayerConfig(format, 4, domain.DefaultGroupSize, o)) {
		log.Warn("the GPU quantizes calibrated GPTQ and AWQ layers only: this job's layers run on the CPU",
			zap.String("format", string(format)), zap.Bool("rtn", o.RTN))
	}
	return quantize.WithCompute(ctx, &llamacuda.Compute{D: f.dev.GPU, Options: f.gpu})
}

// record adds the device to a result's metadata: "device", and on a GPU "gpu" (its name),
// "gpu_tf32" when calibrated GPTQ or AWQ layers ran with TF32 forwards and "gpu_awq_half" when
// AWQ's grid used halves (GGUF and round-to-nearest run on the CPU: neither is recorded).
func (f *deviceFlag) record(meta map[string]any) map[string]any {
	if meta == nil {
		meta = map[string]any{}
	}
	f.dev.Record(meta)
	if !f.dev.IsGPU() {
		return meta
	}
	method := meta["method"]
	if f.gpu.TF32 && (method == string(hfquant.GPTQ) || method == string(hfquant.AWQ)) {
		meta["gpu_tf32"] = true
	}
	if f.gpu.AWQHalf && method == string(hfquant.AWQ) {
		meta["gpu_awq_half"] = true
	}
	return meta
}
