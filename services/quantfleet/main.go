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
	os.Exit(supervise(func() int { return runCLI(os.Args[1:]) }))
}

func runCLI(args []string) int {
	// No stop: the process exits right after, and a signal arriving late (a terminal's Ctrl-C also
	// forwarded by the supervisor) must not kill it with the default action before it has exited.
	ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	return cli.Run(ctx, cli.DefaultEnv(), args)
}
