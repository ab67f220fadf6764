// Command assembler is quantfleet's last step: it stitches a job's header and shards into the
// final file in object storage (server-side part copies), validates it, records the result and
// marks the job COMPLETED. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/assembler"
)

func main() {
	fleet.Exit("assembler", run())
}

func run() error {
	var sf fleet.ServiceFlags
	var cfg assembler.Config
	fs := flag.NewFlagSet("assembler", flag.ContinueOnError)
	sf.Register(fs, nil, ":8083")
	fs.IntVar(&cfg.Slots, "concurrency", 1, "assemblies run at the same time")
	fs.StringVar(&cfg.Name, "name", os.Getenv("ASSEMBLER_NAME"), "name in logs (default hostname-pid)")
	fs.BoolVar(&cfg.KeepShards, "keep-shards", false, "keep a completed job's shards and completion records (inspection, tests)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg.Backoff = sf.Backoff
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := sf.Start(ctx, "assembler")
	if err != nil {
		return err
	}
	defer svc.Close()
	return assembler.New(svc.RT, cfg, svc.Registry, svc.Log).Run(ctx)
}
