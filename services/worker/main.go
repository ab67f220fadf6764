// Command worker is quantfleet's stateless worker: it pulls one task per free slot from its pool,
// reads only the byte ranges of the tensors it needs from object storage, writes one shard per
// task with a checksum and records the completion. See README.md.
package main

import (
	"context"
	"flag"
	"os"

	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/worker"
)

func main() {
	var cfg worker.Config
	fleet.Main("worker", ":8082", func(fs *flag.FlagSet, _ *fleet.ServiceFlags) {
		pool := os.Getenv("POOL")
		if pool == "" {
			pool = queue.PoolCPU
		}
		fs.StringVar(&cfg.Pool, "pool", pool, "worker pool: cpu or gpu (env POOL)")
		fs.IntVar(&cfg.Slots, "concurrency", 1, "tasks run at the same time (one pulled per free slot)")
		fs.StringVar(&cfg.Name, "name", os.Getenv("WORKER_NAME"), "worker name in results and logs (default hostname-pid) (env WORKER_NAME)")
		fs.IntVar(&cfg.Models, "model-cache", 4, "opened checkpoints kept between tasks")
	}, func(ctx context.Context, svc *fleet.Service, sf *fleet.ServiceFlags) error {
		// A test knob, deliberately not a flag: hold every task this long (heartbeats continue).
		cfg.TaskDelay = fleet.EnvDuration("QUANTFLEET_TEST_TASK_DELAY")
		cfg.Backoff = sf.Backoff
		return worker.New(svc.RT, cfg, svc.Registry, svc.Log).Run(ctx)
	})
}
