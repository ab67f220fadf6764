// Package sharedtest locates the read-only data that lies beside the repository in ../shared: the
// tiny-llama checkpoint, calibration and evaluation text, and llama.cpp's reference outputs.
// Tests that need it skip without it, except under CI (env CI set), where its absence fails them.
package sharedtest

import (
	"os"
	"path/filepath"
	"testing"
)

// startDir is the working directory when the test binary started (the package directory). It is
// read once, before any test runs: an embedded S3 gateway changes the working directory later.
var startDir, startErr = os.Getwd()

// Dir returns the absolute path of ../shared, found by walking up from the package directory to
// the workspace root (the directory holding go.work).
func Dir(tb testing.TB) string {
	tb.Helper()
	if startErr != nil {
		tb.Fatal(startErr)
	}
	if s := Find(); s != "" {
		return s
	}
	missing(tb, "../shared")
	return ""
}

// Find is Dir for code without a testing.TB (TestMain): "" when ../shared is missing.
func Find() string {
	if startErr != nil {
		return ""
	}
	for d := startDir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			s := filepath.Join(filepath.Dir(d), "shared")
			if st, err := os.Stat(s); err == nil && st.IsDir() {
				return s
			}
			return ""
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Path returns Dir joined with elem, which must exist.
func Path(tb testing.TB, elem ...string) string {
	tb.Helper()
	p := filepath.Join(append([]string{Dir(tb)}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		missing(tb, p)
	}
	return p
}

func missing(tb testing.TB, what string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("shared test data %s is missing", what)
	}
	tb.Skipf("shared test data %s is missing", what)
}
