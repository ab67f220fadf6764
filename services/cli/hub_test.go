package cli

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/gguf/ggufdump"
	"quantfleet.dev/libs/hub/hubtest"
)

// TestQuantizeFromHub downloads tiny-llama from a local fake of the Hugging Face Hub (a private
// repository, so the token is needed) and checks the result and that the token leaks nowhere.
func TestQuantizeFromHub(t *testing.T) {
	shared := sharedDir(t)
	const token = "hf_SECRETtokenDoNotLeak1234"
	srv := hubtest.New(t)
	if _, err := srv.AddDir("quantfleet/tiny-llama", filepath.Join(shared, "models", "tiny-llama")); err != nil {
		t.Fatal(err)
	}
	srv.Private("quantfleet/tiny-llama", token)
	cache := t.TempDir()
	t.Setenv("HF_HOME", cache)
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_TOKEN", "")
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
			if k == "HF_ENDPOINT" {
				return srv.URL
			}
			return ""
		}}
		return Run(context.Background(), env, args), out.String(), errb.String()
	}

	out := t.TempDir()
	code, _, stderr := run("quantize", "--model", "quantfleet/tiny-llama", "--level", "Q8_0", "--output-dir", out, "--output-name", "x.gguf")
	if code == 0 || !strings.Contains(stderr, "--hf-token") {
		t.Fatalf("without a token: exit %d, stderr %q; want an access error naming --hf-token", code, stderr)
	}

	code, stdout, stderr := run("quantize", "--model", "quantfleet/tiny-llama", "--level", "Q8_0", "--output-dir", out,
		"--output-name", "x.gguf", "--hf-token", token, "--json", "--verbosity", "debug")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want, err := ggufdump.LoadDump(filepath.Join(shared, "reference", "tiny-llama", "Q8_0.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ggufdump.DumpFile(filepath.Join(out, "x.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	// A Hub model is named by its id, as the converter names it with --remote.
	if diffs := ggufdump.CompareDump(want, got, []string{"general.name"}); len(diffs) > 0 {
		t.Fatalf("differences: %v", diffs)
	}
	if name, _ := got.Get("general.name"); name != "quantfleet/tiny-llama" {
		t.Errorf("general.name = %v, want the Hub id", name)
	}
	if strings.Contains(stdout+stderr, token) {
		t.Error("the token appears in the command's output")
	}
	filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(token)) {
				t.Errorf("the token is stored in %s", p)
			}
		}
		return nil
	})
}
