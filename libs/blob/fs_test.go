package blob_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quantfleet.dev/libs/blob"
	"quantfleet.dev/libs/blob/blobtest"
)

func TestFSContract(t *testing.T) {
	blobtest.RunContract(t, func(t *testing.T) blob.Store {
		s, err := blob.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestFSNoLitter checks the filesystem specifics: no temporary files after writes, and deleting the
// last object of a prefix removes its now-empty directories.
func TestFSNoLitter(t *testing.T) {
	dir := t.TempDir()
	s, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := s.Put(ctx, "jobs/j/shards/0", strings.NewReader("abc"), 3, blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "keep", strings.NewReader("k"), 1, blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 2 {
		t.Fatalf("files %v, want 2 (no temporaries)", files)
	}
	if _, err := s.DeletePrefix(ctx, "jobs/"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jobs")); !os.IsNotExist(err) {
		t.Errorf("empty directory jobs/ left behind: %v", err)
	}
}
