package modelstore_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/hub"
	"quantfleet.dev/libs/hub/hubtest"
	"quantfleet.dev/services/fleet/modelstore"
)

func TestParseS3URL(t *testing.T) {
	tests := []struct {
		in, bucket, prefix string
		bad                bool
	}{
		{"s3://b/models/x", "b", "models/x", false},
		{"s3://b/models/x/", "b", "models/x", false},
		{"s3://b", "b", "", false},
		{"s3:///x", "", "", true},
		{"http://b/x", "", "", true},
		{"s3://b/a/../c", "", "", true},
	}
	for _, tt := range tests {
		b, p, err := modelstore.ParseS3URL(tt.in)
		if (err != nil) != tt.bad || b != tt.bucket || p != tt.prefix {
			t.Errorf("ParseS3URL(%q) = %q, %q, %v", tt.in, b, p, err)
		}
	}
}

func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestScanDirAndHash(t *testing.T) {
	ctx := context.Background()
	base := map[string]string{"config.json": "{}", "model.safetensors": "weights", "tokenizer.json": "tok",
		".hidden": "x", "pytorch_model.bin": "pickle", "sub/nested.json": "nested"}
	m, err := modelstore.ScanDir(ctx, writeDir(t, base))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range m.Files {
		names = append(names, f.Name)
	}
	if len(names) != 3 || names[0] != "config.json" || names[1] != "model.safetensors" || names[2] != "tokenizer.json" {
		t.Errorf("files %v, want config.json, model.safetensors, tokenizer.json", names)
	}
	// Same files elsewhere: same hash. One byte changed: another hash.
	m2, _ := modelstore.ScanDir(ctx, writeDir(t, base))
	changed := map[string]string{}
	for k, v := range base {
		changed[k] = v
	}
	changed["model.safetensors"] = "weightz"
	m3, _ := modelstore.ScanDir(ctx, writeDir(t, changed))
	if m.Hash() != m2.Hash() || m.Hash() == m3.Hash() {
		t.Errorf("hashes %s %s %s", m.Hash(), m2.Hash(), m3.Hash())
	}
	if _, err := modelstore.ScanDir(ctx, writeDir(t, map[string]string{"model.safetensors": "w"})); err == nil {
		t.Error("a directory without config.json was accepted")
	}
}

func TestUploadDirOnce(t *testing.T) {
	ctx := context.Background()
	s, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := writeDir(t, map[string]string{"config.json": "{}", "model.safetensors": "weights"})
	p1, up1, err := modelstore.UploadDir(ctx, s, dir, nil)
	if err != nil || !up1 {
		t.Fatalf("first upload: %v %v", up1, err)
	}
	p2, up2, err := modelstore.UploadDir(ctx, s, dir, nil)
	if err != nil || up2 || p1 != p2 {
		t.Fatalf("second upload: %s %v %v (first %s)", p2, up2, err, p1)
	}
	rc, _, err := s.Get(ctx, p1+"model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "weights" {
		t.Errorf("stored %q", b)
	}
}

func TestMirrorHubOncePerCommit(t *testing.T) {
	ctx := context.Background()
	srv := hubtest.New(t)
	weights := bytes.Repeat([]byte{1, 2, 3}, 1000)
	srv.AddRepo("org/tiny", hubtest.File{Path: "config.json", Data: []byte("{}")},
		hubtest.File{Path: "model.safetensors", Data: weights, LFS: true}, hubtest.File{Path: "README.md", Data: []byte("skipped")})
	s, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &hub.Client{Endpoint: srv.URL, HTTP: srv.Client(), CacheDir: t.TempDir()}
	prefix, repo, err := modelstore.MirrorHub(ctx, s, c, "org/tiny", nil)
	if err != nil {
		t.Fatal(err)
	}
	if repo != "org/tiny" {
		t.Errorf("repo %q", repo)
	}
	oi, err := s.Stat(ctx, prefix+"model.safetensors")
	if err != nil || oi.Size != int64(len(weights)) {
		t.Fatalf("mirrored weights: %+v %v", oi, err)
	}
	if ok, _ := s.Exists(ctx, prefix+"README.md"); ok {
		t.Error("README.md mirrored, but the Hub client's default filter skips it")
	}
	// Mirroring again, even with a cold download cache, downloads nothing.
	srv.ResetRequests()
	c2 := &hub.Client{Endpoint: srv.URL, HTTP: srv.Client(), CacheDir: t.TempDir()}
	p2, _, err := modelstore.MirrorHub(ctx, s, c2, "org/tiny", nil)
	if err != nil || p2 != prefix {
		t.Fatalf("second mirror: %s %v", p2, err)
	}
	if n := srv.FileGets(); n != 0 {
		t.Errorf("second mirror downloaded %d files", n)
	}
	if _, _, err := modelstore.MirrorHub(ctx, s, c, "nobody/nothing", nil); err == nil {
		t.Error("an unknown Hub model mirrored")
	}
}
