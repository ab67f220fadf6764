// Command dispatcher is quantfleet's coordinator: it creates the JetStream layout, takes PENDING
// jobs, mirrors Hub models into object storage, plans each job, publishes its tasks, follows the
// workers, keeps checkpoints and hands finished jobs to the assembler. See README.md.
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"go.uber.org/zap"

	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/queue"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/dispatcher"
)

func main() {
	var q queue.Config
	var cfg dispatcher.Config
	var hfEndpoint, hfCache *string
	fleet.Main("dispatcher", ":8081", func(fs *flag.FlagSet, _ *fleet.ServiceFlags) {
		fs.StringVar(&cfg.Pool, "pool", queue.PoolCPU, "worker pool of jobs that name none (cpu or gpu)")
		fs.DurationVar(&q.AckWait, "ack-wait", time.Minute, "how long a silent worker keeps a task before it is redelivered (workers heartbeat at a quarter of it)")
		fs.IntVar(&q.MaxDeliver, "max-deliver", 5, "attempts of a task before it is dead-lettered and its job fails")
		fs.IntVar(&q.MaxAckPending, "max-in-flight", 256, "tasks in flight per pool, fleet-wide")
		fs.IntVar(&q.Replicas, "replicas", 1, "JetStream replicas of streams and buckets (3 on a NATS cluster)")
		fs.IntVar(&cfg.Retries, "retries", 5, "attempts at preparing a job (model, plan) on errors that are neither transient nor permanent")
		fs.DurationVar(&cfg.RetryBackoff, "retry-backoff", time.Second, "first delay between those attempts, doubled each time up to 30s")
		hfEndpoint = fs.String("hf-endpoint", os.Getenv("HF_ENDPOINT"), "Hugging Face Hub endpoint for mirroring (env HF_ENDPOINT); the token comes from env HF_TOKEN")
		hfCache = fs.String("hf-cache", "", "download cache for Hub models (default: the Hugging Face cache, $HF_HOME)")
		fs.StringVar(&cfg.TempDir, "temp-dir", "", "directory for the small model files while planning (default: the system's)")
	}, func(ctx context.Context, svc *fleet.Service, sf *fleet.ServiceFlags) error {
		cfg.Queue = q
		cfg.Backoff = sf.Backoff
		cfg.Hub = &hub.Client{Endpoint: *hfEndpoint, Token: os.Getenv("HF_TOKEN"), CacheDir: *hfCache, Logger: svc.Log}
		cfg.StorageName = "S3 endpoint " + sf.S3Endpoint + ", bucket " + sf.S3Bucket
		go ensureBucket(ctx, svc)
		return dispatcher.New(svc.RT, cfg, svc.Registry, svc.Log).Run(ctx)
	})
}

// ensureBucket creates the fleet's bucket when it is missing, retrying while S3 is unreachable.
func ensureBucket(ctx context.Context, svc *fleet.Service) {
	s3, ok := svc.RT.Store.(interface{ EnsureBucket(context.Context) error })
	if !ok {
		return
	}
	for delay := time.Second; ctx.Err() == nil; delay = min(2*delay, time.Minute) {
		err := s3.EnsureBucket(ctx)
		if err == nil {
			return
		}
		svc.Log.Warn("object storage not ready; jobs will wait and retry", zap.Error(err))
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
}
