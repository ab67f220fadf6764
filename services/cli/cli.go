// Package cli implements the quantfleet command line: local quantization, evaluation and the fleet
// client commands. main only wires it to os.Args.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"quantfleet.dev/libs/domain"
	"quantfleet.dev/libs/progress"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitUsage   = 2
)

// usageError marks errors caused by the user's input: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Env is what a command may touch of the process.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// IsTerminal reports whether Stderr is a terminal (progress bars then redraw in place).
	IsTerminal bool
}

type command struct {
	name, summary string
	run           func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"quantize", "quantize a model on this machine (GGUF, GPTQ, AWQ)", runQuantize},
		{"eval", "measure a model's perplexity on a text (HF, GPTQ or AWQ directory)", runEval},
		{"run", "quantize on a whole fleet inside this process (embedded NATS and S3)", runRun},
		{"submit", "submit a job to a fleet (prints the job id; --wait follows it)", runSubmit},
		{"status", "show a job", runStatus},
		{"watch", "follow a job's progress until it ends", runWatch},
		{"list", "list the fleet's jobs", runList},
		{"cancel", "cancel a job (its tasks are dropped, its objects removed)", runCancel},
		{"resume", "resume a job whose fleet stopped (only missing layers are redone)", runResume},
		{"get", "download a job's result (--output-dir) or print a presigned URL (--url)", runGet},
		{"upload", "store a local model in the fleet's object storage once; prints its s3:// URL", runUpload},
		{"dev-servers", "run a NATS and an S3 server for a one-machine fleet (development, tests)", runDevServers},
	}
}

// Run executes the command line args (without the program name) and returns the exit code.
func Run(ctx context.Context, env Env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(env.Stderr)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, env, args[1:])
			return report(env, err)
		}
	}
	fmt.Fprintf(env.Stderr, "quantfleet: unknown command %q (run quantfleet --help)\n", args[0])
	return ExitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: quantfleet <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun quantfleet <command> --help for the command's flags")
}

func report(env Env, err error) int {
	if err == nil {
		return ExitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(env.Stderr, "quantfleet: %s\n", msg)
	if isUsage(err) {
		return ExitUsage
	}
	return ExitRuntime
}

// common holds the flags every command takes.
type common struct {
	json      bool
	verbosity string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.json, "json", false, "print machine-readable JSON events and the result on stdout")
	fs.StringVar(&c.verbosity, "verbosity", "normal", "quiet, normal, verbose or debug")
}

func (c *common) parse() (domain.Verbosity, error) {
	v, err := domain.ParseVerbosity(c.verbosity)
	if err != nil {
		return "", usageError{err}
	}
	return v, nil
}

// logger builds the command's zap logger on stderr: quiet shows errors, normal warnings,
// verbose info, debug everything.
func logger(env Env, v domain.Verbosity, jsonOut bool) *zap.Logger {
	level := map[domain.Verbosity]zapcore.Level{
		domain.VerbosityQuiet: zapcore.ErrorLevel, domain.VerbosityNormal: zapcore.WarnLevel,
		domain.VerbosityVerbose: zapcore.InfoLevel, domain.VerbosityDebug: zapcore.DebugLevel,
	}[v]
	enc := zap.NewDevelopmentEncoderConfig()
	encoder := zapcore.NewConsoleEncoder(enc)
	if jsonOut {
		encoder = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	}
	return zap.New(zapcore.NewCore(encoder, zapcore.AddSync(env.Stderr), level))
}

// reporter picks the progress display: JSON events on stdout, a bar on stderr, or nothing.
func reporter(env Env, v domain.Verbosity, jsonOut bool) progress.Reporter {
	switch {
	case jsonOut:
		return progress.NewJSON(env.Stdout)
	case v == domain.VerbosityQuiet:
		return progress.Nop()
	default:
		return progress.NewBar(env.Stderr)
	}
}

// printResult writes a command's result: one JSON object in --json mode, else a short summary.
func printResult(env Env, jsonOut bool, result any, human func(io.Writer)) error {
	if jsonOut {
		enc := json.NewEncoder(env.Stdout)
		return enc.Encode(map[string]any{"event": "result", "result": result})
	}
	human(env.Stdout)
	return nil
}

// DefaultEnv is the process environment.
func DefaultEnv() Env {
	return Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, IsTerminal: progress.IsTerminal(os.Stderr)}
}
