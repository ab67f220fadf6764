// Command assembler is quantfleet's last step: it stitches a job's header and shards into the
// final file in object storage (server-side part copies), validates it, records the result and
// marks the job COMPLETED. See README.md.
package main

import (
	"context"
	"flag"
	"os"

	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/assembler"
)

func main() {
	var cfg assembler.Config
	fleet.Main("assembler", ":8083", func(fs *flag.FlagSet, _ *fleet.ServiceFlags) {
		fs.IntVar(&cfg.Slots, "concurrency", 1, "assemblies run at the same time")
		fs.StringVar(&cfg.Name, "name", os.Getenv("ASSEMBLER_NAME"), "name in logs (default hostname-pid)")
		fs.BoolVar(&cfg.KeepShards, "keep-shards", false, "keep a completed job's shards and completion records (inspection, tests)")
	}, func(ctx context.Context, svc *fleet.Service, sf *fleet.ServiceFlags) error {
		cfg.Backoff = sf.Backoff
		return assembler.New(svc.RT, cfg, svc.Registry, svc.Log).Run(ctx)
	})
}
