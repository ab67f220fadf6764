package main

import (
	"os/exec"
	"syscall"
)

const canSupervise = true

// setParentDeathSignal makes the kernel send the child SIGTERM (a clean stop) if the parent dies.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// closeOnExec keeps the report pipe from leaking into processes the child might start.
func closeOnExec(fd int) { syscall.CloseOnExec(fd) }
