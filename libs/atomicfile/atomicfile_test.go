package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCommitAndAbort(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(dir, "out.bin", Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("hello"))
	if _, err := os.Stat(filepath.Join(dir, "out.bin")); !os.IsNotExist(err) {
		t.Fatalf("final file exists before Commit: %v", err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort() // no-op after Commit
	b, err := os.ReadFile(filepath.Join(dir, "out.bin"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("committed file: %q, %v", b, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "out.bin")); st.Mode().Perm() != Mode {
		t.Errorf("mode %v, want %v", st.Mode().Perm(), os.FileMode(Mode))
	}

	g, err := Create(dir, "other.bin", Options{})
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("partial"))
	g.Abort()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("after Abort the directory holds %v, want only out.bin", entries)
	}
}

func TestCreateInMissingDir(t *testing.T) {
	if _, err := Create(filepath.Join(t.TempDir(), "missing"), "x", Options{}); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
}
