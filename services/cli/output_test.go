package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"quantfleet.dev/libs/atomicfile"
	"quantfleet.dev/libs/domain"
	"quantfleet.dev/services/fleet"
	"quantfleet.dev/services/fleet/client"
	"quantfleet.dev/services/fleet/local"
)

// outputCase is one command writing into out/name where setup left something.
type outputCase struct {
	name  string
	setup func(t *testing.T, path string) // prepares what is at out/name
	args  []string                        // the command line's extra flags
	code  int
	// kept: what setup left must still be there (a failed or refused write); else the output replaced it
	kept    bool
	wantErr string
}

// unrelatedDir is a non-empty directory quantfleet did not write.
func unrelatedDir(t *testing.T, p string) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "precious.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func unrelatedFile(t *testing.T, p string) {
	if err := os.WriteFile(p, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkOutcome checks the exit code and message of a case, and what is at path afterwards.
func checkOutcome(t *testing.T, c outputCase, path string, code int, stderr string) {
	t.Helper()
	msg := strings.TrimSpace(stderr)
	if code != c.code {
		t.Fatalf("exit %d, want %d: %s", code, c.code, msg)
	}
	if c.code != 0 && (strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.wantErr)) {
		t.Errorf("stderr %q: want one line with %q", msg, c.wantErr)
	}
	_, errFile := os.Stat(filepath.Join(path, "precious.txt"))
	b, _ := os.ReadFile(path)
	kept := errFile == nil || string(b) == "precious"
	if kept != c.kept {
		t.Errorf("what was at %s kept: %v, want %v", path, kept, c.kept)
	}
}

// TestQuantizeOutputSafety: quantize replaces an earlier output of the same kind (a GGUF file, a
// checkpoint directory quantfleet wrote) and nothing else, unless --overwrite; it refuses names
// with path parts and an output directory that is a file, with exit 2.
func TestQuantizeOutputSafety(t *testing.T) {
	shared := sharedDir(t)
	model := filepath.Join(shared, "models", "tiny-llama")
	gguf := []string{"--level", "Q8_0"}
	gptq := []string{"--format", "gptq", "--level", "4bit", "--rtn"}
	earlier := func(args ...string) func(t *testing.T, p string) {
		return func(t *testing.T, p string) {
			a := append([]string{"quantize", "--model", model, "--output-dir", filepath.Dir(p), "--output-name", filepath.Base(p), "--verbosity", "quiet"}, args...)
			if code, _, errs := runCLI(t, a...); code != 0 {
				t.Fatalf("earlier run: exit %d: %s", code, errs)
			}
		}
	}
	cases := []outputCase{
		{"gguf over a file that is not GGUF", unrelatedFile, gguf, 2, true, "is a file that is not GGUF"},
		{"gguf over a directory", unrelatedDir, gguf, 2, true, "is a directory"},
		{"gguf over an earlier GGUF", earlier(gguf...), gguf, 0, false, ""},
		{"gguf --overwrite over a file", unrelatedFile, append([]string{"--overwrite"}, gguf...), 0, false, ""},
		{"gptq over an unrelated directory", unrelatedDir, gptq, 2, true, "quantfleet did not write"},
		{"gptq over a file", unrelatedFile, gptq, 2, true, "is a file"},
		{"gptq over its earlier output", earlier(gptq...), gptq, 0, false, ""},
		{"gptq --overwrite over an unrelated directory", unrelatedDir, append([]string{"--overwrite"}, gptq...), 0, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			path := filepath.Join(out, "result")
			c.setup(t, path)
			args := append([]string{"quantize", "--model", model, "--output-dir", out, "--output-name", "result", "--verbosity", "quiet"}, c.args...)
			code, _, errs := runCLI(t, args...)
			checkOutcome(t, c, path, code, errs)
			if c.code == 0 {
				if _, err := os.Stat(filepath.Join(path, "precious.txt")); err == nil {
					t.Error("the old directory's file is in the new output")
				}
			}
		})
	}

	// Names and directories that cannot be outputs.
	file := filepath.Join(t.TempDir(), "file")
	unrelatedFile(t, file)
	bad := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"name ..", []string{"--output-name", ".."}, "not a path"},
		{"name with a directory", []string{"--output-name", "sub/x.gguf"}, "not a path"},
		{"temporary name", []string{"--output-name", ".x.gguf.123.partial"}, "temporary"},
		{"output dir is a file", []string{"--output-dir", file}, "output directory"},
		{"output dir under a file", []string{"--output-dir", filepath.Join(file, "sub")}, "output directory"},
	}
	for _, format := range [][]string{gguf, gptq} {
		for _, c := range bad {
			t.Run(format[1]+" "+c.name, func(t *testing.T) {
				args := append(append([]string{"quantize", "--model", model, "--output-dir", t.TempDir()}, format...), c.args...)
				code, _, errs := runCLI(t, args...)
				if msg := strings.TrimSpace(errs); code != 2 || strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.wantErr) {
					t.Errorf("exit %d, want 2 and one line with %q: %s", code, c.wantErr, msg)
				}
				if b, _ := os.ReadFile(file); string(b) != "precious" {
					t.Errorf("%s was changed", file)
				}
			})
		}
	}
}

// testFleet is an in-process fleet that the CLI's fleet commands reach over TCP, with env naming
// its servers.
type testFleet struct {
	*local.Fleet
	env map[string]string
}

func startTestFleet(t *testing.T) *testFleet {
	t.Helper()
	ctx := context.Background()
	f, err := local.Start(ctx, local.Options{Workers: 1, NATSPort: -1, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cfg := f.Config
	return &testFleet{Fleet: f, env: map[string]string{
		"NATS_URL": cfg.NATSURL, "S3_ENDPOINT": cfg.S3Endpoint, "S3_INSECURE": "true", "S3_BUCKET": cfg.S3Bucket,
		"S3_REGION": cfg.S3Region, "AWS_ACCESS_KEY_ID": cfg.S3AccessKey, "AWS_SECRET_ACCESS_KEY": cfg.S3SecretKey,
	}}
}

// job runs a job to completion and returns its id.
func (f *testFleet) job(t *testing.T, model string, cfg domain.QuantizationConfig, layered *fleet.LayerOptions) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := &client.Client{RT: f.RT}
	sub, err := c.Submit(ctx, client.SubmitRequest{Model: model, Config: cfg, Layered: layered})
	if err != nil {
		t.Fatal(err)
	}
	j, err := c.Wait(ctx, sub.JobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != domain.StatusCompleted {
		t.Fatalf("job %s: %s", j.Status, j.ErrorMessage)
	}
	return sub.JobID
}

// cli runs a command with the fleet's environment.
func (f *testFleet) cli(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return f.env[k] }}
	code := Run(context.Background(), env, args)
	return code, out.String(), errb.String()
}

// TestGetOutputSafety: get validates --output-name as quantize does (".." once deleted the parent
// of the output directory) and replaces only what quantfleet wrote, unless --overwrite.
func TestGetOutputSafety(t *testing.T) {
	shared := sharedDir(t)
	model := filepath.Join(shared, "models", "tiny-llama")
	f := startTestFleet(t)
	ggufJob := f.job(t, model, domain.DefaultConfig(domain.FormatGGUF, "Q8_0"), nil)
	gptqJob := f.job(t, model, domain.DefaultConfig(domain.FormatGPTQ, "4bit"), &fleet.LayerOptions{LayerOptions: domain.LayerOptions{RTN: true, Sym: true}})

	earlier := func(job string) func(t *testing.T, p string) {
		return func(t *testing.T, p string) {
			if code, _, errs := f.cli("get", job, "--output-dir", filepath.Dir(p), "--output-name", filepath.Base(p)); code != 0 {
				t.Fatalf("earlier get: exit %d: %s", code, errs)
			}
		}
	}
	for _, job := range []struct{ name, id string }{{"gguf", ggufJob}, {"gptq", gptqJob}} {
		cases := []outputCase{
			{"over an unrelated directory", unrelatedDir, nil, 2, true, "is a directory"},
			{"over an unrelated file", unrelatedFile, nil, 2, true, "is a file"},
			{"over its earlier download", earlier(job.id), nil, 0, false, ""},
			{"--overwrite over an unrelated directory", unrelatedDir, []string{"--overwrite"}, 0, false, ""},
		}
		for _, c := range cases {
			t.Run(job.name+" "+c.name, func(t *testing.T) {
				out := t.TempDir()
				path := filepath.Join(out, "result")
				c.setup(t, path)
				code, _, errs := f.cli(append([]string{"get", job.id, "--output-dir", out, "--output-name", "result"}, c.args...)...)
				checkOutcome(t, c, path, code, errs)
			})
		}
		for _, name := range []string{"..", ".", "a/b", "../x"} {
			t.Run(job.name+" name "+name, func(t *testing.T) {
				parent := t.TempDir()
				unrelatedFile(t, filepath.Join(parent, "precious"))
				out := filepath.Join(parent, "out")
				code, _, errs := f.cli("get", job.id, "--output-dir", out, "--output-name", name)
				if code != 2 || !strings.Contains(errs, "not a path") {
					t.Errorf("exit %d, want 2 naming the bad name: %s", code, errs)
				}
				if b, err := os.ReadFile(filepath.Join(parent, "precious")); err != nil || string(b) != "precious" {
					t.Errorf("the output directory's parent lost a file: %v", err)
				}
			})
		}
	}
}

// TestPartialCleanup: a run into a directory removes the temporary files and directories that a
// crashed run left there (quantfleet's temporary names only), but not those of a live run, and
// nothing else.
func TestPartialCleanup(t *testing.T) {
	shared := sharedDir(t)
	model := filepath.Join(shared, "models", "tiny-llama")
	for _, format := range [][]string{{"--level", "Q8_0"}, {"--format", "gptq", "--level", "4bit", "--rtn"}} {
		t.Run(format[1], func(t *testing.T) {
			out := t.TempDir()
			stale := []string{".tiny-llama-Q8_0.gguf.123456.partial", ".result.42.partial", ".result.7.partial.old"}
			for _, n := range stale[:1] {
				unrelatedFile(t, filepath.Join(out, n))
			}
			for _, n := range stale[1:] {
				unrelatedDir(t, filepath.Join(out, n))
			}
			others := []string{"notes.partial", ".hidden.partial", ".x.12a.partial", "model.gguf"}
			for _, n := range others {
				unrelatedFile(t, filepath.Join(out, n))
			}
			// A live writer's temporary file (this process holds its lock).
			live, err := atomicfile.Create(out, "live.gguf", atomicfile.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer live.Abort()

			args := append([]string{"quantize", "--model", model, "--output-dir", out, "--output-name", "result", "--verbosity", "quiet"}, format...)
			if code, _, errs := runCLI(t, args...); code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			for _, n := range stale {
				if _, err := os.Lstat(filepath.Join(out, n)); err == nil {
					t.Errorf("stale %s is still there", n)
				}
			}
			for _, n := range append(others, "result", filepath.Base(live.TempPath())) {
				if _, err := os.Lstat(filepath.Join(out, n)); err != nil {
					t.Errorf("%s was removed: %v", n, err)
				}
			}
		})
	}
}

// hfCacheModel lays tiny-llama out as the Hugging Face cache does: blobs/HASH files, and
// snapshots/REV/tiny-llama/NAME symlinks to ../../../blobs/HASH. It returns the snapshot directory.
func hfCacheModel(t *testing.T, shared string) string {
	t.Helper()
	root := t.TempDir()
	src := filepath.Join(shared, "models", "tiny-llama")
	snap := filepath.Join(root, "snapshots", "0123abc", "tiny-llama")
	for _, d := range []string{filepath.Join(root, "blobs"), snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		blob := fmt.Sprintf("blob%02d", i)
		if err := os.WriteFile(filepath.Join(root, "blobs", blob), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "..", "blobs", blob), filepath.Join(snap, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return snap
}

// sameTree reports the first difference between two outputs (a file, or a directory's files).
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	err := filepath.WalkDir(want, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s (%d vs %d bytes, %v)", filepath.Join(got, rel), p, len(b), len(a), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSymlinkedModel: a model directory of symlinks (the Hugging Face cache's layout) quantizes,
// uploads and submits exactly as the same files in a plain directory.
func TestSymlinkedModel(t *testing.T) {
	shared := sharedDir(t)
	plain := filepath.Join(shared, "models", "tiny-llama")
	linked := hfCacheModel(t, shared)
	f := startTestFleet(t)
	gguf := []string{"--level", "Q8_0"}
	gptq := []string{"--format", "gptq", "--level", "4bit", "--rtn"}
	// each case runs a command with --model and returns the output path (or stdout for upload)
	cases := []struct {
		name string
		run  func(t *testing.T, model string) string
	}{
		{"quantize gguf", func(t *testing.T, model string) string { return quantizeTo(t, model, gguf) }},
		{"quantize gptq", func(t *testing.T, model string) string { return quantizeTo(t, model, gptq) }},
		{"upload", func(t *testing.T, model string) string {
			code, stdout, errs := f.cli("upload", "--model", model)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			return stdout
		}},
		{"submit gptq", func(t *testing.T, model string) string {
			out := t.TempDir()
			code, _, errs := f.cli(append([]string{"submit", "--model", model, "--wait", "--output-dir", out, "--output-name", "result", "--verbosity", "quiet"}, gptq...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			return filepath.Join(out, "result")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want, got := c.run(t, plain), c.run(t, linked)
			if c.name == "upload" {
				// content-addressed: the same files give the same model URL
				if want != got {
					t.Errorf("upload of the linked directory gave %q, of the plain one %q", got, want)
				}
				return
			}
			sameTree(t, want, got)
		})
	}
	t.Run("upload with a dangling link", func(t *testing.T) {
		dir := hfCacheModel(t, shared)
		if err := os.Symlink("../../../blobs/missing", filepath.Join(dir, "model-extra.safetensors")); err != nil {
			t.Fatal(err)
		}
		code, _, errs := f.cli("upload", "--model", dir)
		if code != 2 || !strings.Contains(errs, "model-extra.safetensors") {
			t.Errorf("exit %d, want 2 naming the link: %s", code, errs)
		}
	})
}

func quantizeTo(t *testing.T, model string, args []string) string {
	t.Helper()
	out := t.TempDir()
	code, _, errs := runCLI(t, append([]string{"quantize", "--model", model, "--output-dir", out, "--output-name", "result", "--verbosity", "quiet"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	return filepath.Join(out, "result")
}

// TestJobOutputCheckedFirst: run and submit --wait refuse an output path they may not replace
// before the job runs (a job's work would otherwise be lost at the download), deriving the default
// name as the fleet does.
func TestJobOutputCheckedFirst(t *testing.T) {
	shared := sharedDir(t)
	model := filepath.Join(shared, "models", "tiny-llama")
	noFleet := []string{"--nats-url", "nats://127.0.0.1:1", "--nats-connect-timeout", "200ms", "--s3-endpoint", "127.0.0.1:1"}
	cases := []struct {
		name, existing string
		args           []string
	}{
		{"run gguf default name", "tiny-llama-Q8_0.gguf", []string{"run", "--level", "Q8_0"}},
		{"run gptq default name", "tiny-llama-gptq-4bit", []string{"run", "--format", "gptq", "--level", "4bit", "--rtn"}},
		{"run with --model-name", "renamed-Q8_0.gguf", []string{"run", "--level", "Q8_0", "--model-name", "renamed"}},
		{"run with --output-name", "result", []string{"run", "--level", "Q8_0", "--output-name", "result"}},
		{"submit --wait", "tiny-llama-Q8_0.gguf", append([]string{"submit", "--wait", "--level", "Q8_0"}, noFleet...)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			path := filepath.Join(out, c.existing)
			unrelatedDir(t, path)
			start := time.Now()
			code, _, errs := runCLI(t, append(c.args, "--model", model, "--output-dir", out)...)
			checkOutcome(t, outputCase{code: 2, kept: true, wantErr: path}, path, code, errs)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refused after %v: the job ran first", d)
			}
		})
	}
}

// TestOutputNameOneCheck: every command that writes refuses the same bad --output-name values
// with the same message (atomicfile.CheckName), before it connects or works.
func TestOutputNameOneCheck(t *testing.T) {
	model := "../nowhere/model" // never reached
	noFleet := []string{"--nats-url", "nats://127.0.0.1:1", "--nats-connect-timeout", "200ms"}
	commands := map[string][]string{
		"quantize": {"quantize", "--model", model, "--level", "Q8_0"},
		"run":      {"run", "--model", model, "--level", "Q8_0"},
		"submit":   append([]string{"submit", "--model", model, "--level", "Q8_0", "--wait"}, noFleet...),
		"get":      append([]string{"get", "j1"}, noFleet...),
	}
	for _, name := range []string{"..", ".", "a/b", `a\b`, ".x.gguf.123.partial"} {
		want := atomicfile.CheckName(name).Error()
		for cmd, args := range commands {
			t.Run(cmd+" "+name, func(t *testing.T) {
				code, _, errs := runCLI(t, append(args, "--output-dir", t.TempDir(), "--output-name", name)...)
				if code != 2 || !strings.Contains(errs, want) {
					t.Errorf("exit %d, want 2 with %q: %s", code, want, errs)
				}
			})
		}
	}
}
