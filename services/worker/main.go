// Command worker is quantfleet's stateless worker: it pulls one task per free slot from its pool,
// reads only the byte ranges of the tensors it needs from object storage, writes one shard per
// task with a checksum and records the completion. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"go.uber.org/zap"

	"quantfleet.dev/libs/cuda/llamacuda"
	"quantfleet.dev/libs/device"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/worker"
)

func main() {
	var cfg worker.Config
	var dev string
	fleet.Main("worker", ":8082", func(fs *flag.FlagSet, _ *fleet.ServiceFlags) {
		pool := os.Getenv("POOL")
		if pool == "" {
			pool = queue.PoolCPU
		}
		fs.StringVar(&cfg.Pool, "pool", pool, "worker pool: cpu or gpu (env POOL)")
		fs.IntVar(&cfg.Slots, "concurrency", 1, "tasks run at the same time (one pulled per free slot)")
		fs.StringVar(&cfg.Name, "name", os.Getenv("WORKER_NAME"), "worker name in results and logs (default hostname-pid) (env WORKER_NAME)")
		fs.IntVar(&cfg.Models, "model-cache", 4, "opened checkpoints kept between tasks")
		fs.StringVar(&dev, "device", envOr("DEVICE", string(device.Auto)),
			"where calibrated GPTQ and AWQ layers are quantized: auto (a CUDA GPU when one is usable, else the CPU), cpu, cuda or cuda:N (env DEVICE)")
	}, func(ctx context.Context, svc *fleet.Service, sf *fleet.ServiceFlags) error {
		s, err := device.Parse(dev)
		if err != nil {
			return fmt.Errorf("--device: %w", err)
		}
		d, err := device.Select(ctx, s)
		if err != nil {
			return err // bad input: fleet.Exit exits 2
		}
		svc.Log.Info("device selected", d.LogFields(s)...)
		defer d.Close()
		if d.IsGPU() {
			o := llamacuda.OptionsFromEnv(os.Getenv)
			svc.Log.Info("GPU arithmetic", zap.Bool("tf32", o.TF32), zap.Bool("awq_half", o.AWQHalf))
			ctx = quantize.WithCompute(ctx, &llamacuda.Compute{D: d.GPU, Options: o})
		}
		// A test knob, deliberately not a flag: hold every task this long (heartbeats continue).
		cfg.TaskDelay = fleet.EnvDuration("QUANTFLEET_TEST_TASK_DELAY")
		cfg.Backoff = sf.Backoff
		return worker.New(svc.RT, cfg, svc.Registry, svc.Log).Run(ctx)
	})
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
