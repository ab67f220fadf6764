// Command quantfleet quantizes Hugging Face models to GGUF, GPTQ and AWQ, on this machine or on a
// quantfleet fleet.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"quantfleet.dev/services/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, cli.DefaultEnv(), os.Args[1:])
	stop()
	os.Exit(code)
}
