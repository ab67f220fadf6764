//go:build !linux

package main

import "os/exec"

// Without Pdeathsig a killed parent would leave the child running: run in-process.
const canSupervise = false

func setParentDeathSignal(*exec.Cmd) {}

func closeOnExec(int) {}
