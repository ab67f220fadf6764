package s3embed_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/blob/s3embed"
)

// TestLifecycle runs the gateway twice on one directory (data must survive), checks the
// one-per-process rule, the health endpoint, and that Close restores the working directory.
func TestLifecycle(t *testing.T) {
	dir := t.TempDir()
	wd, _ := os.Getwd()
	ctx := context.Background()

	srv, err := s3embed.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3embed.Start(ctx, t.TempDir()); !errors.Is(err, s3embed.ErrAlreadyRunning) {
		t.Fatalf("second Start: %v, want ErrAlreadyRunning", err)
	}
	resp, err := http.Get(srv.URL() + "/health")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("health: %v %v", resp, err)
	}
	resp.Body.Close()
	store := func(s *s3embed.Server) *blob.S3 {
		st, err := blob.NewS3(blob.S3Options{Endpoint: s.URL(), Bucket: "models", Region: s.Region,
			AccessKey: s.AccessKey, SecretKey: s.SecretKey})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.EnsureBucket(ctx); err != nil {
			t.Fatal(err)
		}
		return st
	}
	if _, err := store(srv).Put(ctx, "a/b.bin", bytes.NewReader([]byte("persist me")), 10, blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// Objects are plain files under Dir.
	if b, err := os.ReadFile(filepath.Join(srv.Dir, "models", "a", "b.bin")); err != nil || string(b) != "persist me" {
		t.Fatalf("object file: %q %v", b, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.Getwd(); now != wd {
		t.Fatalf("working directory %s after Close, want %s", now, wd)
	}
	if _, err := http.Get(srv.URL() + "/health"); err == nil {
		t.Fatal("gateway still answers after Close")
	}

	srv2, err := s3embed.StartWithOptions(ctx, dir, s3embed.Options{AccessKey: "fixedkey", SecretKey: "fixedsecret123"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	if srv2.AccessKey != "fixedkey" {
		t.Fatalf("access key %q", srv2.AccessKey)
	}
	rc, _, err := store(srv2).Get(ctx, "a/b.bin")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "persist me" {
		t.Fatalf("after restart: %q", b)
	}
}
