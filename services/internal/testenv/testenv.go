// Package testenv locates the team's shared test data and starts the real servers the fleet's tests
// run against (an embedded NATS server, the embedded S3 gateway).
package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/hfmodel"
	"quantfleet.dev/libs/quantize"
	"quantfleet.dev/libs/sharedtest"
)

// SharedDir finds ../shared beside the repository root (the directory holding go.work). Without it
// the test skips, except when CI is set.
func SharedDir(t testing.TB) string {
	t.Helper()
	if d := FindShared(); d != "" {
		return d
	}
	if os.Getenv("CI") != "" {
		t.Fatal("../shared (tiny-llama model) is missing")
	}
	t.Skip("../shared is missing")
	return ""
}

// sharedAtInit is FindShared's answer at package initialisation, before anything (such as the
// embedded S3 gateway, which chdirs to its data root) can change the working directory.
var sharedAtInit = findSharedTiny()

// FindShared returns <repo>/../shared, or "" when it has no tiny-llama model. The answer is the one
// for the working directory the process started in.
func FindShared() string { return sharedAtInit }

func findSharedTiny() string {
	s := sharedtest.Find()
	if s == "" {
		return ""
	}
	if _, err := os.Stat(filepath.Join(s, "models", "tiny-llama", "config.json")); err != nil {
		return ""
	}
	return s
}

// TinyLlama returns the path of the tiny-llama checkpoint.
func TinyLlama(t testing.TB) string {
	return filepath.Join(SharedDir(t), "models", "tiny-llama")
}

// QuantizeGGUF is `quantfleet quantize` of a model directory at a GGUF level on this machine: the
// bytes a fleet must write for the same job.
func QuantizeGGUF(t testing.TB, model, level string) []byte {
	t.Helper()
	m, err := hfmodel.OpenDir(model)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := quantize.GGUF(context.Background(), quantize.GGUFRequest{Model: m, ModelDir: model, Level: level, OutputDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(res.OutputPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
