package hub_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/hub/hubtest"
	"quantfleet.dev/libs/sharedtest"
)

const (
	repoID = "org/tiny-model"
	token  = "hf_SECRETtokenVALUE123"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testFiles is a small model repo: LFS weights, small configs, a nested
// file and files the default filter skips.
func testFiles() []hubtest.File {
	return []hubtest.File{
		{Path: "config.json", Data: []byte(`{"architectures":["LlamaForCausalLM"],"hidden_size":64}` + "\n")},
		{Path: "model.safetensors", Data: randomBytes(1, 3<<20+12345), LFS: true},
		{Path: "tokenizer.model", Data: randomBytes(2, 70000), LFS: true},
		{Path: "tokenizer_config.json", Data: []byte(`{"chat_template":"{{ x }}"}`)},
		{Path: "extra/generation_config.json", Data: []byte(`{"do_sample":false}`)},
		{Path: "pytorch_model.bin", Data: randomBytes(3, 5000), LFS: true},
		{Path: "README.md", Data: []byte("# tiny\n")},
	}
}

var wantDownloaded = []string{"config.json", "extra/generation_config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"}

// logBuffer collects zap JSON logs from concurrent goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newClient(t *testing.T, srv *hubtest.Server, tok string) (*hub.Client, *logBuffer) {
	t.Helper()
	// Keep the environment of the machine running the tests out.
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_ENDPOINT", "")
	logs := &logBuffer{}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(logs), zapcore.DebugLevel)
	return &hub.Client{
		Endpoint: srv.URL,
		Token:    tok,
		HTTP:     srv.Client(),
		CacheDir: t.TempDir(),
		Logger:   zap.New(core),
	}, logs
}

// hubETag is the Hub's blob id: SHA-256 for LFS files, git blob SHA-1 else.
func hubETag(f hubtest.File) string {
	if f.LFS {
		sum := sha256.Sum256(f.Data)
		return hex.EncodeToString(sum[:])
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(f.Data))
	h.Write(f.Data)
	return hex.EncodeToString(h.Sum(nil))
}

func fileMap(files []hubtest.File) map[string]hubtest.File {
	m := map[string]hubtest.File{}
	for _, f := range files {
		m[f.Path] = f
	}
	return m
}

// checkSnapshot asserts dir holds exactly want, with contents from files,
// as relative symlinks into the blobs folder named by each file's Hub ETag.
func checkSnapshot(t *testing.T, dir string, files []hubtest.File, want []string) {
	t.Helper()
	byPath := fileMap(files)
	var got []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		got = append(got, rel)
		f, ok := byPath[rel]
		if !ok {
			t.Errorf("unexpected file %s in snapshot", rel)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(data, f.Data) {
			t.Errorf("%s: content differs from the Hub's", rel)
		}
		target, err := os.Readlink(p)
		if err != nil {
			t.Errorf("%s is not a symlink: %v", rel, err)
			return nil
		}
		if filepath.IsAbs(target) || !strings.Contains(filepath.ToSlash(target), "../blobs/") {
			t.Errorf("%s -> %s, want a relative link into blobs/", rel, target)
		}
		if f.LFS {
			sum := sha256.Sum256(f.Data)
			if filepath.Base(target) != hex.EncodeToString(sum[:]) {
				t.Errorf("%s: blob %s is not named by its sha256", rel, filepath.Base(target))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("snapshot files = %v, want %v", got, want)
	}
}

func TestDownload(t *testing.T) {
	srv := hubtest.New(t)
	files := testFiles()
	commit := srv.AddRepo(repoID, files...)
	c, _ := newClient(t, srv, "")
	var mu sync.Mutex
	progress := map[string][2]int64{}
	c.Progress = func(file string, done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if prev := progress[file]; done < prev[0] {
			t.Errorf("progress of %s went back from %d to %d", file, prev[0], done)
		}
		progress[file] = [2]int64{done, total}
	}

	dir, err := c.Download(context.Background(), repoID, nil)
	if err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(c.CacheDir, "models--org--tiny-model")
	if want := filepath.Join(storage, "snapshots", commit); dir != want {
		t.Fatalf("dir = %s, want %s", dir, want)
	}
	checkSnapshot(t, dir, files, wantDownloaded)
	if ref, err := os.ReadFile(filepath.Join(storage, "refs", "main")); err != nil || string(ref) != commit {
		t.Errorf("refs/main = %q, %v; want %s", ref, err, commit)
	}
	byPath := fileMap(files)
	for _, p := range wantDownloaded {
		n := int64(len(byPath[p].Data))
		if got := progress[p]; got != [2]int64{n, n} {
			t.Errorf("last progress of %s = %v, want [%d %d]", p, got, n, n)
		}
	}
	for _, r := range srv.Requests() {
		if strings.HasSuffix(r.Path, ".bin") || strings.HasSuffix(r.Path, ".md") {
			t.Errorf("filtered file requested: %s %s", r.Method, r.Path)
		}
	}
	if n := srv.FileGets(); n != len(wantDownloaded) {
		t.Errorf("file GETs = %d, want %d", n, len(wantDownloaded))
	}
	blobs, _ := os.ReadDir(filepath.Join(storage, "blobs"))
	for _, b := range blobs {
		if strings.HasSuffix(b.Name(), ".incomplete") {
			t.Errorf("leftover %s", b.Name())
		}
	}

	// Small files' blobs are named by git's blob id: check against git itself.
	if git, err := exec.LookPath("git"); err == nil {
		out, err := exec.Command(git, "hash-object", filepath.Join(dir, "config.json")).Output()
		if err != nil {
			t.Fatal(err)
		}
		target, _ := os.Readlink(filepath.Join(dir, "config.json"))
		if got, want := filepath.Base(target), strings.TrimSpace(string(out)); got != want {
			t.Errorf("config.json blob = %s, git hash-object = %s", got, want)
		}
	}

	// Second download: served from the cache, no file requests at all.
	srv.ResetRequests()
	dir2, err := c.Download(context.Background(), repoID, nil)
	if err != nil || dir2 != dir {
		t.Fatalf("second Download = %s, %v; want %s", dir2, err, dir)
	}
	for _, r := range srv.Requests() {
		if r.Path != "/api/models/"+repoID+"/revision/main" {
			t.Errorf("second Download made request %s %s", r.Method, r.Path)
		}
	}
}

func TestDownloadFilter(t *testing.T) {
	srv := hubtest.New(t)
	files := testFiles()
	srv.AddRepo(repoID, files...)
	c, _ := newClient(t, srv, "")
	dir, err := c.Download(context.Background(), repoID, func(p string) bool { return strings.HasSuffix(p, ".json") })
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, dir, files, []string{"config.json", "extra/generation_config.json", "tokenizer_config.json"})

	_, err = c.Download(context.Background(), repoID, func(string) bool { return false })
	if !errors.Is(err, hub.ErrNoFiles) {
		t.Errorf("Download with nothing allowed: err = %v, want ErrNoFiles", err)
	}
}

// A connection cut mid-file is resumed with a Range request in the same
// Download, on the Hub itself and through a CDN redirect.
func TestDownloadResumesAfterCut(t *testing.T) {
	for _, cdn := range []bool{false, true} {
		name := map[bool]string{false: "hub", true: "cdn"}[cdn]
		t.Run(name, func(t *testing.T) {
			srv := hubtest.New(t)
			files := testFiles()
			srv.AddRepo(repoID, files...)
			srv.RedirectLFS(cdn)
			const cut = 1<<20 + 7
			srv.CutAfter(repoID, "model.safetensors", cut)
			srv.CutAfter(repoID, "config.json", 10)
			c, _ := newClient(t, srv, "")
			dir, err := c.Download(context.Background(), repoID, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, dir, files, wantDownloaded)
			var ranges []string
			for _, r := range srv.Requests() {
				if r.IsFileGet() && r.Range != "" {
					ranges = append(ranges, r.Range)
				}
			}
			want := map[string]bool{"bytes=1048583-": false, "bytes=10-": false}
			for _, rg := range ranges {
				if _, ok := want[rg]; !ok {
					t.Errorf("unexpected range request %q", rg)
				}
				want[rg] = true
			}
			for rg, seen := range want {
				if !seen {
					t.Errorf("no resume request with Range %q (got %v)", rg, ranges)
				}
			}
		})
	}
}

// A partial file left by an earlier, killed process is continued, not
// downloaded again.
func TestDownloadResumesAcrossRuns(t *testing.T) {
	srv := hubtest.New(t)
	files := testFiles()
	srv.AddRepo(repoID, files...)
	weights := fileMap(files)["model.safetensors"]

	// First run: cancelled once the weights have started to arrive.
	c, _ := newClient(t, srv, "")
	ctx, cancel := context.WithCancel(context.Background())
	c.Progress = func(file string, done, total int64) {
		if file == "model.safetensors" && done > 0 && done < total {
			cancel()
		}
	}
	if _, err := c.Download(ctx, repoID, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Download: err = %v, want context.Canceled", err)
	}
	sum := sha256.Sum256(weights.Data)
	inc := filepath.Join(c.CacheDir, "models--org--tiny-model", "blobs", hex.EncodeToString(sum[:])+".incomplete")
	st, err := os.Stat(inc)
	if err != nil || st.Size() == 0 || st.Size() >= int64(len(weights.Data)) {
		t.Fatalf("partial file after cancel: %v, %v", st, err)
	}

	srv.ResetRequests()
	c.Progress = nil
	dir, err := c.Download(context.Background(), repoID, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, dir, files, wantDownloaded)
	var weightGets []string
	for _, r := range srv.Requests() {
		if r.IsFileGet() && strings.HasSuffix(r.Path, "model.safetensors") {
			weightGets = append(weightGets, r.Range)
		}
	}
	if want := "bytes=" + strconv.FormatInt(st.Size(), 10) + "-"; len(weightGets) != 1 || weightGets[0] != want {
		t.Errorf("second run weight requests had ranges %q, want one with %q", weightGets, want)
	}
}

// Partial files that cannot be a prefix of the blob are handled: a longer
// one is discarded, a wrong one fails verification and is removed.
func TestDownloadBadPartialFile(t *testing.T) {
	files := testFiles()
	weights := fileMap(files)["model.safetensors"]
	sum := sha256.Sum256(weights.Data)
	etag := hex.EncodeToString(sum[:])
	tests := []struct {
		name    string
		partial []byte
		wantErr error
	}{
		{"longer than the file", append(bytes.Clone(weights.Data), 1, 2, 3), nil},
		{"garbage prefix", randomBytes(9, 1000), hub.ErrChecksum},
		{"complete but not renamed", weights.Data, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := hubtest.New(t)
			srv.AddRepo(repoID, files...)
			c, _ := newClient(t, srv, "")
			blobs := filepath.Join(c.CacheDir, "models--org--tiny-model", "blobs")
			os.MkdirAll(blobs, 0o755)
			inc := filepath.Join(blobs, etag+".incomplete")
			if err := os.WriteFile(inc, tt.partial, 0o644); err != nil {
				t.Fatal(err)
			}
			dir, err := c.Download(context.Background(), repoID, nil)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "model.safetensors") {
					t.Fatalf("err = %v, want %v naming model.safetensors", err, tt.wantErr)
				}
				if _, err := os.Stat(inc); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("bad partial file kept: %v", err)
				}
				// Next run starts over and succeeds.
				if dir, err = c.Download(context.Background(), repoID, nil); err != nil {
					t.Fatal(err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, dir, files, wantDownloaded)
		})
	}
}

func TestDownloadChecksumMismatch(t *testing.T) {
	for _, p := range []string{"model.safetensors", "config.json"} {
		t.Run(p, func(t *testing.T) {
			srv := hubtest.New(t)
			commit := srv.AddRepo(repoID, testFiles()...)
			srv.Corrupt(repoID, p, true)
			c, _ := newClient(t, srv, "")
			_, err := c.Download(context.Background(), repoID, nil)
			if !errors.Is(err, hub.ErrChecksum) {
				t.Fatalf("err = %v, want ErrChecksum", err)
			}
			if msg := err.Error(); !strings.Contains(msg, p) || !strings.Contains(msg, repoID) {
				t.Errorf("error %q does not name the file and model", msg)
			}
			// Neither the blob nor its partial file stays; other files'
			// interrupted partial files may (they resume next time).
			storage := filepath.Join(c.CacheDir, "models--org--tiny-model")
			etag := hubETag(fileMap(testFiles())[p])
			for _, q := range []string{
				filepath.Join(storage, "blobs", etag),
				filepath.Join(storage, "blobs", etag+".incomplete"),
				filepath.Join(storage, "snapshots", commit, p),
			} {
				if _, err := os.Lstat(q); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("corrupt download left %s", q)
				}
			}
			// Once the Hub serves the right bytes the next run succeeds.
			srv.Corrupt(repoID, p, false)
			dir, err := c.Download(context.Background(), repoID, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, dir, testFiles(), wantDownloaded)
		})
	}
}

func TestDownloadAccessErrors(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(*hubtest.Server)
		model     string
		token     string
		want      []error
		wantMsg   string
		succeeded bool
	}{
		{
			name:    "gated without token",
			setup:   func(s *hubtest.Server) { s.Gated(repoID, token) },
			model:   repoID,
			want:    []error{hub.ErrAccessDenied},
			wantMsg: "access to org/tiny-model denied: gated or private model, pass --hf-token or set HF_TOKEN",
		},
		{
			name:    "gated with a token lacking access",
			setup:   func(s *hubtest.Server) { s.Gated(repoID, token) },
			model:   repoID,
			token:   "hf_otherTOKEN",
			want:    []error{hub.ErrAccessDenied},
			wantMsg: "access to org/tiny-model denied: gated model",
		},
		{
			name:      "gated with token",
			setup:     func(s *hubtest.Server) { s.Gated(repoID, token) },
			model:     repoID,
			token:     token,
			succeeded: true,
		},
		{
			name:    "private without token",
			setup:   func(s *hubtest.Server) { s.Private(repoID, token) },
			model:   repoID,
			want:    []error{hub.ErrAccessDenied, hub.ErrNotFound},
			wantMsg: "pass --hf-token or set HF_TOKEN",
		},
		{
			name:    "private with invalid token",
			setup:   func(s *hubtest.Server) { s.Private(repoID, token) },
			model:   repoID,
			token:   token + "x",
			want:    []error{hub.ErrAccessDenied},
			wantMsg: "token was rejected",
		},
		{
			name:      "private with token",
			setup:     func(s *hubtest.Server) { s.Private(repoID, token) },
			model:     repoID,
			token:     token,
			succeeded: true,
		},
		{
			name:    "missing model",
			model:   "org/missing",
			token:   token,
			want:    []error{hub.ErrNotFound},
			wantMsg: "model org/missing not found on the Hub",
		},
		{
			name:    "missing revision",
			model:   repoID + "@v9",
			want:    []error{hub.ErrNotFound},
			wantMsg: `revision "v9" of model org/tiny-model not found on the Hub`,
		},
		{
			name:    "invalid id",
			model:   "org/../x",
			want:    []error{hub.ErrInvalidModelID},
			wantMsg: "invalid model id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := hubtest.New(t)
			srv.AddRepo(repoID, testFiles()...)
			if tt.setup != nil {
				tt.setup(srv)
			}
			c, logs := newClient(t, srv, tt.token)
			_, err := c.Download(context.Background(), tt.model, nil)
			if tt.succeeded {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				if err == nil {
					t.Fatal("Download succeeded")
				}
				for _, w := range tt.want {
					if !errors.Is(err, w) {
						t.Errorf("err = %v, want errors.Is %v", err, w)
					}
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("err = %q, want it to contain %q", err, tt.wantMsg)
				}
				if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "hf_other") {
					t.Errorf("error shows the token: %v", err)
				}
			}
			assertNoSecret(t, c.CacheDir, logs.String(), token)
			assertNoSecret(t, c.CacheDir, logs.String(), "hf_other")
		})
	}
}

// assertNoSecret greps the cache (file names, contents, link targets) and
// the logs for secret.
func assertNoSecret(t *testing.T, cache, logs, secret string) {
	t.Helper()
	if strings.Contains(logs, secret) {
		t.Errorf("logs contain %q", secret)
	}
	filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(p, secret) {
			t.Errorf("cache path %s contains the secret", p)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if target, _ := os.Readlink(p); strings.Contains(target, secret) {
				t.Errorf("link %s contains the secret", p)
			}
			return nil
		}
		if d.Type().IsRegular() {
			if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(secret)) {
				t.Errorf("cache file %s contains the secret", p)
			}
		}
		return nil
	})
}

// The token goes to the Hub but not to the CDN the Hub redirects LFS files
// to, and the CDN's signed URL is not logged.
func TestDownloadRedirectToCDN(t *testing.T) {
	srv := hubtest.New(t)
	files := testFiles()
	srv.AddRepo(repoID, files...)
	srv.Private(repoID, token)
	srv.RedirectLFS(true)
	c, logs := newClient(t, srv, token)
	dir, err := c.Download(context.Background(), repoID, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, dir, files, wantDownloaded)
	var cdnGets, hubReqs int
	for _, r := range srv.Requests() {
		if r.CDN {
			cdnGets++
			if r.Authorization != "" {
				t.Errorf("token sent to the CDN: %s %s", r.Method, r.Path)
			}
		} else {
			hubReqs++
			if r.Authorization != "Bearer "+token {
				t.Errorf("Hub request %s %s without the token", r.Method, r.Path)
			}
		}
	}
	if cdnGets != 2 { // model.safetensors and tokenizer.model
		t.Errorf("CDN GETs = %d, want 2", cdnGets)
	}
	assertNoSecret(t, c.CacheDir, logs.String(), token)
	assertNoSecret(t, c.CacheDir, logs.String(), "SIGNATURE-SECRET")
}

// Without ?blobs=true data the client learns ETags from HEAD requests like
// huggingface_hub, reading X-Linked-Etag off the redirect.
func TestDownloadWithoutBlobInfo(t *testing.T) {
	srv := hubtest.New(t)
	files := testFiles()
	srv.AddRepo(repoID, files...)
	srv.NoBlobs(true)
	srv.RedirectLFS(true)
	c, _ := newClient(t, srv, "")
	dir, err := c.Download(context.Background(), repoID, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, dir, files, wantDownloaded)
	heads := 0
	for _, r := range srv.Requests() {
		if r.Method == "HEAD" {
			heads++
			if r.CDN {
				t.Errorf("HEAD followed the redirect to the CDN")
			}
		}
	}
	if heads != len(wantDownloaded) {
		t.Errorf("HEAD requests = %d, want %d", heads, len(wantDownloaded))
	}
	srv.ResetRequests()
	if _, err := c.Download(context.Background(), repoID, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("cached Download made %d requests, want 1 (model info)", n)
	}
}

func TestDownloadRevisionPinning(t *testing.T) {
	srv := hubtest.New(t)
	v1 := []hubtest.File{{Path: "config.json", Data: []byte(`{"v":1}`)}, {Path: "model.safetensors", Data: randomBytes(10, 5000), LFS: true}}
	v2 := []hubtest.File{{Path: "config.json", Data: []byte(`{"v":2}`)}, {Path: "model.safetensors", Data: randomBytes(10, 5000), LFS: true}}
	c1 := srv.AddRepo(repoID, v1...)
	c2 := srv.AddRepo(repoID, v2...)
	srv.SetRef(repoID, "v1.0", c1)
	srv.SetRef(repoID, "refs/pr/1", c1)
	c, _ := newClient(t, srv, "")
	storage := filepath.Join(c.CacheDir, "models--org--tiny-model")

	tests := []struct {
		model  string
		commit string
		files  []hubtest.File
		ref    string // refs/<ref> expected to hold commit; "" for none
	}{
		{repoID + "@" + c1, c1, v1, ""},
		{repoID, c2, v2, "main"},
		{repoID + "@v1.0", c1, v1, "v1.0"},
		{repoID + "@refs/pr/1", c1, v1, "refs/pr/1"},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			dir, err := c.Download(context.Background(), tt.model, nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(storage, "snapshots", tt.commit); dir != want {
				t.Fatalf("dir = %s, want %s", dir, want)
			}
			checkSnapshot(t, dir, tt.files, []string{"config.json", "model.safetensors"})
			if tt.ref != "" {
				if got, err := os.ReadFile(filepath.Join(storage, "refs", filepath.FromSlash(tt.ref))); err != nil || string(got) != tt.commit {
					t.Errorf("refs/%s = %q, %v; want %s", tt.ref, got, err, tt.commit)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(storage, "refs", c1)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a ref was written for a commit revision: %v", err)
	}
	// Both commits share the identical weights blob: it was fetched once.
	gets := 0
	for _, r := range srv.Requests() {
		if r.IsFileGet() && strings.HasSuffix(r.Path, "model.safetensors") {
			gets++
		}
	}
	if gets != 1 {
		t.Errorf("shared weights fetched %d times, want 1", gets)
	}
}

// The real tiny-llama checkpoint round-trips through the fake Hub.
func TestDownloadSharedModel(t *testing.T) {
	src := sharedtest.Path(t, "models", "tiny-llama")
	srv := hubtest.New(t)
	if _, err := srv.AddDir("TinyLlama/tiny-llama", src); err != nil {
		t.Fatal(err)
	}
	c, _ := newClient(t, srv, "")
	dir, err := c.Download(context.Background(), "TinyLlama/tiny-llama", nil)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(src)
	for _, e := range entries {
		want, _ := os.ReadFile(filepath.Join(src, e.Name()))
		got, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: differs from the source (%v)", e.Name(), err)
		}
	}
}

// A server that ignores Range answers 200 with the whole file: the partial
// file is discarded rather than appended to.
func TestDownloadRangeIgnored(t *testing.T) {
	srv := hubtest.New(t)
	files := testFiles()
	srv.AddRepo(repoID, files...)
	srv.IgnoreRange(true)
	srv.CutAfter(repoID, "model.safetensors", 500000)
	c, _ := newClient(t, srv, "")
	dir, err := c.Download(context.Background(), repoID, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, dir, files, wantDownloaded)
	var ranges []string
	for _, r := range srv.Requests() {
		if r.IsFileGet() && strings.HasSuffix(r.Path, "model.safetensors") {
			ranges = append(ranges, r.Range)
		}
	}
	if len(ranges) != 2 || ranges[1] != "bytes=500000-" {
		t.Errorf("weight requests had ranges %q, want a resume attempt from 500000", ranges)
	}
}

func TestDownloadServerErrors(t *testing.T) {
	defer hub.SetRetryBackoff(time.Millisecond)()
	tests := []struct {
		name    string
		status  int
		times   int
		wantErr bool
		wantMsg string
	}{
		{name: "503 twice then ok", status: 503, times: 2},
		{name: "429 once then ok", status: 429, times: 1},
		{name: "500 forever", status: 500, times: 100, wantErr: true, wantMsg: "giving up after 5 attempts"},
		{name: "400 is not retried", status: 400, times: 1, wantErr: true, wantMsg: "400 Bad Request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := hubtest.New(t)
			files := testFiles()
			srv.AddRepo(repoID, files...)
			srv.Fail(repoID, "model.safetensors", tt.status, tt.times)
			c, _ := newClient(t, srv, "")
			dir, err := c.Download(context.Background(), repoID, nil)
			gets := 0
			for _, r := range srv.Requests() {
				if r.IsFileGet() && strings.HasSuffix(r.Path, "model.safetensors") {
					gets++
				}
			}
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), "model.safetensors") {
					t.Fatalf("err = %v, want one naming model.safetensors and %q", err, tt.wantMsg)
				}
				if want := min(tt.times, 5); gets != want {
					t.Errorf("weight GETs = %d, want %d", gets, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, dir, files, wantDownloaded)
			if gets != tt.times+1 {
				t.Errorf("weight GETs = %d, want %d", gets, tt.times+1)
			}
		})
	}
}

func TestDownloadModelInfoRetry(t *testing.T) {
	defer hub.SetRetryBackoff(time.Millisecond)()
	srv := hubtest.New(t)
	files := testFiles()
	srv.AddRepo(repoID, files...)
	srv.Fail(repoID, "", 502, 2)
	c, _ := newClient(t, srv, "")
	dir, err := c.Download(context.Background(), repoID, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, dir, files, wantDownloaded)

	srv.Fail(repoID, "", 404, 1)
	if _, err := c.Download(context.Background(), repoID, nil); !errors.Is(err, hub.ErrNotFound) {
		t.Errorf("404 on model info: err = %v, want ErrNotFound", err)
	}
}

// With the default filter only the shards the index names are fetched;
// duplicates (Mistral's consolidated.safetensors) and nested weights are not.
func TestDownloadPrunesUnindexedWeights(t *testing.T) {
	index := `{"metadata":{"total_size":2000},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors","c.weight":"model-00002-of-00002.safetensors"}}`
	sharded := []hubtest.File{
		{Path: "config.json", Data: []byte(`{}`)},
		{Path: "model.safetensors.index.json", Data: []byte(index)},
		{Path: "model-00001-of-00002.safetensors", Data: randomBytes(20, 1000), LFS: true},
		{Path: "model-00002-of-00002.safetensors", Data: randomBytes(21, 1000), LFS: true},
		{Path: "consolidated.safetensors", Data: randomBytes(22, 2000), LFS: true},
		{Path: "original/model.safetensors", Data: randomBytes(23, 2000), LFS: true},
	}
	single := []hubtest.File{
		{Path: "config.json", Data: []byte(`{}`)},
		{Path: "model.safetensors", Data: randomBytes(24, 1000), LFS: true},
		{Path: "original/model.safetensors", Data: randomBytes(25, 2000), LFS: true},
	}
	broken := []hubtest.File{
		{Path: "model.safetensors.index.json", Data: []byte(`{"weight_map":{"a":"missing.safetensors"}}`)},
		{Path: "model.safetensors", Data: randomBytes(26, 10), LFS: true},
	}
	tests := []struct {
		name    string
		files   []hubtest.File
		allow   func(string) bool
		want    []string
		wantErr string
	}{
		{name: "index", files: sharded, want: []string{"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"}},
		{name: "no index", files: single, want: []string{"config.json", "model.safetensors"}},
		{name: "explicit filter keeps all", files: sharded, allow: hub.DefaultAllow, want: []string{"config.json", "consolidated.safetensors", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "original/model.safetensors"}},
		{name: "index names a missing shard", files: broken, wantErr: `names shard "missing.safetensors"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := hubtest.New(t)
			srv.AddRepo(repoID, tt.files...)
			c, _ := newClient(t, srv, "")
			dir, err := c.Download(context.Background(), repoID, tt.allow)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, dir, tt.files, tt.want)
			if n := srv.FileGets(); n != len(tt.want) {
				t.Errorf("file GETs = %d, want %d", n, len(tt.want))
			}
		})
	}
}

// Resolve reports sizes and what is cached, so callers can size a progress
// bar before Fetch.
func TestResolveThenFetch(t *testing.T) {
	srv := hubtest.New(t)
	files := testFiles()
	srv.AddRepo(repoID, files...)
	c, _ := newClient(t, srv, "")
	s, err := c.Resolve(context.Background(), repoID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	byPath := fileMap(files)
	for _, p := range wantDownloaded {
		want += int64(len(byPath[p].Data))
	}
	if s.Size() != want || len(s.Files) != len(wantDownloaded) || len(s.Skipped) != 2 {
		t.Errorf("snapshot: size %d (want %d), %d files, skipped %v", s.Size(), want, len(s.Files), s.Skipped)
	}
	for _, f := range s.Files {
		if f.Cached {
			t.Errorf("%s cached before any download", f.Path)
		}
		if f.Size != int64(len(byPath[f.Path].Data)) || f.ETag != hubETag(byPath[f.Path]) || f.LFS != byPath[f.Path].LFS {
			t.Errorf("file %+v does not match the Hub's", f)
		}
	}
	if srv.FileGets() != 0 {
		t.Errorf("Resolve downloaded files")
	}
	if err := c.Fetch(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, s.Dir, files, wantDownloaded)
	s2, err := c.Resolve(context.Background(), repoID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range s2.Files {
		if !f.Cached {
			t.Errorf("%s not cached after Fetch", f.Path)
		}
	}
}

// Two downloaders sharing a cache (two workers on one host) fetch each file
// once: the per-blob lock makes the second wait and reuse the first's blob.
func TestConcurrentDownloadsShareCache(t *testing.T) {
	srv := hubtest.New(t)
	files := testFiles()
	srv.AddRepo(repoID, files...)
	c1, _ := newClient(t, srv, "")
	c2 := *c1
	dirs := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, c := range []*hub.Client{c1, &c2} {
		wg.Go(func() { dirs[i], errs[i] = c.Download(context.Background(), repoID, nil) })
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		checkSnapshot(t, dirs[i], files, wantDownloaded)
	}
	if n := srv.FileGets(); n != len(wantDownloaded) {
		t.Errorf("file GETs = %d, want %d (each file once)", n, len(wantDownloaded))
	}
}
