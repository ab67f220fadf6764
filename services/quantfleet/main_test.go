//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testMode makes this test binary act as quantfleet (supervisor and child) with a child that
// behaves as the mode says; only this test binary knows the variable.
const testMode = "QUANTFLEET_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(testMode); mode != "" {
		os.Exit(supervise(func() int { return childBehaviour(mode) }))
	}
	os.Exit(m.Run())
}

func childBehaviour(mode string) int {
	switch mode {
	case "exit0":
		return 0
	case "exit1":
		return 1
	case "exit2":
		return 2
	case "panic":
		panic("boom in main")
	case "goroutine panic":
		go func() { panic("boom in a goroutine") }()
		time.Sleep(time.Minute)
	case "fatal error":
		debug.SetMaxStack(1 << 20)
		var recurse func(n int) int
		recurse = func(n int) int { return recurse(n+1) + 1 }
		return recurse(0)
	case "killed":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	case "echo":
		b, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		os.Stdout.WriteString("child got " + b)
		return 0
	case "wait for SIGTERM":
		ctx, _ := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		os.Stdout.WriteString("ready\n")
		<-ctx.Done()
		return 3 // a deliberate status after a clean stop
	case "cli":
		// the real command line, through the real supervisor
		return runCLI(strings.Fields(os.Getenv("QUANTFLEET_TEST_ARGS")))
	}
	return 99
}

// TestSupervisorExitCodes: deliberate statuses pass through; a panic, a fatal runtime error (which
// Go's runtime reports with status 2, quantfleet's bad-input status) or a kill of the command
// exits 1; stdin/stdout pass through; SIGTERM reaches the command.
func TestSupervisorExitCodes(t *testing.T) {
	shared := filepath.Join("..", "..", "..", "shared", "models", "tiny-llama")
	cases := []struct {
		mode, args, stdin string
		code              int
		stdout, stderr    string
	}{
		{mode: "exit0", code: 0},
		{mode: "exit1", code: 1},
		{mode: "exit2", code: 2},
		{mode: "panic", code: 1, stderr: "boom in main"},
		{mode: "goroutine panic", code: 1, stderr: "boom in a goroutine"},
		{mode: "fatal error", code: 1, stderr: "stack overflow"},
		{mode: "killed", code: 1, stderr: "signal: killed"},
		{mode: "echo", stdin: "hello\n", code: 0, stdout: "child got hello"},
		{mode: "cli", args: "quantize --model " + shared + " --level Q9_K", code: 2, stderr: "Q9_K"},
		{mode: "cli", args: "nonsense", code: 2, stderr: "unknown command"},
		{mode: "cli", args: "status j1 --nats-url nats://127.0.0.1:1 --nats-connect-timeout 200ms", code: 1, stderr: "unreachable"},
	}
	for _, c := range cases {
		t.Run(c.mode+" "+c.args, func(t *testing.T) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), testMode+"="+c.mode, "QUANTFLEET_TEST_ARGS="+c.args)
			cmd.Stdin = strings.NewReader(c.stdin)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			if got := cmd.ProcessState.ExitCode(); got != c.code {
				t.Errorf("exit %d, want %d; stderr: %.2000s", got, c.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), c.stdout) || !strings.Contains(stderr.String(), c.stderr) {
				t.Errorf("stdout %q (want %q), stderr %.2000q (want %q)", stdout.String(), c.stdout, stderr.String(), c.stderr)
			}
		})
	}
}

// TestSupervisorForwardsSignals: SIGTERM sent to the supervisor reaches the command, which stops
// cleanly with its own status.
func TestSupervisorForwardsSignals(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), testMode+"=wait for SIGTERM")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("child said %q", line)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if got := cmd.ProcessState.ExitCode(); got != 3 {
		t.Errorf("exit %d, want the command's own 3", got)
	}
}
