package fleet_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"quantfleet.dev/libs/device"
	"quantfleet.dev/services/fleet"
)

// exitEnv makes the test binary run one case of TestExit as a service's main would, and exit.
const exitEnv = "QUANTFLEET_TEST_EXIT_CASE"

// TestExit runs fleet.Exit in a child process (it ends the process) and checks the exit status a
// service gives: 2 for bad input (a --device value the worker refuses), 1 for other errors, 0 for
// none, with one line on stderr naming the service.
func TestExit(t *testing.T) {
	cases := map[string]struct {
		err  func() error
		code int
	}{
		"bad device": {func() error {
			_, err := device.Parse("gpu")
			return fmt.Errorf("--device: %w", err)
		}, 2},
		"runtime": {func() error { return errors.New("nats: connection refused") }, 1},
		"nil":     {func() error { return nil }, 0},
	}
	if name := os.Getenv(exitEnv); name != "" {
		fleet.Exit("worker", cases[name].err())
		return
	}
	for name, c := range cases {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExit$")
		cmd.Env = append(os.Environ(), exitEnv+"="+name)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code {
			t.Errorf("%s: exit %d, want %d (stderr %q)", name, code, c.code, stderr.String())
		}
		if e := c.err(); e != nil && stderr.String() != "worker: "+e.Error()+"\n" {
			t.Errorf("%s: stderr %q, want one line naming the service and the error", name, stderr.String())
		}
	}
}
