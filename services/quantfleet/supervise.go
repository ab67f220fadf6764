package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
)

// Go's runtime exits with status 2 on an unrecovered panic (in any goroutine) and on a fatal error
// ("runtime: out of memory", "concurrent map writes", a stack overflow) — the status quantfleet
// gives bad input. A fatal error cannot be recovered in-process, so on Linux main runs the CLI in a
// child process: the same binary, re-executed with childEnv naming an extra pipe. The child writes
// its exit status to the pipe just before exiting; the parent exits with it, or with 1 (runtime
// failure) when the child died without reporting (a crash, or a kill). The child inherits stdin,
// stdout and stderr; the parent forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to it, and the child
// gets SIGTERM if the parent dies (Pdeathsig). Elsewhere the CLI runs in-process.
const childEnv = "QUANTFLEET_SUPERVISOR_FD"

var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// supervise runs run in a supervised child and returns the exit status to exit with.
func supervise(run func() int) int {
	if fd := os.Getenv(childEnv); fd != "" || !canSupervise {
		return child(fd, run)
	}
	exe, err := os.Executable()
	if err != nil {
		return child("", run)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return child("", run)
	}
	defer r.Close()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the child
	cmd.Env = append(os.Environ(), childEnv+"=3")
	// Pdeathsig follows the thread that started the child: keep main on it for good.
	runtime.LockOSThread()
	setParentDeathSignal(cmd)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	err = cmd.Start()
	w.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "quantfleet: starting: %v\n", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	var b [1]byte
	n, _ := io.ReadFull(r, b[:]) // EOF when the child exits without reporting
	_ = cmd.Wait()
	signal.Stop(sigs)
	st := cmd.ProcessState
	if n == 1 && st.Exited() && st.ExitCode() == int(b[0]) {
		return int(b[0])
	}
	// A reader that went away (quantfleet list | head) is no news; a crash or a kill is.
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGPIPE {
		fmt.Fprintf(os.Stderr, "quantfleet: the command ended without reporting its status (%v)\n", st)
	}
	return 1
}

// child runs run and reports its status on the file descriptor fd names (when it names one).
func child(fd string, run func() int) int {
	var report *os.File
	if n, err := strconv.Atoi(fd); err == nil {
		os.Unsetenv(childEnv)
		closeOnExec(n)
		report = os.NewFile(uintptr(n), "supervisor")
	}
	code := run()
	if report != nil {
		_, _ = report.Write([]byte{byte(code)})
	}
	return code
}
