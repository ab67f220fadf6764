package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// signalWriter is a buffer that closes hit once it has seen a pattern.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	re   *regexp.Regexp
	hit  chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if w.re.Match(w.buf.Bytes()) {
		w.once.Do(func() { close(w.hit) })
	}
	return n, err
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestRunInterruptedThenResume: a `run --data-dir` stopped mid-job is finished by `resume --data-dir`
// with only the missing layers redone; a resume with another level is refused.
func TestRunInterruptedThenResume(t *testing.T) {
	shared := sharedDir(t)
	model := filepath.Join(shared, "models", "tiny-llama")
	data, out, local := t.TempDir(), t.TempDir(), t.TempDir()
	if code, _, errs := runCLI(t, "quantize", "--model", model, "--level", "Q6_K", "--output-dir", local); code != 0 {
		t.Fatalf("quantize: exit %d: %s", code, errs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &signalWriter{re: regexp.MustCompile(`layer [2-7]/8`), hit: make(chan struct{})}
	env := Env{Stdout: &bytes.Buffer{}, Stderr: stderr, Getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, env, []string{"run", "--model", model, "--level", "Q6_K", "--output-dir", out, "--data-dir", data, "--workers", "1"})
	}()
	select {
	case <-stderr.hit:
		cancel() // as SIGINT does
	case code := <-done:
		t.Fatalf("run finished (exit %d) before it could be interrupted: %s", code, stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("no progress: %s", stderr)
	}
	if code := <-done; code == 0 {
		t.Fatalf("interrupted run exited 0: %s", stderr)
	}
	m := regexp.MustCompile(`quantfleet resume (\S+) --data-dir`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no resume hint: %s", stderr)
	}
	job := m[1]
	if code, _, errs := runCLI(t, "resume", job, "--data-dir", data, "--level", "Q4_K_M", "--output-dir", out); code != 2 || !strings.Contains(errs, "does not match") {
		t.Fatalf("resume with another level: exit %d: %s", code, errs)
	}
	code, _, errs := runCLI(t, "resume", job, "--data-dir", data, "--output-dir", out)
	if code != 0 {
		t.Fatalf("resume: exit %d: %s", code, errs)
	}
	if !regexp.MustCompile(`resumed: [1-8] of 8 layers \([1-8] of 8 tasks\) done`).MatchString(errs) {
		t.Errorf("resume did not keep the finished layers: %s", errs)
	}
	name := "tiny-llama-Q6_K.gguf"
	want, _ := os.ReadFile(filepath.Join(local, name))
	got, err := os.ReadFile(filepath.Join(out, name))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("resumed file (%d bytes, %v) differs from quantize's (%d bytes)", len(got), err, len(want))
	}
}

func TestFleetCommandsBadInput(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		code    int
		wantErr string
	}{
		{"status without a job", []string{"status"}, 2, "a job id is required"},
		{"status with a bad id", []string{"status", "a.b"}, 2, "not a job id"},
		{"two job ids", []string{"cancel", "j1", "j2"}, 2, "unexpected argument"},
		{"get with neither", []string{"get", "j1"}, 2, "exactly one of --output-dir"},
		{"submit without model", []string{"submit", "--level", "Q4_K_M"}, 2, "--model is required"},
		{"submit with an invalid level", []string{"submit", "--model", ".", "--level", "Q9_K"}, 2, "Q9_K"},
		{"submit gptq without calibration data", []string{"submit", "--model", ".", "--format", "gptq", "--level", "4bit"}, 2, "needs calibration text"},
		{"submit gguf with a gptq flag", []string{"submit", "--model", ".", "--level", "Q4_K_M", "--act-order"}, 2, "applies to gptq and awq only"},
		{"submit awq with --damp", []string{"submit", "--model", ".", "--format", "awq", "--level", "4bit", "--damp", "0.1"}, 2, "applies to gptq only"},
		{"run with an s3 model", []string{"run", "--model", "s3://b/m", "--level", "Q4_K_M"}, 2, "s3://"},
		{"run with no such model", []string{"run", "--model", "./nope/nope", "--level", "Q4_K_M"}, 2, "no such directory"},
		{"NATS unreachable", []string{"status", "j1", "--nats-url", "nats://127.0.0.1:1", "--nats-connect-timeout", "500ms"}, 1, "NATS server unreachable"},
		{"dev-servers without keys", []string{"dev-servers", "--dir", filepath.Join(t.TempDir(), "x")}, 2, "AWS_ACCESS_KEY_ID"},
		{"quantize with an unknown flag", []string{"quantize", "--model-name", "x"}, 2, "flag provided but not defined: -model-name"},
		{"status with an unknown flag", []string{"status", "j1", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"quantize with a bad value", []string{"quantize", "--seqlen", "many"}, 2, `invalid value "many" for flag -seqlen`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errs := runCLI(t, c.args...)
			if code != c.code || !strings.Contains(errs, c.wantErr) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
				t.Errorf("exit %d (want %d and one line): %s", code, c.code, errs)
			}
		})
	}
}
